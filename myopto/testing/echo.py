"""`EchoBackend`: an in-process backend that answers at once, for tests and overhead benchmarks."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from myopto.backends.base import BaseBackend
from myopto.chunks import Assembler, Chunk, ChunkChoice, Delta
from myopto.errors import ServerError
from myopto.request import Request
from myopto.response import Response, Usage
from myopto.testing.answers import count_tokens, default_answer


class EchoBackend(BaseBackend):
    """Answers like the test server (an echo, or JSON when asked natively), with no I/O.

    `answer` replaces the default answer; `json_schema` / `json_object` set the declared
    capabilities; `requests` records what reached the backend. A streamed call streams the
    answer a word a chunk (`fail_after=k`: the stream fails with a `ServerError` after k chunks;
    `chunk_pause`: seconds between chunks).
    """

    kind = "Echo"
    supports_streaming = True

    def __init__(
        self, answer: Callable[[Request], str] | None = None, *, json_schema: bool = True, json_object: bool = True
    ) -> None:
        super().__init__()
        self.answer = answer
        # Declared per class on backends; here per instance, because tests vary them.
        self.supports_json_schema = json_schema  # type: ignore[misc]
        self.supports_json_object = json_object  # type: ignore[misc]
        self.requests: list[Request] = []
        self.fail_after: int | None = None
        self.chunk_pause = 0.0
        self._lock = threading.Lock()

    def complete(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
        body: dict[str, Any] = {"messages": request.messages_list(), "response_format": request.response_format_dict()}
        text = self.answer(request) if self.answer else default_answer(body)
        prompt = sum(count_tokens(str(m.get("content", ""))) for m in body["messages"])
        usage = Usage.of(prompt, count_tokens(text))
        if request.sink is not None:
            return self._stream(request, text, usage)
        return Response(text=text, model=request.model, usage=usage, cost=0.0)

    def _stream(self, request: Request, text: str, usage: Usage) -> Response:
        """The answer a word a chunk, then its finish reason and usage, as providers stream."""
        assembler = Assembler()
        pieces = [piece for piece in re.split(r"(?<=\s)", text) if piece] or [""]
        chunks = [Chunk(choices=(ChunkChoice(delta=Delta(role="assistant", content=pieces[0])),))]
        chunks += [Chunk(choices=(ChunkChoice(delta=Delta(content=piece)),)) for piece in pieces[1:]]
        chunks += [Chunk(choices=(ChunkChoice(delta=Delta(), finish_reason="stop"),)), Chunk(usage=usage)]
        fail_after = self.fail_after  # as it was when the call came
        for number, chunk in enumerate(chunks):
            if fail_after is not None and number == fail_after:
                raise ServerError("the stream broke", status_code=500, retryable=True, model=request.model)
            if number and self.chunk_pause:
                time.sleep(self.chunk_pause)
            request.sink.push(chunk)
            assembler.add(chunk)
        choices = assembler.choices()
        return Response(
            text=choices[0].message.content or "",
            model=request.model,
            usage=usage,
            cost=0.0,
            choices=choices,
            stream=tuple(assembler.chunks),
        )

    async def acomplete(self, request: Request) -> Response:
        if request.sink is not None:  # a stream pauses between chunks: not on the event loop
            return await asyncio.to_thread(self.complete, request)
        return self.complete(request)
