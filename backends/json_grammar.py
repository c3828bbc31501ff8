"""Grammar-constrained JSON decoding for local models, with xgrammar.

`JsonConstraint` is a transformers `LogitsProcessor` that lets each row of a batch produce only
tokens its JSON schema (or any JSON, for `json_object`) allows. A constrained answer cut off by
the token budget would still be invalid JSON, so `finish()` closes it: with no more model calls,
it walks the grammar choosing the allowed token that closes the most (quotes, brackets, braces)
until the grammar accepts the end. The answer may run a few tokens past the budget; those are
counted in usage.

Why xgrammar: it compiles a JSON schema to a token-level automaton once per (tokenizer, schema),
masks a step in microseconds, and works with a tokenizer trained offline; outlines and
lm-format-enforcer pull larger dependency trees and were slower per step in our measurements.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from myopto.errors import BackendUnavailable

_CLOSERS = frozenset('"]}')
_MAX_CLOSING_STEPS = 512


class GrammarCache:
    """Compiled grammars per vocabulary and schema (compiling is the slow part).

    Built from a Hugging Face tokenizer (`for_tokenizer`) or from the byte string of every
    token (`for_pieces`, as a GGUF vocabulary decodes them)."""

    def __init__(self, info: Any, vocab_size: int, decode: Callable[[int], str]) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        self.vocab_size = vocab_size
        self.info = info
        self.decode = decode
        self.compiler = xgr.GrammarCompiler(info)
        self._lock = threading.Lock()
        self._compiled: dict[str, Any] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, vocab_size: int) -> GrammarCache:
        """For a Hugging Face tokenizer; `vocab_size` is the width of the model's logits."""
        import xgrammar as xgr

        def decode(token: int) -> str:
            try:
                return str(tokenizer.decode([token]))
            except Exception:  # ids past the tokenizer's vocabulary (padded embedding rows)
                return ""

        return cls(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size), vocab_size, decode)

    @classmethod
    def for_pieces(cls, pieces: Sequence[bytes], stop_ids: Sequence[int]) -> GrammarCache:
        """For a vocabulary given as each token's bytes (control tokens as b"")."""
        import xgrammar as xgr

        info = xgr.TokenizerInfo(list(pieces), xgr.VocabType.RAW, vocab_size=len(pieces), stop_token_ids=list(stop_ids))
        return cls(info, len(pieces), lambda token: pieces[token].decode("utf-8", "replace"))

    def compile(self, schema: dict[str, Any] | None) -> Any:
        """The compiled grammar for a JSON schema, or for any JSON object when `schema` is None."""
        key = "" if schema is None else json.dumps(schema)  # keeps the schema's property order
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is None:
                if schema is None:  # json_object: any object (the builtin JSON grammar also allows arrays)
                    compiled = self.compiler.compile_json_schema('{"type": "object"}', strict_mode=False)
                else:
                    compiled = self.compiler.compile_json_schema(key, strict_mode=True)
                self._compiled[key] = compiled
            return compiled

    @functools.cached_property
    def token_strings(self) -> list[str]:
        """Each token id decoded on its own, for choosing closing tokens."""
        return [self.decode(index) for index in range(self.vocab_size)]

    def close(self, matcher: Any, stop_ids: set[int]) -> list[int]:
        """Tokens that close a cut-off answer into JSON the matcher's grammar accepts, chosen
        without the model: at each step the allowed token that closes the most."""
        import torch

        added: list[int] = []
        strings = self.token_strings
        mask = self.xgr.allocate_token_bitmask(1, self.vocab_size)
        for _ in range(_MAX_CLOSING_STEPS):
            if matcher.is_terminated():
                return added
            matcher.fill_next_token_bitmask(mask, 0)
            logits = torch.zeros(1, self.vocab_size)
            self.xgr.apply_token_bitmask_inplace(logits, mask)
            allowed = torch.nonzero(logits[0] != float("-inf")).flatten().tolist()
            if any(token in stop_ids for token in allowed):
                return added
            best = min(allowed, key=lambda token: _closing_cost(strings[token]))
            matcher.accept_token(best)
            added.append(best)
        raise RuntimeError("could not close the constrained JSON answer within 512 tokens")


