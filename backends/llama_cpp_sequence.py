"""One request while the llama.cpp engine decodes it: its slot in the context, its tokens so far,
how it chooses each next token, and its answer once it ends.

A token is chosen from the sequence's own logits: masked by its grammar when constrained, with
the repetition penalty applied, then greedy, or drawn with temperature / top-k / top-p from a
random generator of the request's own, so a seeded answer does not depend on what else ran
beside it. An answer its budget cut off is closed by the grammar's closer (no model calls).
A streamed request (`Generation.on_text`) hands each accepted token's text on as it comes
(`StreamedText`); what its callback raises ends the sequence.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable
from typing import Any

from .generation import Generated, Generation, StreamedText, cut_at_stop
from .json_grammar import GrammarCache, Plan


@dataclasses.dataclass(eq=False)
class RunningSequence:
    """One request while it runs: its slot in the context, its tokens so far, how it samples."""

    generation: Generation
    future: concurrent.futures.Future[Generated]
    budget: int
    seq_id: int = -1
    prefilled: int = 0  # prompt tokens already decoded
    tokens: list[int] = dataclasses.field(default_factory=list)
    text: str = ""  # decoded so far, kept only when stop strings are watched
    decoder: Any = None
    matcher: Any = None
    plan: Plan | None = None
    rng: Any = None
    streamed: StreamedText | None = None  # a streamed request's text so far

    @property
    def position(self) -> int:
        return len(self.generation.prompt_ids) + len(self.tokens)

    def choose(self, np: Any, logits: Any, grammars: Callable[[], GrammarCache], n_vocab: int) -> int:
        """The next token, from this step's logits (`grammars` is read only when constrained)."""
        g = self.generation
        if self.matcher is not None:
            import torch

            cache = grammars()
            mask = cache.xgr.allocate_token_bitmask(1, n_vocab)
            self.matcher.fill_next_token_bitmask(mask, 0)
            scores = torch.from_numpy(logits.copy())[None]
            cache.xgr.apply_token_bitmask_inplace(scores, mask)
            logits = scores[0].numpy()
        if g.repetition_penalty and g.repetition_penalty != 1.0:
            logits = logits.copy()
            seen = np.fromiter(set(g.prompt_ids) | set(self.tokens), dtype=np.int64)
            values = logits[seen]
            logits[seen] = np.where(values > 0, values / g.repetition_penalty, values * g.repetition_penalty)
        if self.rng is None:
            return int(np.argmax(logits))
        return _sample(np, logits, g.temperature, g.top_k, g.top_p, self.rng)

    def take(self, token: int, stop_ids: set[int], piece: Callable[[int], bytes]) -> str | None:
        """Add the chosen token; the finish reason ("stop", "length") when the sequence ends here,
        else None. An end-of-turn token ends it without being added."""
        g = self.generation
        if token in stop_ids:
            return "stop"
        self.tokens.append(token)
        if self.matcher is not None:
            self.matcher.accept_token(token)
        finish = None
        if self.decoder is not None:
            fresh = self.decoder.decode(piece(token))
            self.text += fresh
            longest = max(len(s) for s in g.stop)
            if any(s in self.text[-(longest + len(fresh)) :] for s in g.stop):
                finish = "stop"
        if self.streamed is not None:
            self.streamed.add_token(token)  # StreamClosed when its caller stopped reading
        if finish is None and len(self.tokens) >= self.budget:
            finish = "length"
        return finish

    def answer(
        self, finish: str, grammars: Callable[[], GrammarCache], detokenize: Callable[[list[int]], str]
    ) -> Generated:
        """The finished answer: closed into valid JSON when constrained and cut off, cut at its
        first stop string otherwise."""
        g, tokens = self.generation, self.tokens
        if self.matcher is not None and self.plan is not None and not self.matcher.is_terminated():
            closing, replaced = grammars().close(self.matcher, self.plan)
            tokens, finish = (closing if replaced else tokens + closing), ("stop" if closing else finish)
        text = detokenize(tokens)
        if g.stop and not g.constrained:
            text, stopped = cut_at_stop(text, g.stop)
            finish = "stop" if stopped else finish
        return Generated(text, len(g.prompt_ids), len(tokens), finish)


def _sample(np: Any, logits: Any, temperature: float, top_k: int | None, top_p: float | None, rng: Any) -> int:
    """A token drawn from softmax(logits / temperature), within top-k and the top-p nucleus."""
    scaled = logits.astype(np.float64) / temperature
    if top_k and 0 < top_k < scaled.size:
        kth = np.partition(scaled, -top_k)[-top_k]
        scaled[scaled < kth] = -np.inf
    scaled -= scaled.max()
    probs = np.exp(scaled)
    probs /= probs.sum()
    if top_p is not None and 0 < top_p < 1:
        order = np.argsort(-probs)
        keep = np.cumsum(probs[order]) - probs[order] < top_p  # the smallest set reaching top_p
        trimmed = np.zeros_like(probs)
        trimmed[order[keep]] = probs[order[keep]]
        probs = trimmed / trimmed.sum()
    return int(rng.choice(probs.size, p=probs))
