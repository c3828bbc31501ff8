"""The contract every backend meets, and the translation of provider errors into ours."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from myopto.errors import BackendError
from myopto.request import Request
from myopto.response import Response

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class BaseBackend:
    """The terminal of a chain: turns a `Request` into a `Response`.

    A backend declares what it can do as class data; the router reads these capabilities (never
    the backend's name) to choose how structured output is produced:

    - `supports_json_schema`: it can send OpenAI `response_format={"type": "json_schema", ...}`.
    - `supports_json_object`: it can send `response_format={"type": "json_object"}`.
    - `supports_batching`: concurrent requests are gathered into one model call.
    - `reports_cost`: it knows the USD cost of a call.

    `option_names` lists the role-config options the backend takes; the router rejects others
    before anything is built. Heavy imports (SDKs, torch) belong inside methods, never at module level.
    """

    kind: ClassVar[str] = "base"
    supports_json_schema: ClassVar[bool] = False
    supports_json_object: ClassVar[bool] = False
    supports_batching: ClassVar[bool] = False
    reports_cost: ClassVar[bool] = False
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
        """Where calls go (a base URL), when that decides the answer; part of the cache key."""
        return None

    def describe(self) -> str:
        abilities = [
            name
            for name, on in (
                ("json_schema", self.supports_json_schema),
                ("json_object", self.supports_json_object),
                ("batching", self.supports_batching),
                ("cost", self.reports_cost),
            )
            if on
        ]
        where = f" at {self.endpoint()}" if self.endpoint() else ""
        return f"{self.kind}{where} [{', '.join(abilities) or 'text only'}]"


def elapsed_since(start: float) -> float:
    return time.perf_counter() - start


_SDK_PACKAGES = frozenset({"openai", "litellm", "httpx", "httpcore", "aiohttp"})


def is_sdk_error(error: BaseException) -> bool:
    """True when `error` comes from a provider SDK or the HTTP stack, not from our own code.

    A `JSONDecodeError` raised inside an SDK call means the server sent a malformed body.
    """
    return isinstance(error, json.JSONDecodeError) or type(error).__module__.split(".")[0] in _SDK_PACKAGES


def backend_error(error: BaseException, backend: str) -> BackendError:
    """Translate an SDK exception (openai, litellm, httpx) into a `BackendError`.

    Reads the HTTP status and the `retry-after-ms` / `retry-after` headers when the exception
    carries a response; timeouts and connection failures count as retryable.
    """
    status = getattr(error, "status_code", None)
    response = getattr(error, "response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        status = None
    headers = getattr(response, "headers", None) if response is not None else None
    if headers is None:
        headers = getattr(error, "litellm_response_headers", None)
    retry_after = _retry_after(headers)
    name = type(error).__name__
    transport = isinstance(error, json.JSONDecodeError) or any(
        word in name for word in ("Timeout", "Connection", "Connect", "RemoteProtocol", "ReadError")
    )
    retryable = (status in _RETRYABLE_STATUS) if status is not None else transport
    if status is not None and status >= 500:
        retryable = True
    message = str(error).strip() or name
    where = f"HTTP {status}" if status is not None else name
    return BackendError(
        f"{backend} call failed ({where}): {message}",
        status_code=status,
        retryable=retryable,
        retry_after=retry_after,
    )


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    try:
        milliseconds = headers.get("retry-after-ms")
        if milliseconds is not None:
            return max(0.0, float(milliseconds) / 1000)
        seconds = headers.get("retry-after")
    except AttributeError:
        return None
    if seconds is None:
        return None
    try:
        return max(0.0, float(seconds))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(seconds)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
