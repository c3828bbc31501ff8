"""`Response`: what a chain returns, readable like an OpenAI chat completion.

Everything the provider said that a caller can act on is data of the response, not of `raw`:
every choice (`n`) with its text, tool calls, reasoning and logprobs and its own finish reason,
and usage with its token classes (cached prompt tokens, reasoning tokens). `to_dict()` holds all
of it as plain JSON (what the cache stores) and `from_dict()` rebuilds an equal response, also
from records written before these fields existed. The parts are immutable (tuples, frozen
dataclasses): one cached response object serves every later hit in a process, so no caller can
change what the next one gets. `Usage` and its details are here; a choice and what it holds
(message, tool calls, logprobs) are `myopto.choice`.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping
from typing import Any

# The parts of a choice, read from here by `backends/`, `middleware/`, `myopto.stores` and the
# tests since before they had a module of their own.
from myopto.choice import Choice as Choice
from myopto.choice import ChoiceLogprobs as ChoiceLogprobs
from myopto.choice import Function as Function
from myopto.choice import Message as Message
from myopto.choice import TokenLogprob as TokenLogprob
from myopto.choice import ToolCall as ToolCall
from myopto.choice import TopLogprob as TopLogprob
from myopto.choice import choices_of as choices_of
from myopto.chunks import Chunk, chunks_of
from myopto.frozen import changed
from myopto.openai_objects import ItemAccess, fields_of


def _count(value: Any, where: str) -> int:
    if type(value) is not int or value < 0:  # not a bool, not a float
        raise ValueError(f"{where} is {value!r}, not a whole number of tokens")
    return value


# -- usage ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PromptTokensDetails(ItemAccess):
    """What the prompt tokens hold: `cached_tokens` were served from the provider's prompt cache
    (billed at its cache-read price)."""

    cached_tokens: int = 0

    def __post_init__(self) -> None:
        _count(self.cached_tokens, "prompt_tokens_details.cached_tokens")


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionTokensDetails(ItemAccess):
    """What the completion tokens hold: `reasoning_tokens` the model spent thinking (part of
    `completion_tokens`, as OpenAI counts them)."""

    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        _count(self.reasoning_tokens, "completion_tokens_details.reasoning_tokens")


_NO_CACHED = PromptTokensDetails()
_NO_REASONING = CompletionTokensDetails()


@dataclasses.dataclass(frozen=True, slots=True)
class Usage(ItemAccess):
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
        prompt: Any = self.prompt_tokens_details  # a stored record gives dicts
        completion: Any = self.completion_tokens_details
        if not isinstance(prompt, PromptTokensDetails):
            prompt = PromptTokensDetails(**fields_of(PromptTokensDetails, prompt, "usage.prompt_tokens_details"))
            object.__setattr__(self, "prompt_tokens_details", prompt)
        if not isinstance(completion, CompletionTokensDetails):
            completion = CompletionTokensDetails(
                **fields_of(CompletionTokensDetails, completion, "usage.completion_tokens_details")
            )
            object.__setattr__(self, "completion_tokens_details", completion)

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


# -- the response ---------------------------------------------------------------------------


def new_response_id() -> str:
    """A fresh id in the OpenAI style."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


@dataclasses.dataclass(frozen=True, slots=True)
class Response(ItemAccess):
    """The answer to one call.

    `text` is the answer (the first choice's content, '' when it has none), `parsed` the JSON
    value when JSON was asked for, `cost` the USD cost of all choices (None when unknown),
    `cached` whether it came from the cache, `latency` seconds spent, `finish_reason` the first
    choice's. `attempts` counts backend calls made for it (0 when served from the cache).
    `choices` holds every choice (more than one when `n` was asked), each with its message
    (content, tool calls, reasoning, parsed value), finish reason and logprobs; left out, it is
    the one choice `text` and `finish_reason` describe.
    `stream` holds the chunks of a streamed answer (cached with it, so a hit streams them again;
    not compared). `raw` is the provider's own object: never cached, never logged, not compared.
    `deployment` names the deployment of the role that answered (None for a role with one model);
    it is stored with the answer, so a cache hit or a replay says which one answered first.
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
    stream: tuple[Chunk, ...] = dataclasses.field(default=(), repr=False, compare=False)
    raw: Any = dataclasses.field(default=None, repr=False, compare=False)
    deployment: str | None = None

    object = "chat.completion"

    def __post_init__(self) -> None:
        usage: Any = self.usage
        if not isinstance(usage, Usage):  # a stored record's dict
            object.__setattr__(self, "usage", Usage(**fields_of(Usage, usage, "usage")))
        if not self.choices:
            message = Message(content=self.text, parsed=self.parsed)
            object.__setattr__(self, "choices", (Choice(message=message, finish_reason=self.finish_reason),))
        elif type(self.choices) is not tuple or not all(type(choice) is Choice for choice in self.choices):
            object.__setattr__(self, "choices", choices_of(self.choices))
        if self.stream and (type(self.stream) is not tuple or not all(type(c) is Chunk for c in self.stream)):
            object.__setattr__(self, "stream", chunks_of(self.stream))
        if self.deployment is not None and type(self.deployment) is not str:  # a damaged stored record
            raise ValueError(f"deployment is {self.deployment!r}, not a deployment's name")

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
        return changed(self, changes)

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
        if self.stream:  # a streamed answer: its chunks, so that a hit streams them again
            data["stream"] = [chunk.to_dict() for chunk in self.stream]
        if self.deployment is not None:  # a role with deployments: which one answered
            data["deployment"] = self.deployment
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Response:
        """The inverse of `to_dict()`; also reads records written before `choices` and the
        usage details existed."""
        return cls(**fields_of(cls, data, "response"))

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
