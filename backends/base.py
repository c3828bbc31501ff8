"""The contract every backend meets, and the translation of provider errors into ours."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
import uuid
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
from myopto.response import (
    Choice,
    ChoiceLogprobs,
    Function,
    Message,
    Response,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
    new_response_id,
)

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


def headers_key(*headers: Mapping[str, Any] | None) -> str:
    """The extra headers a call sends, as part of its endpoint (and so of the cache key): a proxy
    may route on one (`x-route`, `anthropic-beta`, Helicone's and Portkey's headers), so two
    values are two destinations. Names lower-cased (HTTP's spelling does not matter) and sorted;
    a later mapping's header replaces an earlier one's. Credentials are left out, never masked
    in: headers of a secret-looking name (`is_secret_name`: `Authorization`, `x-api-key`,
    `Cookie`, ...) and values that hold a registered secret or a `Bearer ...` credential.
    "" when no header is keyed. Computed once per backend, not per call.
    """
    kept: dict[str, str] = {}
    for mapping in headers:
        for given, value in (mapping or {}).items():
            name = str(given).lower()  # after the secret check: `XApiKey` is secret by its camel case
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if (
                is_secret_name(given)
                or is_secret_name(name)
                or "authorization" in name
                or redact(text) != text
                or _is_credential(text)
            ):
                kept.pop(name, None)
                continue
            kept[name] = text
    if not kept:
        return ""
    return "headers=" + json.dumps(dict(sorted(kept.items())), ensure_ascii=False, separators=(",", ":"))


def _is_credential(value: str) -> bool:
    """A header value of the form `<scheme> <credential>` with a credential scheme."""
    scheme, _, credential = value.strip().partition(" ")
    return scheme.lower() in ("bearer", "basic", "token", "digest") and bool(credential.strip())


def _masked_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    return f"{name}={MASK}" if equals and is_secret_name(unquote_plus(name)) else parameter


def completion_response(
    raw: Any, request: Request, latency: float, backend: str, price: Callable[[Usage], float | None]
) -> Response:
    """A `Response` from an OpenAI-shaped chat completion (openai's or LiteLLM's object).

    Every choice is kept with its content, tool calls, reasoning, logprobs and finish reason,
    and the usage with its cached-prompt and reasoning token counts, so none of it lives only in
    `raw` (which the cache never stores). `price(usage)` gives the call's USD cost, or None when
    unknown. An answer without choices, or with one that is not a message, is a
    `MalformedResponse` (retryable).
    """
    raw_choices = getattr(raw, "choices", None)
    if not raw_choices:
        raise MalformedResponse(
            f"{backend} answered with no choices", retryable=True, role=request.role, model=request.model
        )
    try:
        choices = tuple(_choice(choice, position, backend) for position, choice in enumerate(raw_choices))
    except _NotAnAnswer as problem:
        raise MalformedResponse(str(problem), retryable=True, role=request.role, model=request.model) from None
    tokens = _usage(getattr(raw, "usage", None), backend, request)
    created = getattr(raw, "created", None)
    first = choices[0]
    return Response(
        text=first.message.content or "",
        model=getattr(raw, "model", None) or request.model,
        usage=tokens,
        cost=price(tokens),
        latency=latency,
        finish_reason=first.finish_reason,
        id=getattr(raw, "id", None) or new_response_id(),
        created=created if type(created) is int else int(time.time()),
        choices=choices,
        raw=raw,
    )


class _NotAnAnswer(Exception):
    """A choice the provider sent that does not read as an answer (becomes `MalformedResponse`)."""


_ABSENT = object()


def _field(value: Any, name: str) -> Any:
    """`value.name`, or `value[name]` for a dict (SDK objects and plain JSON alike). Exact types
    first: this runs a dozen times per answer, and an ABC `isinstance` costs more than the rest."""
    if type(value) is dict:
        return value.get(name)
    attributes = getattr(value, "__dict__", None)
    if attributes is not None:
        if name in attributes:
            return attributes[name]
        if hasattr(type(value), "__pydantic_fields__"):
            # a pydantic model (the SDKs' objects): fields live in __dict__ and extras apart; a
            # plain getattr of a missing name would raise and catch inside pydantic, ~2 µs each
            extra = value.__pydantic_extra__
            return extra.get(name) if extra else None
    found = getattr(value, name, _ABSENT)
    if found is _ABSENT:
        return value.get(name) if isinstance(value, Mapping) else None
    return found


def _choice(choice: Any, position: int, backend: str) -> Choice:
    message = _field(choice, "message")
    if message is None:
        raise _NotAnAnswer(f"{backend} answered with a choice that has no message")
    content = _field(message, "content")
    if isinstance(content, list):  # content parts, as some OpenAI-compatible servers answer
        content = content_text(content)
    if not (content is None or isinstance(content, str)):
        raise _NotAnAnswer(f"{backend} answered with message content that is not text: {content!r:.100}")
    reasoning = _field(message, "reasoning_content")
    if reasoning is None:  # vLLM and OpenRouter name it `reasoning`
        reasoning = _field(message, "reasoning")
    index = _field(choice, "index")
    finish_reason = _field(choice, "finish_reason")
    try:
        return Choice(
            message=Message(
                content=content,
                tool_calls=_tool_calls(_field(message, "tool_calls"), backend),
                reasoning_content=reasoning if isinstance(reasoning, str) else None,
            ),
            index=index if type(index) is int and index >= 0 else position,
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
            logprobs=_logprobs(_field(choice, "logprobs")),
        )
    except (TypeError, ValueError) as error:
        raise _NotAnAnswer(f"{backend} answered with a choice that cannot be read: {error}") from None


def _tool_calls(calls: Any, backend: str) -> tuple[ToolCall, ...] | None:
    """Tool calls in OpenAI's shape. A custom tool's call (`type: "custom"`, free-text `input`)
    keeps its type, with its input as the arguments; a server that sends arguments as an object
    rather than JSON text has them written as JSON text; a missing id is made up, as LiteLLM does."""
    if not calls:
        return None
    converted = []
    for call in calls:
        kind = _field(call, "type") or "function"
        function = _field(call, "function") or _field(call, "custom")
        name = _field(function, "name") if function is not None else None
        if not isinstance(name, str):
            raise _NotAnAnswer(f"{backend} answered with a tool call that names no function: {call!r:.200}")
        arguments = _field(function, "arguments")
        if arguments is None:
            arguments = _field(function, "input")
        if arguments is not None and not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        identifier = _field(call, "id")
        converted.append(
            ToolCall(
                id=identifier if isinstance(identifier, str) and identifier else "call_" + uuid.uuid4().hex[:24],
                type=kind if isinstance(kind, str) else "function",
                function=Function(name=name, arguments=arguments or ""),
            )
        )
    return tuple(converted)


def _logprobs(logprobs: Any) -> ChoiceLogprobs | None:
    """A choice's logprobs as data: the token entries' `token`, `logprob`, `bytes` and
    `top_logprobs`, whatever else an SDK object carries left out."""
    if logprobs is None:
        return None
    return ChoiceLogprobs(
        content=_token_logprobs(_field(logprobs, "content")), refusal=_token_logprobs(_field(logprobs, "refusal"))
    )


def _token_logprobs(tokens: Any) -> tuple[TokenLogprob, ...] | None:
    if tokens is None:
        return None
    return tuple(
        TokenLogprob(
            token=_field(token, "token"),
            logprob=_field(token, "logprob"),
            bytes=_field(token, "bytes"),
            top_logprobs=tuple(
                TopLogprob(token=_field(top, "token"), logprob=_field(top, "logprob"), bytes=_field(top, "bytes"))
                for top in _field(token, "top_logprobs") or ()
            ),
        )
        for token in tokens
    )


def _usage(usage: Any, backend: str, request: Request) -> Usage:
    """The call's token counts, with the prompt tokens served from the provider's prompt cache
    (`prompt_tokens_details.cached_tokens`; DeepSeek's `prompt_cache_hit_tokens`) and the
    reasoning tokens of the completion (`completion_tokens_details.reasoning_tokens`)."""
    if usage is None:
        return Usage.of(0, 0)
    prompt_details = _field(usage, "prompt_tokens_details")
    cached = _field(prompt_details, "cached_tokens") if prompt_details is not None else None
    if cached is None:
        cached = _field(usage, "prompt_cache_hit_tokens")
    completion_details = _field(usage, "completion_tokens_details")
    reasoning = _field(completion_details, "reasoning_tokens") if completion_details is not None else None
    return Usage.of(
        _token_count(_field(usage, "prompt_tokens"), "prompt_tokens", backend, request),
        _token_count(_field(usage, "completion_tokens"), "completion_tokens", backend, request),
        cached_tokens=_token_count(cached, "prompt_tokens_details.cached_tokens", backend, request),
        reasoning_tokens=_token_count(reasoning, "completion_tokens_details.reasoning_tokens", backend, request),
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
        retryable=True,
        role=request.role,
        model=request.model,
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
                f"{cause.object[cause.start : cause.end]!r}); clean it first, e.g. text.encode('utf-8', 'replace').decode()"
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
