"""Provider SDK exceptions (openai, litellm, httpx) translated into myopto's `BackendError`s,
with the SDK's exception replaced by a masked copy (`ProviderError`) so no key reaches a traceback.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping

from myopto.errors import (
    AuthenticationFailed,
    BackendError,
    BackendTimeout,
    BadRequest,
    ConnectionFailed,
    InvalidRequest,
    MalformedResponse,
    RateLimited,
    ServerError,
)
from myopto.logs import redact
from myopto.request import Request

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
_RETRYABLE_KINDS = (RateLimited, ServerError, BackendTimeout, ConnectionFailed, MalformedResponse)


def unsendable(error: BaseException) -> InvalidRequest | None:
    """An `InvalidRequest` when `error` (or what caused it: LiteLLM wraps it) is a failure to encode
    the request body, such as a lone surrogate where the message checks do not look: nothing was
    sent, retrying cannot help, and the caller must clean the text. None for any other error."""
    cause: BaseException | None = error
    for _ in range(8):
        if cause is None:
            return None
        if isinstance(cause, UnicodeEncodeError):
            return InvalidRequest(
                f"the request holds text that cannot be sent as UTF-8 ({cause.reason}: "
                f"{cause.object[cause.start : cause.end]!r}); clean it first, "
                "e.g. text.encode('utf-8', 'replace').decode()"
            )
        cause = cause.__cause__ or cause.__context__
    return None


_SDK_PACKAGES = frozenset({"openai", "litellm", "httpx", "httpcore", "aiohttp"})


def is_sdk_error(error: BaseException) -> bool:
    """True when `error` comes from a provider SDK or the HTTP stack, not from our own code.

    A `JSONDecodeError` raised inside an SDK call means the server sent a malformed body.
    """
    return isinstance(error, json.JSONDecodeError) or type(error).__module__.split(".")[0] in _SDK_PACKAGES


class ProviderError(Exception):
    """The masked copy of a provider SDK's exception, chained as a `BackendError`'s `__cause__`.

    The SDK's own exception is never chained: its message (and the response body it carries)
    often quotes the API key back, and `traceback.format_exception` / `logging.exception` print
    the whole chain. This copy keeps what a reader needs: the SDK exception's module and class
    (`sdk_type`), the HTTP status, and its message masked (`myopto.logs.redact`).
    """

    def __init__(self, message: str, *, sdk_type: str, status_code: int | None) -> None:
        super().__init__(message)
        self.sdk_type = sdk_type
        self.status_code = status_code


def provider_error(error: BaseException, status: int | None = None) -> ProviderError:
    """The masked copy of `error` (see `ProviderError`)."""
    sdk_type = f"{type(error).__module__}.{type(error).__qualname__}"
    where = f" (HTTP {status})" if status is not None else ""
    return ProviderError(f"{sdk_type}{where}: {redact(str(error).strip())}", sdk_type=sdk_type, status_code=status)


def sdk_failure(error: BaseException, backend: str, request: Request) -> BaseException | None:
    """What a backend raises for an exception its SDK call raised, or None for one that is not
    the SDK's (our own code's: re-raise it as it is).

    A request that could not be encoded is an `InvalidRequest` (nothing was sent); an SDK
    exception is its `backend_error`. Raise the result outside the `except` block that caught
    `error` (`raise failure`), so the SDK exception is not its `__context__` either.
    """
    if (invalid := unsendable(error)) is not None:  # nothing was sent
        invalid.__cause__ = None  # and __suppress_context__: the SDK's exception stays out
        return invalid
    if not is_sdk_error(error):
        return None
    return backend_error(error, backend, request)


def backend_error(error: BaseException, backend: str, request: Request | None = None) -> BackendError:
    """Translate an SDK exception (openai, litellm, httpx) into the matching `BackendError` subclass.

    Reads the HTTP status and the `retry-after-ms` / `retry-after` headers when the exception
    carries a response. The kind decides `retryable`: rate limits, 5xx, timeouts, dropped or
    refused connections and malformed bodies are; authentication and bad requests are not.
    The provider's message is masked (`myopto.logs.redact`): servers echo API keys back. Its
    `__cause__` is the masked copy of `error` (`ProviderError`), never `error` itself: raise it
    as it is (`raise failure`, not `raise failure from error`), outside the `except` block.
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
    name = type(error).__name__
    kind = _kind(error, name, status)
    where = f"HTTP {status}" if status is not None else name
    failure = kind(
        f"{backend} call failed ({where}): {redact(str(error).strip() or name)}",
        status_code=status,
        retryable=kind in _RETRYABLE_KINDS or (kind is BadRequest and status in _RETRYABLE_STATUS),
        retry_after=_retry_after(headers),
        role=request.role if request is not None else None,
        model=request.model if request is not None else None,
    )
    failure.__cause__ = provider_error(error, status)  # sets __suppress_context__ too
    return failure


def _kind(error: BaseException, name: str, status: int | None) -> type[BackendError]:
    lowered = name.lower()
    if status == 429 or "ratelimit" in lowered:
        return RateLimited
    if status in (401, 403) or "authentication" in lowered or "permissiondenied" in lowered:
        return AuthenticationFailed
    # litellm reports a timeout or dropped connection of the openai client as a 500 / 408
    if "timeout" in lowered or status == 408 or "timed out" in str(error).lower():
        return BackendTimeout
    if (
        isinstance(error, json.JSONDecodeError)
        or "Unterminated string" in str(error)
        or "Expecting value" in str(error)
    ):
        return MalformedResponse
    if (
        "connection" in lowered
        or "connect" in lowered
        or "remoteprotocol" in lowered
        or "Connection error" in str(error)
    ):
        return ConnectionFailed
    if status is not None and status >= 500:
        return ServerError
    if status is not None and 400 <= status < 500:
        return BadRequest
    return ServerError if status is None and "apierror" in lowered else BadRequest


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    try:
        milliseconds = headers.get("retry-after-ms")
        seconds = headers.get("retry-after")
    except AttributeError:
        return None
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except (TypeError, ValueError, OverflowError):  # not a number: the header is ignored
            pass  # and Retry-After, when sent, is read instead
    if seconds is None:
        return None
    try:
        return max(0.0, float(seconds))
    except (TypeError, ValueError, OverflowError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(seconds)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0.0, when.timestamp() - time.time())
