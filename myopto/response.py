"""`Response`: what a chain returns, readable like an OpenAI chat completion."""

from __future__ import annotations

import dataclasses
import time
import uuid
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


@dataclasses.dataclass(frozen=True, slots=True)
class Usage(_ItemAccess):
    """Token counts of one call, named as in the OpenAI API."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int | None, completion_tokens: int | None) -> Usage:
        prompt, completion = int(prompt_tokens or 0), int(completion_tokens or 0)
        return cls(prompt, completion, prompt + completion)

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Message(_ItemAccess):
    """The assistant message of a choice."""

    content: str | None
    role: str = "assistant"
    tool_calls: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class Choice(_ItemAccess):
    """One choice of a completion; myopto returns exactly one."""

    message: Message
    index: int = 0
    finish_reason: str | None = "stop"


def new_response_id() -> str:
    """A fresh id in the OpenAI style."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


@dataclasses.dataclass(frozen=True, slots=True)
class Response(_ItemAccess):
    """The answer to one call.

    `text` is the answer, `parsed` the JSON value when JSON was asked for, `cost` the USD cost
    (None when unknown), `cached` whether it came from the cache, `latency` seconds spent.
    `attempts` counts backend calls made for it (0 when served from the cache).
    `raw` is the provider's own object: never cached, never logged, not compared.
    It also reads like an OpenAI chat completion: `response.choices[0].message.content`,
    `response.usage.prompt_tokens`, `response["choices"][0]["message"]["content"]`.
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
    raw: Any = dataclasses.field(default=None, repr=False, compare=False)

    object = "chat.completion"

    @property
    def choices(self) -> list[Choice]:
        return [Choice(message=Message(content=self.text), finish_reason=self.finish_reason)]

    @property
    def content(self) -> str:
        """Same as `text`."""
        return self.text

    def replace(self, **changes: Any) -> Response:
        """A copy of this response with the given fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data for storage: everything but `raw`."""
        return {
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Response:
        """The inverse of `to_dict()`."""
        fields = dict(data)
        fields["usage"] = Usage(**fields.get("usage", {}))
        return cls(**fields)

    def model_dump(self) -> dict[str, Any]:
        """The response as an OpenAI chat-completion dict, for code written against the OpenAI SDK."""
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text},
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage.to_dict(),
        }
