"""The pieces of a streamed answer, read like OpenAI's `ChatCompletionChunk`, and how they make a
`Response`.

`chunk.choices[0].delta.content` is the next piece of text; `delta.tool_calls` carries pieces of
tool calls (by `index`: the first piece has the id and name, the rest add to the arguments),
`delta.reasoning_content` pieces of the provider's reasoning, `finish_reason` ends a choice, and
the last chunk may carry `usage`; `choices[0].logprobs` holds the logprobs of the tokens a chunk
adds, when they were asked for. `Assembler` adds the chunks of one answer up into the
`Response` a plain call would have given, with the chunks kept in `Response.stream` so that a
cache hit or a replay streams them again, in the same order. `replay_chunks` gives the chunks of
any response: the stored ones, or (for an answer that was never streamed) one chunk a choice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from myopto.choice import Choice, ChoiceLogprobs, Function, Message, TokenLogprob, ToolCall
from myopto.openai_objects import ItemAccess, fields_of, part_of


@dataclasses.dataclass(frozen=True, slots=True)
class FunctionDelta(ItemAccess):
    """A piece of a tool call's function: its name (first piece) and a piece of its arguments."""

    name: str | None = None
    arguments: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCallDelta(ItemAccess):
    """A piece of the tool call at `index` of its message."""

    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None

    def __post_init__(self) -> None:
        function: Any = self.function
        if function is not None and not isinstance(function, FunctionDelta):
            object.__setattr__(self, "function", FunctionDelta(**fields_of(FunctionDelta, function, "delta.function")))
        if type(self.index) is not int:
            raise TypeError(f"a tool-call delta's index is a whole number, got {self.index!r}")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index}
        if self.id is not None:
            data["id"] = self.id
        if self.type is not None:
            data["type"] = self.type
        if self.function is not None:
            data["function"] = {k: v for k, v in dataclasses.asdict(self.function).items() if v is not None}
        return data


@dataclasses.dataclass(frozen=True, slots=True)
class Delta(ItemAccess):
    """What one chunk adds to a choice's message."""

    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("role", "content", "reasoning_content"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"a delta's {name} is text, got {type(value).__name__}")
        calls: Any = self.tool_calls
        if calls is not None:
            if not isinstance(calls, (list, tuple)):
                raise TypeError(f"a delta's tool_calls is a {type(calls).__name__}, not a list")
            object.__setattr__(
                self,
                "tool_calls",
                tuple(part_of(ToolCallDelta, c, "delta") for c in calls),
            )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            k: getattr(self, k) for k in ("role", "content", "reasoning_content") if getattr(self, k) is not None
        }
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        return data


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkChoice(ItemAccess):
    """One choice's part of a chunk: its `delta`, and `finish_reason` on its last chunk."""

    delta: Delta
    index: int = 0
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None  # of the tokens this chunk adds, when asked for

    def __post_init__(self) -> None:
        delta: Any = self.delta
        if not isinstance(delta, Delta):
            object.__setattr__(self, "delta", Delta(**fields_of(Delta, delta, "chunk.choices[].delta")))
        logprobs: Any = self.logprobs
        if logprobs is not None and not isinstance(logprobs, ChoiceLogprobs):
            object.__setattr__(
                self, "logprobs", ChoiceLogprobs(**fields_of(ChoiceLogprobs, logprobs, "chunk.choices[].logprobs"))
            )
        if type(self.index) is not int or (self.finish_reason is not None and not isinstance(self.finish_reason, str)):
            raise TypeError(f"a chunk choice has a whole-number index and a text finish reason, got {self!r:.120}")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index, "delta": self.delta.to_dict()}
        if self.finish_reason is not None:
            data["finish_reason"] = self.finish_reason
        if self.logprobs is not None:
            data["logprobs"] = self.logprobs.to_dict()
        return data


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk(ItemAccess):
    """One piece of a streamed answer, as OpenAI's `ChatCompletionChunk` reads."""

    choices: tuple[ChunkChoice, ...] = ()
    usage: Any = None  # a `myopto.response.Usage` on the last chunk, when the provider counts
    id: str = ""
    model: str = ""
    created: int = 0

    object = "chat.completion.chunk"

    def __post_init__(self) -> None:
        choices: Any = self.choices
        if not isinstance(choices, tuple) or not all(type(c) is ChunkChoice for c in choices):
            if not isinstance(choices, (list, tuple)):
                raise TypeError(f"a chunk's choices is a {type(choices).__name__}, not a list")
            object.__setattr__(
                self,
                "choices",
                tuple(part_of(ChunkChoice, c, "chunk") for c in choices),
            )
        if self.usage is not None:
            from myopto.response import Usage

            if not isinstance(self.usage, Usage):
                object.__setattr__(self, "usage", Usage(**fields_of(Usage, self.usage, "chunk.usage")))

    @property
    def text(self) -> str:
        """The text this chunk adds to the first choice ('' when it adds none)."""
        for choice in self.choices:
            if choice.index == 0:
                return choice.delta.content or ""
        return ""

    def to_dict(self) -> dict[str, Any]:
        """As stored in a cached response: the choices' deltas and the usage (no id, model or time:
        a replay takes the response's)."""
        data: dict[str, Any] = {"choices": [choice.to_dict() for choice in self.choices]}
        if self.usage is not None:
            data["usage"] = self.usage.to_dict()
        return data

    def model_dump(self) -> dict[str, Any]:
        """The chunk as an OpenAI chat-completion-chunk dict."""
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model, **self.to_dict()}


