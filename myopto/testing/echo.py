"""`EchoBackend`: an in-process backend that answers at once, for tests and overhead benchmarks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from myopto.backends.base import BaseBackend
from myopto.request import Request
from myopto.response import Response, Usage
from myopto.testing.server import count_tokens, default_answer


class EchoBackend(BaseBackend):
    """Answers like the test server (an echo, or JSON when asked natively), with no I/O.

    `answer` replaces the default answer; `json_schema` / `json_object` set the declared
    capabilities; `requests` records what reached the backend.
    """

    kind = "Echo"

    def __init__(
        self, answer: Callable[[Request], str] | None = None, *, json_schema: bool = True, json_object: bool = True
    ) -> None:
        super().__init__()
        self.answer = answer
        self.supports_json_schema = json_schema  # instance data: capabilities may vary per test
        self.supports_json_object = json_object
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def complete(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
        body: dict[str, Any] = {"messages": request.messages_list(), "response_format": request.response_format_dict()}
        text = self.answer(request) if self.answer else default_answer(body)
        prompt = sum(count_tokens(str(m.get("content", ""))) for m in body["messages"])
        return Response(text=text, model=request.model, usage=Usage.of(prompt, count_tokens(text)), cost=0.0)

    async def acomplete(self, request: Request) -> Response:
        return self.complete(request)
