"""Reading an OpenAI-shaped chat completion (openai's or LiteLLM's object, or plain JSON) into a
`Response`: every choice with its content, tool calls, reasoning, logprobs and finish reason,
and the usage with its cached-prompt and reasoning token counts. `read_field` and `usage_of` serve
the reading of a streamed answer too (`stream_reading`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from myopto.errors import MalformedResponse
from myopto.parsing import content_text
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
    tokens = usage_of(getattr(raw, "usage", None), backend, request)
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


def read_field(value: Any, name: str) -> Any:
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
    message = read_field(choice, "message")
    if message is None:
        raise _NotAnAnswer(f"{backend} answered with a choice that has no message")
    content = read_field(message, "content")
    if isinstance(content, list):  # content parts, as some OpenAI-compatible servers answer
        content = content_text(content)
    if not (content is None or isinstance(content, str)):
        raise _NotAnAnswer(f"{backend} answered with message content that is not text: {content!r:.100}")
    reasoning = read_field(message, "reasoning_content")
    if reasoning is None:  # vLLM and OpenRouter name it `reasoning`
        reasoning = read_field(message, "reasoning")
    index = read_field(choice, "index")
    finish_reason = read_field(choice, "finish_reason")
    try:
        return Choice(
            message=Message(
                content=content,
                tool_calls=_tool_calls(read_field(message, "tool_calls"), backend),
                reasoning_content=reasoning if isinstance(reasoning, str) else None,
            ),
            index=index if type(index) is int and index >= 0 else position,
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
            logprobs=logprobs_of(read_field(choice, "logprobs")),
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
        kind = read_field(call, "type") or "function"
        function = read_field(call, "function") or read_field(call, "custom")
        name = read_field(function, "name") if function is not None else None
        if not isinstance(name, str):
            raise _NotAnAnswer(f"{backend} answered with a tool call that names no function: {call!r:.200}")
        arguments = read_field(function, "arguments")
        if arguments is None:
            arguments = read_field(function, "input")
        if arguments is not None and not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        identifier = read_field(call, "id")
        converted.append(
            ToolCall(
                id=identifier if isinstance(identifier, str) and identifier else "call_" + uuid.uuid4().hex[:24],
                type=kind if isinstance(kind, str) else "function",
                function=Function(name=name, arguments=arguments or ""),
            )
        )
    return tuple(converted)


def logprobs_of(logprobs: Any) -> ChoiceLogprobs | None:
    """A choice's logprobs as data: the token entries' `token`, `logprob`, `bytes` and
    `top_logprobs`, whatever else an SDK object carries left out."""
    if logprobs is None:
        return None
    return ChoiceLogprobs(
        content=_token_logprobs(read_field(logprobs, "content")),
        refusal=_token_logprobs(read_field(logprobs, "refusal")),
    )


def _token_logprobs(tokens: Any) -> tuple[TokenLogprob, ...] | None:
    if tokens is None:
        return None
    return tuple(
        TokenLogprob(
            token=read_field(token, "token"),
            logprob=read_field(token, "logprob"),
            bytes=read_field(token, "bytes"),
            top_logprobs=tuple(
                TopLogprob(
                    token=read_field(top, "token"), logprob=read_field(top, "logprob"), bytes=read_field(top, "bytes")
                )
                for top in read_field(token, "top_logprobs") or ()
            ),
        )
        for token in tokens
    )


def usage_of(usage: Any, backend: str, request: Request) -> Usage:
    """The call's token counts, with the prompt tokens served from the provider's prompt cache
    (`prompt_tokens_details.cached_tokens`; DeepSeek's `prompt_cache_hit_tokens`) and the
    reasoning tokens of the completion (`completion_tokens_details.reasoning_tokens`)."""
    if usage is None:
        return Usage.of(0, 0)
    prompt_details = read_field(usage, "prompt_tokens_details")
    cached = read_field(prompt_details, "cached_tokens") if prompt_details is not None else None
    if cached is None:
        cached = read_field(usage, "prompt_cache_hit_tokens")
    completion_details = read_field(usage, "completion_tokens_details")
    reasoning = read_field(completion_details, "reasoning_tokens") if completion_details is not None else None
    return Usage.of(
        _token_count(read_field(usage, "prompt_tokens"), "prompt_tokens", backend, request),
        _token_count(read_field(usage, "completion_tokens"), "completion_tokens", backend, request),
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
