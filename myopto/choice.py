"""A choice of a completion and what it holds, read like OpenAI's: the assistant `Message` (text,
`ToolCall`s, reasoning, parsed value), the finish reason, and `ChoiceLogprobs` (a `TokenLogprob`
per token, each with its `TopLogprob` alternatives).

Immutable (frozen dataclasses, tuples): one cached response serves every later hit in a process.
Each part is built from a stored dict as well as from its own objects (`choices_of`), and a shape
that is not one is refused with a `TypeError` or `ValueError` saying what is wrong.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from myopto.openai_objects import ItemAccess, fields_of, part_of

# -- tool calls -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Function(ItemAccess):
    """The function a tool call names, and its arguments as the JSON text the model wrote."""

    name: str
    arguments: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.arguments, str):
            raise TypeError(
                f"a tool call's function name and arguments are text, got {self.name!r}, {self.arguments!r:.80}"
            )


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCall(ItemAccess):
    """One tool call of a message, in OpenAI's shape: `id`, `type` and `function` (name, arguments)."""

    id: str
    function: Function
    type: str = "function"

    def __post_init__(self) -> None:
        function: Any = self.function  # a stored record gives a dict
        if not isinstance(function, Function):
            object.__setattr__(self, "function", Function(**fields_of(Function, function, "tool_call.function")))
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
class TopLogprob(ItemAccess):
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
class TokenLogprob(ItemAccess):
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
            tuple(part_of(TopLogprob, item, "top_logprobs[]") for item in top),
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
    return tuple(part_of(TokenLogprob, item, f"{where}[]") for item in value)


@dataclasses.dataclass(frozen=True, slots=True)
class ChoiceLogprobs(ItemAccess):
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
class Message(ItemAccess):
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
                tuple(part_of(ToolCall, call, "tool_calls[]") for call in calls) or None,
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
class Choice(ItemAccess):
    """One choice of a completion: its message, index, finish reason and logprobs."""

    message: Message
    index: int = 0
    finish_reason: str | None = "stop"
    logprobs: ChoiceLogprobs | None = None

    def __post_init__(self) -> None:
        message: Any = self.message  # a stored record gives dicts
        logprobs: Any = self.logprobs
        if not isinstance(message, Message):
            object.__setattr__(self, "message", Message(**fields_of(Message, message, "choice.message")))
        if logprobs is not None and not isinstance(logprobs, ChoiceLogprobs):
            object.__setattr__(
                self, "logprobs", ChoiceLogprobs(**fields_of(ChoiceLogprobs, logprobs, "choice.logprobs"))
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
    return tuple(part_of(Choice, item, "choices[]") for item in value)
