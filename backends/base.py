"""The contract every backend meets, and the translation of provider errors into ours."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import unquote_plus, urlsplit

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
from myopto.logs import is_secret_name, redact
from myopto.parsing import content_text
from myopto.pricing import cost_from_map
from myopto.request import Request
from myopto.response import Response, Usage, new_response_id

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
_RETRYABLE_KINDS = (RateLimited, ServerError, BackendTimeout, ConnectionFailed, MalformedResponse)


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
            )
            if on
        ]
        endpoint = self.endpoint()
        where = f" at {endpoint}" if endpoint else ""
        return f"{self.kind}{where} [{', '.join(abilities) or 'text only'}]"


_DEFAULT_PORTS = {"http": 80, "https": 443}
MASK = "***"


def endpoint_url(url: str) -> str:
    """A base URL in the one spelling the cache key and `myopto roles` use.

    Scheme and host lower-cased, a default port and a trailing `/` dropped (the SDKs send the
    same requests either way; a bare host keeps its root `/`), the fragment dropped (never sent).
    Credentials are masked, not kept: user name and password, and the values of secret-looking
    query parameters (`?api-key=...`, `is_secret_name`). Different keys to one server reach the
    same model, as a different `api_key` does, so the cache key does not depend on them; other
    query parameters (`?api-version=...`) are kept as written, in their order.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # such as a broken IPv6 address
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:  # not a URL (the SDK will say so): as written
        return url.strip()
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: keep what was written, the SDK will refuse it
        port, host = None, parts.netloc.rpartition("@")[2].lower()
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        host = f"{MASK}@{host}"
    query = "&".join(_masked_parameter(parameter) for parameter in parts.query.split("&") if parameter)
    path = parts.path.rstrip("/") or "/"  # the root keeps its slash: what follows a host stays out of it
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def _masked_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    return f"{name}={MASK}" if equals and is_secret_name(unquote_plus(name)) else parameter


def completion_response(raw: Any, request: Request, latency: float, backend: str,
                        price: Callable[[Usage], float | None]) -> Response:
    """A `Response` from an OpenAI-shaped chat completion (openai's or LiteLLM's object).

    `price(usage)` gives the call's USD cost, or None when unknown. An answer without choices
    is a `MalformedResponse` (retryable).
    """
    choices = getattr(raw, "choices", None)
    if not choices:
        raise MalformedResponse(f"{backend} answered with no choices", retryable=True, role=request.role, model=request.model)
    choice = choices[0]
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    if isinstance(content, list):  # content parts, as some OpenAI-compatible servers answer
        content = content_text(content)
    if message is None or not (content is None or isinstance(content, str)):
        raise MalformedResponse(
            f"{backend} answered with a choice that has no message"
            if message is None else f"{backend} answered with message content that is not text: {content!r:.100}",
            retryable=True, role=request.role, model=request.model,
        )
    usage = getattr(raw, "usage", None)
    tokens = Usage.of(
        _token_count(getattr(usage, "prompt_tokens", 0), "prompt_tokens", backend, request),
        _token_count(getattr(usage, "completion_tokens", 0), "completion_tokens", backend, request),
    )
    return Response(
        text=content or "",
        model=getattr(raw, "model", None) or request.model,
        usage=tokens,
        cost=price(tokens),
        latency=latency,
        finish_reason=getattr(choice, "finish_reason", None),
        id=getattr(raw, "id", None) or new_response_id(),
        raw=raw,
    )


def _token_count(value: Any, name: str, backend: str, request: Request) -> int:
    """A token count as the provider gave it: a whole number, or text of one ("12", "12.0"), which
    some servers send; anything else is a `MalformedResponse` (retryable)."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, float) and number.is_integer() and number >= 0:
        return int(number)
    raise MalformedResponse(
        f"{backend} answered with usage.{name} = {value!r:.40}, not a token count",
        retryable=True, role=request.role, model=request.model,
    )


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
                f"{cause.object[cause.start:cause.end]!r}); clean it first, e.g. text.encode('utf-8', 'replace').decode()"
            )
        cause = cause.__cause__ or cause.__context__
    return None


_SDK_PACKAGES = frozenset({"openai", "litellm", "httpx", "httpcore", "aiohttp"})


def is_sdk_error(error: BaseException) -> bool:
    """True when `error` comes from a provider SDK or the HTTP stack, not from our own code.

    A `JSONDecodeError` raised inside an SDK call means the server sent a malformed body.
    """
    return isinstance(error, json.JSONDecodeError) or type(error).__module__.split(".")[0] in _SDK_PACKAGES


def backend_error(error: BaseException, backend: str, request: Request | None = None) -> BackendError:
    """Translate an SDK exception (openai, litellm, httpx) into the matching `BackendError` subclass.

    Reads the HTTP status and the `retry-after-ms` / `retry-after` headers when the exception
    carries a response. The kind decides `retryable`: rate limits, 5xx, timeouts, dropped or
    refused connections and malformed bodies are; authentication and bad requests are not.
    The provider's message is masked (`myopto.logs.redact`): servers echo API keys back.
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
    return kind(
        f"{backend} call failed ({where}): {redact(str(error).strip() or name)}",
        status_code=status,
        retryable=kind in _RETRYABLE_KINDS or (kind is BadRequest and status in _RETRYABLE_STATUS),
        retry_after=_retry_after(headers),
        role=request.role if request is not None else None,
        model=request.model if request is not None else None,
    )


def _kind(error: BaseException, name: str, status: int | None) -> type[BackendError]:
    lowered = name.lower()
    if status == 429 or "ratelimit" in lowered:
        return RateLimited
    if status in (401, 403) or "authentication" in lowered or "permissiondenied" in lowered:
        return AuthenticationFailed
    # litellm reports a timeout or dropped connection of the openai client as a 500 / 408
    if "timeout" in lowered or status == 408 or "timed out" in str(error).lower():
        return BackendTimeout
    if isinstance(error, json.JSONDecodeError) or "Unterminated string" in str(error) or "Expecting value" in str(error):
        return MalformedResponse
    if "connection" in lowered or "connect" in lowered or "remoteprotocol" in lowered or "Connection error" in str(error):
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
