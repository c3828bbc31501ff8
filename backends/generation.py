"""What every LocalSLM engine takes and gives: one `Generation` request in, one `Generated` answer
out, and `StreamedText`, how an engine streams a generation's text as its tokens are decoded."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
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
    # A streamed generation: called (in the engine's thread) with each newly decoded piece of
    # text (`StreamedText`); what it raises ends the generation with that error.
    on_text: Callable[[str], None] | None = dataclasses.field(default=None, compare=False, repr=False)

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
    """One engine's answer: its text, the tokens of prompt and answer, and why it ended."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StreamedText:
    """A generation's text as its tokens are decoded, handed to `on_text` piece by piece.

    `add_token` decodes incrementally: the text of a short window of the latest tokens, minus the
    text of the window without the newest, as the whole answer decodes (a tokenizer that drops the
    first token's leading space drops it in both), and nothing while a character is incomplete
    (the text ends with U+FFFD). `add_text` takes text an engine decoded itself. Text that may be
    the beginning of a stop string is held back until it is not; a stop string ends the stream
    (`stopped`) and nothing from it on is sent. Text held back at the end is not sent here: the
    caller compares the final answer with `sent` and sends the rest.
    """

    def __init__(
        self,
        on_text: Callable[[str], None],
        stop: tuple[str, ...] = (),
        decode: Callable[[list[int]], str] | None = None,
    ) -> None:
        self.on_text = on_text
        self.stop = stop
        self.decode = decode
        self.tokens: list[int] = []
        self._window = 0  # where the decoding window starts
        self._settled = 0  # tokens whose text is in `text`
        self.text = ""
        self.sent = 0  # characters of `text` handed to `on_text`
        self.stopped = False

    def add_token(self, token: int) -> None:
        """One more accepted token; its text (once whole) streams."""
        assert self.decode is not None  # an engine that streams tokens gives its decoder
        self.tokens.append(token)
        if self.stopped:
            return
        before = self.decode(self.tokens[self._window : self._settled]) if self._settled > self._window else ""
        after = self.decode(self.tokens[self._window :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return  # an incomplete character (or a token with no text): wait for the next one
        self._window, self._settled = self._settled, len(self.tokens)
        self.add_text(after[len(before) :])

    def add_text(self, fresh: str) -> None:
        """More decoded text: what cannot belong to a stop string is sent now."""
        if self.stopped or not fresh:
            return
        self.text += fresh
        end = len(self.text)
        if self.stop:
            longest = max(len(s) for s in self.stop)
            start = max(0, self.sent - longest)
            found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if found:
                end, self.stopped = min(found), True
            else:  # hold back a tail that may begin a stop string
                tail = self.text[max(self.sent, end - longest + 1) :]
                held = max(
                    (n for n in range(1, len(tail) + 1) for s in self.stop if s.startswith(tail[-n:])), default=0
                )
                end -= held
        if end > self.sent:
            piece, self.sent = self.text[self.sent : end], end
            self.on_text(piece)

    @property
    def sent_text(self) -> str:
        return self.text[: self.sent]


def text_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Chat messages with their content as plain text, as chat templates expect."""
    return [{"role": m["role"], "content": content_text(m.get("content"))} for m in messages]


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """The prompt for a model without a chat template: one "Role: text" paragraph per message."""
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"
