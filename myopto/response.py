"""`Response`: what a chain returns, readable like an OpenAI chat completion.

Everything the provider said that a caller can act on is data of the response, not of `raw`:
every choice (`n`) with its text, tool calls, reasoning and logprobs and its own finish reason,
and usage with its token classes (cached prompt tokens, reasoning tokens). `to_dict()` holds all
of it as plain JSON (what the cache stores) and `from_dict()` rebuilds an equal response, also
from records written before these fields existed. The parts are immutable (tuples, frozen
dataclasses): one cached response object serves every later hit in a process, so no caller can
change what the next one gets.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping
from typing import Any


class _ItemAccess:
    """Lets `obj["field"]` read `obj.field`, as LiteLLM's ModelResponse allows."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


def _fields(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`data` as keyword arguments of `cls`; a name `cls` does not have is a `ValueError`."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{where} is a {type(data).__name__}, not an object")
    unknown = set(data) - {field.name for field in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{where} has fields it does not have: {', '.join(sorted(map(repr, unknown)))}")
    return dict(data)


def _count(value: Any, where: str) -> int:
    if type(value) is not int or value < 0:  # not a bool, not a float
        raise ValueError(f"{where} is {value!r}, not a whole number of tokens")
    return value


# -- usage ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PromptTokensDetails(_ItemAccess):
    """What the prompt tokens hold: `cached_tokens` were served from the provider's prompt cache
    (billed at its cache-read price)."""

    cached_tokens: int = 0

    def __post_init__(self) -> None:
        _count(self.cached_tokens, "prompt_tokens_details.cached_tokens")


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionTokensDetails(_ItemAccess):
    """What the completion tokens hold: `reasoning_tokens` the model spent thinking (part of
    `completion_tokens`, as OpenAI counts them)."""

    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        _count(self.reasoning_tokens, "completion_tokens_details.reasoning_tokens")


_NO_CACHED = PromptTokensDetails()
_NO_REASONING = CompletionTokensDetails()


@dataclasses.dataclass(frozen=True, slots=True)
class Usage(_ItemAccess):
    """Token counts of one call (all its choices), named as in the OpenAI API.

    `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens` are 0
    when the provider did not report them. The details may be given as dicts (a stored record).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = _NO_CACHED
    completion_tokens_details: CompletionTokensDetails = _NO_REASONING

    def __post_init__(self) -> None:
        if not isinstance(self.prompt_tokens_details, PromptTokensDetails):
            details = PromptTokensDetails(
                **_fields(PromptTokensDetails, self.prompt_tokens_details, "usage.prompt_tokens_details")
            )
            object.__setattr__(self, "prompt_tokens_details", details)
        if not isinstance(self.completion_tokens_details, CompletionTokensDetails):
            details = CompletionTokensDetails(
                **_fields(CompletionTokensDetails, self.completion_tokens_details, "usage.completion_tokens_details")
            )
            object.__setattr__(self, "completion_tokens_details", details)

    @classmethod
    def of(
        cls,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        *,
        cached_tokens: int | None = 0,
        reasoning_tokens: int | None = 0,
    ) -> Usage:
        prompt, completion = int(prompt_tokens or 0), int(completion_tokens or 0)
        cached, reasoning = int(cached_tokens or 0), int(reasoning_tokens or 0)
        return cls(
            prompt,
            completion,
            prompt + completion,
            PromptTokensDetails(cached) if cached else _NO_CACHED,
            CompletionTokensDetails(reasoning) if reasoning else _NO_REASONING,
        )

    @property
    def cached_tokens(self) -> int:
        """Same as `prompt_tokens_details.cached_tokens`."""
        return self.prompt_tokens_details.cached_tokens

    @property
    def reasoning_tokens(self) -> int:
        """Same as `completion_tokens_details.reasoning_tokens`."""
        return self.completion_tokens_details.reasoning_tokens

    def __add__(self, other: Usage) -> Usage:
        """The tokens of two calls together (a re-ask added to the first answer, say)."""
        return Usage.of(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        """The counts as stored: the details only when not zero (so a plain answer's record reads
        as it always has)."""
        data: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.prompt_tokens_details != _NO_CACHED:
            data["prompt_tokens_details"] = dataclasses.asdict(self.prompt_tokens_details)
        if self.completion_tokens_details != _NO_REASONING:
            data["completion_tokens_details"] = dataclasses.asdict(self.completion_tokens_details)
        return data

    def model_dump(self) -> dict[str, Any]:
        """The counts as OpenAI's usage object, details always present."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": dataclasses.asdict(self.prompt_tokens_details),
            "completion_tokens_details": dataclasses.asdict(self.completion_tokens_details),
        }


