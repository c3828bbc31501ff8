"""`CustomLLM`: any OpenAI-compatible server (vLLM, llama.cpp, a LiteLLM proxy, OpenAI itself)
through the official `openai` SDK, plain or streamed."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

from myopto.pricing import cost_from_map
from myopto.request import Request
from myopto.response import Response, Usage
from myopto.settings import openai_base_url

from .base import BaseBackend
from .completion import completion_response
from .endpoints import endpoint_url, headers_key
from .sdk_errors import sdk_failure
from .stream_reading import aread_stream, read_stream

PLACEHOLDER_KEY = "sk-no-key-required"
OPENAI_API_URL = "https://api.openai.com/v1"  # the openai SDK's own default


class CustomLLM(BaseBackend):
    """Calls `chat.completions.create` on an OpenAI-compatible endpoint.

    Options: `base_url`, `api_key` (a placeholder is sent when the server needs none), `timeout`
    (seconds), `max_retries` (the SDK's own retries; 0 by default because myopto's retry
    middleware owns retrying), `extra_headers`, `organization`.

    With no `base_url`, the SDK's own resolution is done here, once: `OPENAI_BASE_URL`, else the
    OpenAI API. The client is built with that URL, so the SDK never consults the environment on
    its own and `endpoint()` (in the cache key) is where requests really go.

    A streamed call (`request.sink`) asks the server to stream with the usage in its last chunk
    (`stream_options.include_usage`) and reads it with `stream_reading`, its chunks as the SDK
    decodes them from the events (plain JSON: typed models would cost more than the rest of the
    chunk's way to the caller, only to be read into `Chunk`s).
    """

    kind: ClassVar[str] = "CustomLLM"
    supports_json_schema: ClassVar[bool] = True
    supports_json_object: ClassVar[bool] = True
    reports_cost: ClassVar[bool] = True
    supports_streaming: ClassVar[bool] = True
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"base_url", "api_key", "timeout", "max_retries", "extra_headers", "organization"}
    )

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int = 0,
        extra_headers: dict[str, str] | None = None,
        organization: str | None = None,
    ) -> None:
        super().__init__()
        self.base_url = base_url or openai_base_url() or OPENAI_API_URL
        self._api_key = api_key or PLACEHOLDER_KEY
        self.timeout = timeout
        self.max_retries = max_retries
        self.extra_headers = dict(extra_headers or {})
        # where calls go: the URL, and the headers a proxy there may route on (no credential)
        self._endpoint = " ".join(
            part for part in (endpoint_url(self.base_url), headers_key(self.extra_headers)) if part
        )
        self.organization = organization
        self._lock = threading.Lock()
        self._client: Any = None
        # one async client per event loop: an httpx async client cannot outlive its loop, and
        # scripts often call asyncio.run more than once
        self._async_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:  # never show the key, nor one in the URL's query
        return f"CustomLLM(base_url={endpoint_url(self.base_url)!r})"

    def endpoint(self) -> str | None:
        """The base URL the client sends to, normalised, credentials masked (`endpoint_url`),
        and the extra headers it sends but credentials (`headers_key`)."""
        return self._endpoint

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "api_key": self._api_key,
            "base_url": self.base_url,
            "max_retries": self.max_retries,
            "organization": self.organization,
            "default_headers": self.extra_headers or None,
        }
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs

    def provider_name(self, model: str) -> str:
        host = urlsplit(self.base_url).hostname
        return "openai" if host == "api.openai.com" else (host or "unknown")

    def prepare(self) -> None:
        self._sync_client()

    def _sync_client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import openai

                    self._client = openai.OpenAI(**self._client_kwargs())
        return self._client

    def _aclient(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            with self._lock:
                client = self._async_clients.get(loop)
                if client is None:
                    import openai

                    client = self._async_clients[loop] = openai.AsyncOpenAI(**self._client_kwargs())
        return client

    def _arguments(self, request: Request) -> dict[str, Any]:
        params = request.params_dict()
        params.pop("constrained", None)  # local-model option; providers enforce JSON natively
        if "max_new_tokens" in params:
            params.setdefault("max_tokens", params.pop("max_new_tokens"))
        # sampling options OpenAI-compatible servers (vLLM, llama-server) take but the openai SDK's
        # create() has no argument for: sent in the body, as the SDK sends extra_body
        server_only = {name: params.pop(name) for name in ("top_k", "min_p", "repetition_penalty") if name in params}
        if server_only:
            params["extra_body"] = {**server_only, **(params.get("extra_body") or {})}
        arguments: dict[str, Any] = {"model": request.model, "messages": request.messages_list(), **params}
        response_format = request.response_format_dict()
        if response_format is not None:
            arguments["response_format"] = response_format
        if request.timeout is not None:
            arguments["timeout"] = request.timeout
        if request.sink is not None:
            arguments["stream"] = True
            arguments["stream_options"] = {**(params.get("stream_options") or {}), "include_usage": True}
        return arguments

    def complete(self, request: Request) -> Response:
        start = time.perf_counter()
        try:
            completions = self._sync_client().chat.completions
            if request.sink is None:
                raw = completions.create(**self._arguments(request))
            else:
                raw = _json_chunks(completions.with_raw_response.create(**self._arguments(request)), False)
        except Exception as error:
            failure = sdk_failure(error, self.kind, request)
            if failure is None:  # our own code's error, not the provider's
                raise
        else:
            if request.sink is not None:
                return read_stream(raw, request, self.kind, self._endpoint, start, self._price(request))
            return self._response(raw, request, time.perf_counter() - start)
        # raised here, not in the except block: the SDK's exception (which may quote the key
        # back) is neither the cause nor the context of what the caller sees
        raise failure

    async def acomplete(self, request: Request) -> Response:
        start = time.perf_counter()
        try:
            completions = self._aclient().chat.completions
            if request.sink is None:
                raw = await completions.create(**self._arguments(request))
            else:
                raw = _json_chunks(await completions.with_raw_response.create(**self._arguments(request)), True)
        except Exception as error:
            failure = sdk_failure(error, self.kind, request)
            if failure is None:  # our own code's error, not the provider's
                raise
        else:
            if request.sink is not None:
                return await aread_stream(raw, request, self.kind, self._endpoint, start, self._price(request))
            return self._response(raw, request, time.perf_counter() - start)
        # raised here, not in the except block: the SDK's exception (which may quote the key
        # back) is neither the cause nor the context of what the caller sees
        raise failure

    def _response(self, raw: Any, request: Request, latency: float) -> Response:
        return completion_response(raw, request, latency, self.kind, self._price(request))

    @staticmethod
    def _price(request: Request) -> Callable[[Usage], float | None]:
        # priced by model name from LiteLLM's map, token class by token class as LiteLLM prices
        # them (cached prompt tokens at the cache-read price); None (unknown) for models it does not list
        return lambda tokens: cost_from_map(
            request.model,
            tokens.prompt_tokens,
            tokens.completion_tokens,
            cached_tokens=tokens.cached_tokens,
            reasoning_tokens=tokens.reasoning_tokens,
        )


def _json_chunks(raw_response: Any, asynchronous: bool) -> Any:
    """The SDK's stream of a `with_raw_response` call, yielding each chunk as the JSON it came as:
    the SDK still decodes the events, stops at `[DONE]` and raises an error event as `APIError`."""
    import openai

    return raw_response.parse(to=openai.AsyncStream[object] if asynchronous else openai.Stream[object])
