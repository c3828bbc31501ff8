"""The contract every backend meets: `BaseBackend`, the terminal of a chain.

What backends share lives beside it: `endpoints` (the endpoint as the cache key names it),
`completion` (an OpenAI-shaped answer read into a `Response`) and `sdk_errors` (provider
exceptions translated into ours).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from myopto.pricing import cost_from_map
from myopto.request import Request
from myopto.response import Response

from .endpoints import endpoint_url as endpoint_url
from .endpoints import headers_key as headers_key
from .sdk_errors import ProviderError as ProviderError


class BaseBackend:
    """The terminal of a chain: turns a `Request` into a `Response`.

    A backend declares what it can do as class data; the router reads these capabilities (never
    the backend's name) to choose how structured output is produced:

    - `supports_json_schema`: it can send OpenAI `response_format={"type": "json_schema", ...}`.
    - `supports_json_object`: it can send `response_format={"type": "json_object"}`.
    - `supports_batching`: concurrent requests are gathered into one model call.
    - `reports_cost`: it knows the USD cost of a call.
    - `supports_streaming`: it streams. A request with a `sink` (`myopto.streaming.StreamSink`)
      is a streamed call: the backend turns each piece the provider sends into a
      `myopto.chunks.Chunk`, hands it to `request.sink.push(chunk)` as it arrives (which raises
      `StreamClosed` when the caller stopped reading: close the provider's stream and let it
      propagate), adds it up with a `myopto.chunks.Assembler`, and returns the `Response` a
      plain call gives, with the chunks in `Response.stream`. `request.sink.on_close(fn)` lets
      the caller's close stop the provider's stream at once. A backend that does not stream
      answers as usual; the caller then gets the answer's chunks at once, at its end.

    `option_names` lists the role-config options the backend takes; the router rejects others
    before anything is built. Heavy imports (SDKs, torch) belong inside methods, never at module level.
    """

    kind: ClassVar[str] = "base"
    supports_json_schema: ClassVar[bool] = False
    supports_json_object: ClassVar[bool] = False
    supports_batching: ClassVar[bool] = False
    reports_cost: ClassVar[bool] = False
    supports_streaming: ClassVar[bool] = False
    option_names: ClassVar[frozenset[str]] = frozenset()
    default_model: ClassVar[str | None] = None

    def __init__(self, **options: Any) -> None:
        self.options = options

    def complete(self, request: Request) -> Response:
        raise NotImplementedError

    async def acomplete(self, request: Request) -> Response:
        """Async twin of `complete`; by default runs `complete` in a worker thread."""
        return await asyncio.to_thread(self.complete, request)

    def endpoint(self) -> str | None:
        """Where calls go and what answers them, when that decides the answer; part of the cache key.

        What the backend will really use, environment defaults resolved (a base URL the SDK would
        read from `OPENAI_BASE_URL`, say), in one spelling per destination (`endpoint_url`), with
        no credential in it: it is stored in cache records and shown by `myopto roles`.
        """
        return None

    def endpoint_for(self, model: str) -> str | None:
        """`endpoint()` for a call to `model` (where a backend's destination depends on the model,
        as LiteLLM's provider defaults do). Computed for every request: keep it cheap."""
        return self.endpoint()

    def prepare(self) -> None:
        """Do the first call's one-off work now (import the SDK, build its client), sending
        nothing, so the first request leaves as soon as a rate limit lets it."""

    def provider_name(self, model: str) -> str:
        """Who answers calls to `model`, as OpenTelemetry's `gen_ai.provider.name` names it."""
        return self.kind.lower()

    @classmethod
    def knows_price(cls, model: str) -> bool:
        """Whether this backend can price a call to `model` (a budget needs a measurable cost)."""
        return cls.reports_cost and cost_from_map(model, 1, 1) is not None

    def describe(self) -> str:
        abilities = [
            name
            for name, on in (
                ("json_schema", self.supports_json_schema),
                ("json_object", self.supports_json_object),
                ("batching", self.supports_batching),
                ("cost", self.reports_cost),
                ("streaming", self.supports_streaming),
            )
            if on
        ]
        endpoint = self.endpoint()
        where = f" at {endpoint}" if endpoint else ""
        return f"{self.kind}{where} [{', '.join(abilities) or 'text only'}]"
