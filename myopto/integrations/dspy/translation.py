"""DSPy's canonical `dspy.lm15` types and myopto's, translated both ways.

A `dspy.lm15.Request` becomes the chat-completion call a role takes (messages, generation
parameters, `response_format`, tools) through DSPy's own Chat Completions serialiser
(`dspy.clients.lm15_boundary.request_kwargs`, which DSPy's `LegacyEngine` uses too: lm15 has no
public request-to-body function), so what DSPy means by a Request is what the role is asked.
A choice of a myopto `Response` becomes a `dspy.lm15.Response` through lm15's public reader
(`response_from_openai_chat`), with what myopto knows about the call under
`provider_data["myopto"]`; a streamed call's chunks become lm15 stream events. myopto's errors
become lm15's canonical ones, which DSPy projects onto its public `LM*Error`s; the myopto error
stays the `__cause__`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any

from dspy import lm15
from dspy.clients.lm15_boundary import request_kwargs

from myopto.chunks import Chunk
from myopto.errors import (
    AuthenticationFailed,
    BackendTimeout,
    BadRequest,
    BudgetExceeded,
    CacheMiss,
    CacheUnavailable,
    ConfigError,
    ConnectionFailed,
    InvalidRequest,
    MalformedResponse,
    MyoptoError,
    RateLimited,
    ServerError,
    StreamBroken,
)
from myopto.params import GENERATION_PARAMS
from myopto.response import Response

PROVIDER = "myopto"

# A thinking part first, the text next, tool calls after: the order lm15 assembles parts in.
_THINKING_PART, _TEXT_PART, _FIRST_TOOL_PART = 0, 1, 2


def call_arguments(request: Any) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """(messages, response_format, generation parameters) of a `dspy.lm15.Request`, as a role
    takes them. What myopto has no parameter for travels as the provider's own fields in
    `extra_body`; `max_tokens` stays `max_tokens` (the dialect writes `max_completion_tokens`,
    which not every server reads) and `top_k`, which the dialect drops, is kept."""
    body = request_kwargs(request, "chat")
    messages: list[dict[str, Any]] = body.pop("messages")
    response_format = body.pop("response_format", None)
    params = {name: body.pop(name) for name in list(body) if name in GENERATION_PARAMS}
    if request.config.max_tokens is not None:  # the dialect spells it max_completion_tokens; a role, max_tokens
        params.pop("max_completion_tokens", None)
        params["max_tokens"] = request.config.max_tokens
    if request.config.top_k is not None:
        params["top_k"] = request.config.top_k
    if body:
        params["extra_body"] = {**params.get("extra_body", {}), **body}
    return messages, response_format, params


def canonical_response(response: Response, index: int, role: str, *, first: bool) -> Any:
    """Choice `index` of `response` as a `dspy.lm15.Response`.

    The call's tokens and cost go with the `first` candidate handed to DSPy (the others of the
    same call cost nothing more), and a cache hit bills nothing: DSPy's usage tracker and
    history then count what was spent, as they do for DSPy's own cache.
    `provider_data["myopto"]` says what myopto knows: role, model, cost, whether it was cached.
    """
    choice = response.choices[index]
    billed = first and not response.cached
    usage = response.usage.model_dump() if billed else {"prompt_tokens": 0, "completion_tokens": 0}
    body = {
        "id": response.id,
        "model": response.model or f"{PROVIDER}/{role}",
        "choices": [{**choice.model_dump(), "index": 0}],
        "usage": usage,
    }
    canonical = lm15.response_from_openai_chat(body)
    cost = response.cost if billed else 0.0
    info: dict[str, Any] = {
        "role": role,
        "model": response.model,
        "cached": response.cached,
        "cost": cost,
        "choice": choice.index,
        "usage": response.usage.to_dict(),
    }
    if response.cached and first:
        info["saved_cost"] = response.cost
    return dataclasses.replace(canonical, provider_data={PROVIDER: info})


def myopto_cost(response: Any) -> float | None:
    """The USD cost myopto recorded on a `dspy.lm15.Response` this module made (None: unknown)."""
    data = getattr(response, "provider_data", None)
    info = data.get(PROVIDER) if isinstance(data, Mapping) else None
    cost = info.get("cost") if isinstance(info, Mapping) else None
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None


class StreamEvents:
    """The lm15 stream events of one streamed candidate: `of(chunk)` for each myopto chunk (only
    choice `index`'s parts), `end(response)` last. The start event goes out with the first chunk,
    so it names the model that answered."""

    def __init__(self, model: str, index: int = 0) -> None:
        self.model = model
        self.index = index
        self.started = False

    def start(self, identifier: str | None = None, model: str | None = None) -> Iterator[Any]:
        if not self.started:
            self.started = True
            yield lm15.StreamStartEvent(id=identifier or None, model=model or self.model)

    def of(self, chunk: Chunk) -> Iterator[Any]:
        yield from self.start(chunk.id, chunk.model)
        for part in chunk.choices:
            if part.index != self.index:
                continue
            delta = part.delta
            if delta.reasoning_content:
                yield _delta(lm15.ThinkingDelta(text=delta.reasoning_content, part_index=_THINKING_PART))
            tokens = _token_logprobs(part.logprobs.content if part.logprobs is not None else None)
            if delta.content or tokens:
                yield _delta(lm15.TextDelta(text=delta.content or "", part_index=_TEXT_PART, logprobs=tokens))
            for call in delta.tool_calls or ():
                function = call.function
                yield _delta(
                    lm15.ToolCallDelta(
                        input=(function.arguments if function is not None else None) or "",
                        part_index=_FIRST_TOOL_PART + call.index,
                        id=call.id,
                        name=function.name if function is not None else None,
                    )
                )

    def end(self, response: Any) -> Iterator[Any]:
        """The end event, carrying the finished candidate's finish reason, usage and myopto's data."""
        yield from self.start(response.id, response.model)
        yield lm15.StreamEndEvent(
            finish_reason=response.finish_reason, usage=response.usage, provider_data=response.provider_data
        )


def replayed_events(response: Any) -> Iterator[Any]:
    """A whole `dspy.lm15.Response` as the stream events that make it (a candidate that was
    decoded with the first one, streamed to DSPy when its turn comes)."""
    yield lm15.StreamStartEvent(id=response.id, model=response.model)
    tools = 0
    for part in response.message.parts:
        if part.type == "thinking":
            yield _delta(lm15.ThinkingDelta(text=part.text, part_index=_THINKING_PART))
        elif part.type == "text" and (part.text or response.logprobs):
            yield _delta(lm15.TextDelta(text=part.text, part_index=_TEXT_PART, logprobs=response.logprobs or ()))
        elif part.type == "tool_call":
            yield _delta(
                lm15.ToolCallDelta(
                    input=json.dumps(part.input), part_index=_FIRST_TOOL_PART + tools, id=part.id, name=part.name
                )
            )
            tools += 1
    yield lm15.StreamEndEvent(
        finish_reason=response.finish_reason, usage=response.usage, provider_data=response.provider_data
    )


def _delta(delta: Any) -> Any:
    return lm15.StreamDeltaEvent(delta=delta)


def _token_logprobs(tokens: Any) -> tuple[Any, ...]:
    """myopto's token logprobs (`myopto.choice.TokenLogprob`s) as lm15's."""
    return tuple(
        lm15.TokenLogprob(
            token=token.token,
            logprob=float(token.logprob),
            bytes=token.bytes,
            top=tuple(
                lm15.TopLogprob(token=t.token, logprob=float(t.logprob), bytes=t.bytes) for t in token.top_logprobs
            ),
        )
        for token in tokens or ()
    )


# myopto's error -> lm15's canonical error (DSPy projects it onto its own public LM*Error);
# the first match wins, so subclasses come before their bases.
_ERRORS: tuple[tuple[type[BaseException], Any], ...] = (
    (AuthenticationFailed, lm15.AuthError),
    (RateLimited, lm15.RateLimitError),
    (BackendTimeout, lm15.TimeoutError),
    (StreamBroken, lm15.TransportError),
    (ConnectionFailed, lm15.TransportError),
    (ServerError, lm15.ServerError),
    (MalformedResponse, lm15.ServerError),
    (BadRequest, lm15.InvalidRequestError),
    (InvalidRequest, lm15.InvalidRequestError),
    (BudgetExceeded, lm15.BillingError),
    (CacheMiss, lm15.ConfigurationError),
    (CacheUnavailable, lm15.ConfigurationError),
    (ConfigError, lm15.ConfigurationError),
    (MyoptoError, lm15.ProviderError),
)


def canonical_error(error: MyoptoError, role: str) -> Exception:
    """`error` as the lm15 error DSPy expects of an engine (retry hints and status kept)."""
    kind = next(target for source, target in _ERRORS if isinstance(error, source))
    details: dict[str, Any] = {"provider": PROVIDER}
    status = getattr(error, "status_code", None)
    if status is not None:
        details["status"] = status
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        details["retry_after"] = float(retry_after)
    if kind is lm15.AuthError:
        details["credential_hint"] = f"give role {role!r} its key: set_role_config({role!r}, api_key=...)"
    canonical: Exception = kind(f"{type(error).__name__}: {error}", **details)
    return canonical


@contextlib.contextmanager
def translated_errors(role: str) -> Iterator[None]:
    """Raise myopto's errors as lm15's canonical ones, each `from` the myopto error."""
    try:
        yield
    except MyoptoError as error:
        raise canonical_error(error, role) from error