def chunks_of(value: Any) -> tuple[Chunk, ...]:
    """Stored chunks (dicts) or chunks, as a tuple of `Chunk`."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"a response's stream is a {type(value).__name__}, not a list of chunks")
    return tuple(part_of(Chunk, c, "stream[]") for c in value)


@dataclasses.dataclass
class _Building:
    content: list[str] = dataclasses.field(default_factory=list)
    reasoning: list[str] = dataclasses.field(default_factory=list)
    calls: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    finish_reason: str | None = None
    role: str = "assistant"
    logprobs: dict[str, list[TokenLogprob]] | None = None  # "content" / "refusal" tokens, once a chunk had any


class Assembler:
    """Adds the chunks of one streamed answer up, and makes the `Response` a plain call gives."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.usage: Any = None
        self._choices: dict[int, _Building] = {}

    def add(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        if chunk.usage is not None:
            self.usage = chunk.usage
        for part in chunk.choices:
            building = self._choices.setdefault(part.index, _Building())
            delta = part.delta
            if delta.role:
                building.role = delta.role
            if delta.content:
                building.content.append(delta.content)
            if delta.reasoning_content:
                building.reasoning.append(delta.reasoning_content)
            for call in delta.tool_calls or ():
                slot = building.calls.setdefault(
                    call.index, {"id": "", "type": "function", "name": "", "arguments": []}
                )
                slot["id"] = call.id or slot["id"]
                slot["type"] = call.type or slot["type"]
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"].append(call.function.arguments or "")
            if part.finish_reason is not None:
                building.finish_reason = part.finish_reason
            if part.logprobs is not None:
                tokens = building.logprobs = building.logprobs or {"content": [], "refusal": []}
                tokens["content"] += part.logprobs.content or ()
                tokens["refusal"] += part.logprobs.refusal or ()

    @property
    def text(self) -> str:
        """The first choice's text so far."""
        building = self._choices.get(0)
        return "".join(building.content) if building else ""

    def choices(self) -> tuple[Choice, ...]:
        built = []
        for index in sorted(self._choices) or [0]:
            building = self._choices.get(index, _Building())
            calls = tuple(
                ToolCall(id=slot["id"], type=slot["type"], function=Function(slot["name"], "".join(slot["arguments"])))
                for _, slot in sorted(building.calls.items())
            )
            message = Message(
                content="".join(building.content) if building.content or not calls else None,
                role=building.role,
                tool_calls=calls or None,
                reasoning_content="".join(building.reasoning) if building.reasoning else None,
            )
            logprobs = None
            if building.logprobs is not None:
                content, refusal = building.logprobs["content"], building.logprobs["refusal"]
                logprobs = ChoiceLogprobs(content=tuple(content) or None, refusal=tuple(refusal) or None)
            built.append(Choice(message=message, index=index, finish_reason=building.finish_reason, logprobs=logprobs))
        return tuple(built)


def replay_chunks(response: Any) -> Iterable[Chunk]:
    """The chunks of `response` (a `myopto.response.Response`) for a caller that asked to stream:
    the stored ones when it was streamed, else one chunk per choice and a last one with the usage;
    each stamped with the response's id, model and time."""
    stamp: Mapping[str, Any] = {"id": response.id, "model": response.model, "created": response.created}
    if response.stream:
        for chunk in response.stream:
            yield dataclasses.replace(chunk, **stamp)
        return
    for choice in response.choices:
        message = choice.message
        calls = tuple(
            ToolCallDelta(
                index=i, id=call.id, type=call.type, function=FunctionDelta(call.function.name, call.function.arguments)
            )
            for i, call in enumerate(message.tool_calls or ())
        )
        delta = Delta(
            role="assistant",
            content=message.content,
            reasoning_content=message.reasoning_content,
            tool_calls=calls or None,
        )
        part = ChunkChoice(
            delta=delta, index=choice.index, finish_reason=choice.finish_reason, logprobs=choice.logprobs
        )
        yield Chunk(choices=(part,), **stamp)
    yield Chunk(choices=(), usage=response.usage, **stamp)