# -- tool calls -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Function(_ItemAccess):
    """The function a tool call names, and its arguments as the JSON text the model wrote."""

    name: str
    arguments: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.arguments, str):
            raise TypeError(
                f"a tool call's function name and arguments are text, got {self.name!r}, {self.arguments!r:.80}"
            )


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCall(_ItemAccess):
    """One tool call of a message, in OpenAI's shape: `id`, `type` and `function` (name, arguments)."""

    id: str
    function: Function
    type: str = "function"

    def __post_init__(self) -> None:
        if not isinstance(self.function, Function):
            object.__setattr__(self, "function", Function(**_fields(Function, self.function, "tool_call.function")))
        if not isinstance(self.id, str) or not isinstance(self.type, str):
            raise TypeError(f"a tool call's id and type are text, got {self.id!r}, {self.type!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.function.name, "arguments": self.function.arguments},
        }


# -- logprobs -------------------------------------------------------------------------------


def _logprob(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a logprob is a number, got {value!r}")
    return value


def _bytes(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(type(item) is int and 0 <= item < 256 for item in value):
        raise TypeError(f"a token's bytes are a list of byte values, got {value!r:.80}")
    return tuple(value)


@dataclasses.dataclass(frozen=True, slots=True)
class TopLogprob(_ItemAccess):
    """One of the most likely tokens at a position, with its log probability."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.token, str):
            raise TypeError(f"a token is text, got {self.token!r}")
        _logprob(self.logprob)
        object.__setattr__(self, "bytes", _bytes(self.bytes))

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "logprob": self.logprob, "bytes": None if self.bytes is None else list(self.bytes)}


@dataclasses.dataclass(frozen=True, slots=True)
class TokenLogprob(_ItemAccess):
    """A token of the answer, its log probability and (when asked) the top alternatives."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.token, str):
            raise TypeError(f"a token is text, got {self.token!r}")
        _logprob(self.logprob)
        object.__setattr__(self, "bytes", _bytes(self.bytes))
        top = self.top_logprobs if self.top_logprobs is not None else ()
        object.__setattr__(
            self,
            "top_logprobs",
            tuple(
                item if isinstance(item, TopLogprob) else TopLogprob(**_fields(TopLogprob, item, "top_logprobs[]"))
                for item in top
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": None if self.bytes is None else list(self.bytes),
            "top_logprobs": [item.to_dict() for item in self.top_logprobs],
        }


def _tokens(value: Any, where: str) -> tuple[TokenLogprob, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{where} is a {type(value).__name__}, not a list")
    return tuple(
        item if isinstance(item, TokenLogprob) else TokenLogprob(**_fields(TokenLogprob, item, f"{where}[]"))
        for item in value
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ChoiceLogprobs(_ItemAccess):
    """The log probabilities of a choice's tokens (`content`), and of a refusal's."""

    content: tuple[TokenLogprob, ...] | None = None
    refusal: tuple[TokenLogprob, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "content", _tokens(self.content, "logprobs.content"))
        object.__setattr__(self, "refusal", _tokens(self.refusal, "logprobs.refusal"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "content": None if self.content is None else [item.to_dict() for item in self.content],
            "refusal": None if self.refusal is None else [item.to_dict() for item in self.refusal],
        }


# -- choices --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Message(_ItemAccess):
    """The assistant message of a choice: its text (`content`, None for a message made only of
    tool calls), `tool_calls`, `reasoning_content` (the provider's thinking, where it gives it)
    and `parsed` (the JSON value of a structured-output answer, as in OpenAI's `parse()`)."""

    content: str | None
    role: str = "assistant"
    tool_calls: tuple[ToolCall, ...] | None = None
    reasoning_content: str | None = None
    parsed: Any = None

    def __post_init__(self) -> None:
        if self.content is not None and not isinstance(self.content, str):
            raise TypeError(f"a message's content is text, got {type(self.content).__name__}")
        if not isinstance(self.role, str):
            raise TypeError(f"a message's role is text, got {self.role!r}")
        if self.reasoning_content is not None and not isinstance(self.reasoning_content, str):
            raise TypeError(f"reasoning_content is text, got {type(self.reasoning_content).__name__}")
        calls = self.tool_calls
        if calls is not None:
            if not isinstance(calls, (list, tuple)):
                raise TypeError(f"tool_calls is a {type(calls).__name__}, not a list")
            object.__setattr__(
                self,
                "tool_calls",
                tuple(
                    call if isinstance(call, ToolCall) else ToolCall(**_fields(ToolCall, call, "tool_calls[]"))
                    for call in calls
                )
                or None,
            )

    def to_dict(self) -> dict[str, Any]:
        """As stored and dumped: role and content, the rest only when present."""
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.reasoning_content is not None:
            data["reasoning_content"] = self.reasoning_content
        if self.parsed is not None:
            data["parsed"] = self.parsed
        return data


@dataclasses.dataclass(frozen=True, slots=True)
class Choice(_ItemAccess):
    """One choice of a completion: its message, index, finish reason and logprobs."""

    message: Message
    index: int = 0
    finish_reason: str | None = "stop"
    logprobs: ChoiceLogprobs | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.message, Message):
            object.__setattr__(self, "message", Message(**_fields(Message, self.message, "choice.message")))
        if self.logprobs is not None and not isinstance(self.logprobs, ChoiceLogprobs):
            object.__setattr__(
                self, "logprobs", ChoiceLogprobs(**_fields(ChoiceLogprobs, self.logprobs, "choice.logprobs"))
            )
        if type(self.index) is not int or self.index < 0:
            raise TypeError(f"a choice's index is a whole number, got {self.index!r}")
        if self.finish_reason is not None and not isinstance(self.finish_reason, str):
            raise TypeError(f"a choice's finish_reason is text, got {self.finish_reason!r}")

    def to_dict(self) -> dict[str, Any]:
        """As stored: logprobs only when present."""
        data: dict[str, Any] = {
            "index": self.index,
            "message": self.message.to_dict(),
            "finish_reason": self.finish_reason,
        }
        if self.logprobs is not None:
            data["logprobs"] = self.logprobs.to_dict()
        return data

    def model_dump(self) -> dict[str, Any]:
        """As OpenAI's choice object (`logprobs` always present)."""
        return {**self.to_dict(), "logprobs": None if self.logprobs is None else self.logprobs.to_dict()}


def choices_of(value: Any) -> tuple[Choice, ...]:
    """Choices given as `Choice` objects or as stored dicts, as a tuple of `Choice`; a shape
    that is not a choice raises `TypeError` or `ValueError` saying what is wrong."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"choices is a {type(value).__name__}, not a list")
    return tuple(item if isinstance(item, Choice) else Choice(**_fields(Choice, item, "choices[]")) for item in value)


def new_response_id() -> str:
    """A fresh id in the OpenAI style."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


@dataclasses.dataclass(frozen=True, slots=True)
class Response(_ItemAccess):
    """The answer to one call.

    `text` is the answer (the first choice's content, '' when it has none), `parsed` the JSON
    value when JSON was asked for, `cost` the USD cost of all choices (None when unknown),
    `cached` whether it came from the cache, `latency` seconds spent, `finish_reason` the first
    choice's. `attempts` counts backend calls made for it (0 when served from the cache).
    `choices` holds every choice (more than one when `n` was asked), each with its message
    (content, tool calls, reasoning, parsed value), finish reason and logprobs; left out, it is
    the one choice `text` and `finish_reason` describe.
    `raw` is the provider's own object: never cached, never logged, not compared.
    It reads like an OpenAI chat completion: `response.choices[0].message.content`,
    `response.choices[0].message.tool_calls[0].function.name`, `response.usage.prompt_tokens`,
    `response["choices"][0]["message"]["content"]`.
    """

    text: str
    model: str = ""
    usage: Usage = Usage()
    cost: float | None = None
    parsed: Any = None
    cached: bool = False
    latency: float | None = None
    finish_reason: str | None = "stop"
    attempts: int = 1
    id: str = dataclasses.field(default_factory=new_response_id)
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))
    choices: tuple[Choice, ...] = ()
    raw: Any = dataclasses.field(default=None, repr=False, compare=False)

    object = "chat.completion"

    def __post_init__(self) -> None:
        if not isinstance(self.usage, Usage):  # a stored record's dict
            object.__setattr__(self, "usage", Usage(**_fields(Usage, self.usage, "usage")))
        if not self.choices:
            message = Message(content=self.text, parsed=self.parsed)
            object.__setattr__(self, "choices", (Choice(message=message, finish_reason=self.finish_reason),))
        elif type(self.choices) is not tuple or not all(type(choice) is Choice for choice in self.choices):
            object.__setattr__(self, "choices", choices_of(self.choices))

    @property
    def content(self) -> str:
        """Same as `text`."""
        return self.text

    def replace(self, **changes: Any) -> Response:
        """A copy of this response with the given fields changed.

        `text`, `finish_reason` and `parsed` describe the first choice, so changing one of them
        changes that choice too; giving `choices` sets `text` and `finish_reason` from the first.
        """
        if "choices" in changes:
            given = changes["choices"] = choices_of(changes["choices"])
            if not given:
                raise ValueError("a response has at least one choice")
            first = given[0]
            changes.setdefault("text", first.message.content or "")
            changes.setdefault("finish_reason", first.finish_reason)
            changes.setdefault("parsed", first.message.parsed)
        elif changes.keys() & {"text", "finish_reason", "parsed"}:
            first = self.choices[0]
            message = first.message
            if "text" in changes and changes["text"] != self.text:
                message = dataclasses.replace(message, content=changes["text"])
            if "parsed" in changes:
                message = dataclasses.replace(message, parsed=changes["parsed"])
            first = dataclasses.replace(
                first, message=message, finish_reason=changes.get("finish_reason", first.finish_reason)
            )
            changes["choices"] = (first, *self.choices[1:])
        return dataclasses.replace(self, **changes)

    def _is_plain(self) -> bool:
        """Whether `choices` is exactly the one choice `text`, `finish_reason` and `parsed` make."""
        if len(self.choices) != 1:
            return False
        choice = self.choices[0]
        return choice == Choice(
            message=Message(content=self.text, parsed=self.parsed), finish_reason=self.finish_reason
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data for storage: everything but `raw`. `choices` is written only when it
        says more than `text` does (several choices, tool calls, reasoning, logprobs), so a
        plain answer's record reads as it always has."""
        data = {
            "text": self.text,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "cost": self.cost,
            "parsed": self.parsed,
            "cached": self.cached,
            "latency": self.latency,
            "finish_reason": self.finish_reason,
            "id": self.id,
            "created": self.created,
        }
        if not self._is_plain():
            data["choices"] = [choice.to_dict() for choice in self.choices]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Response:
        """The inverse of `to_dict()`; also reads records written before `choices` and the
        usage details existed."""
        return cls(**_fields(cls, data, "response"))

    def model_dump(self) -> dict[str, Any]:
        """The response as an OpenAI chat-completion dict, for code written against the OpenAI SDK."""
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [choice.model_dump() for choice in self.choices],
            "usage": self.usage.model_dump(),
        }
