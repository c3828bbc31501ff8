"""What every LocalSLM engine takes and gives: one `Generation` request in, one `Generated` answer out."""

from __future__ import annotations

import dataclasses
from typing import Any

from myopto.parsing import content_text

DEFAULT_MAX_NEW_TOKENS = 256


@dataclasses.dataclass(frozen=True)
class Generation:
    """One request for an engine: prompt token ids and how to decode."""

    prompt_ids: tuple[int, ...]
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: Any = None  # a JSON schema dict, or {} for any JSON object, or None: unconstrained
    constrained: bool = False
    free_text: bool = False  # constrained, and plain text not starting with "{" is an answer too (tool_choice="auto")

    def batch_key(self) -> tuple[Any, ...]:
        """Requests share a padded batch only when they decode the same way."""
        sampling = self.temperature > 0
        return (
            sampling,
            self.temperature if sampling else None,
            self.top_p if sampling else None,
            self.top_k if sampling else None,
            self.repetition_penalty,
            self.seed if sampling else None,
        )


@dataclasses.dataclass(frozen=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def text_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Chat messages with their content as plain text, as chat templates expect."""
    return [{"role": m["role"], "content": content_text(m.get("content"))} for m in messages]


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """The prompt for a model without a chat template: one "Role: text" paragraph per message."""
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"