class LazyGrammars:
    """A `GrammarCache` built on the first constrained call (once, even under concurrent first
    calls): building one reads the whole vocabulary, which unconstrained use never needs."""

    def __init__(self, build: Callable[[], GrammarCache]) -> None:
        self._build = build
        self._cache: GrammarCache | None = None
        self._lock = threading.Lock()

    def __call__(self) -> GrammarCache:
        if self._cache is None:
            with self._lock:
                if self._cache is None:
                    try:
                        self._cache = self._build()
                    except ImportError as error:
                        raise BackendUnavailable("constrained decoding needs xgrammar: pip install 'myopto[local]'") from error
        return self._cache


class JsonConstraint:
    """A logits processor holding one grammar matcher per batch row (None: that row is free)."""

    def __init__(self, cache: GrammarCache, grammars: Sequence[Any | None], budgets: Sequence[int], prompt_length: int) -> None:
        xgr = cache.xgr
        self.cache = cache
        self.xgr = xgr
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.budgets = list(budgets)
        self.prompt_length = prompt_length
        self.accepted = [0] * len(self.matchers)
        self.bitmask = xgr.allocate_token_bitmask(len(self.matchers), cache.vocab_size)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        generated = input_ids.shape[1] - self.prompt_length
        for row, matcher in enumerate(self.matchers):
            if matcher is None:
                self.bitmask[row].fill_(-1)
                continue
            if generated > self.accepted[row] and not matcher.is_terminated() and self.accepted[row] < self.budgets[row]:
                matcher.accept_token(int(input_ids[row, -1]))
                self.accepted[row] += 1
            if matcher.is_terminated() or self.accepted[row] >= self.budgets[row]:
                self.bitmask[row].fill_(-1)  # row is done: its logits no longer matter
            else:
                matcher.fill_next_token_bitmask(self.bitmask, row)
        if scores.device.type in ("cpu", "cuda"):
            self.xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
            return scores
        on_cpu = scores.to("cpu")  # xgrammar masks on CPU and CUDA only (e.g. not on mps)
        self.xgr.apply_token_bitmask_inplace(on_cpu, self.bitmask)
        return on_cpu.to(scores.device)

    def finish(self, row: int, tokens: list[int], stop_ids: set[int]) -> list[int]:
        """The row's tokens, closed into valid JSON when the budget cut them off."""
        matcher = self.matchers[row]
        if matcher is None:
            return tokens
        # Tokens the processor had not seen yet (the last sampled one is never fed back).
        for token in tokens[self.accepted[row] :]:
            if matcher.is_terminated() or token in stop_ids:
                break
            matcher.accept_token(token)
        tokens = [t for t in tokens if t not in stop_ids]
        return tokens + self.cache.close(matcher, stop_ids)


def _closing_cost(text: str) -> tuple[int, int]:
    """Lower is better: end the open string, close what is open, move on, then the shortest content.

    A quote first: inside a string it is the only way out (a `]` there is just text), and
    outside one the grammar allows a quote only where a string must start anyway. Content
    (digits, letters) never ends a value by itself, so a separator or closer always beats it
    once the grammar allows one; whitespace is a last resort.
    """
    if not text or text.isspace():
        return (6, 0)
    if text[0] == '"' and all(c in _CLOSERS for c in text):
        return (0, -len(text))
    if all(c in "]}" for c in text):
        return (1, -len(text))
    if text[0] == '"' and all(c in _CLOSERS or c == ":" for c in text):
        return (2, len(text))
    if all(c in _CLOSERS or c in ",:" for c in text):
        return (3, len(text))  # a comma starts another item: only when nothing closes
    opens = sum(text.count(c) for c in "[{-.eE")
    return (4 + min(opens, 1), len(text))
