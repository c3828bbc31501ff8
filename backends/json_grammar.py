"""Grammar-constrained JSON decoding for local models, with xgrammar.

Everything a constrained answer depends on is settled before its first token is decoded
(`constrained_plan`): a schema that uses a keyword constrained decoding refuses, that no finite
value satisfies, or that the grammar compiler rejects is an `InvalidRequest`; so is one whose
shortest valid answer (built from the schema by `shortest_json`, then tokenized) needs more
tokens than the budget, and the message says how many it needs. The compiled grammar and that
shortest answer, checked against the grammar, make a `Plan`.

`JsonConstraint` is a transformers `LogitsProcessor` that lets each row of a batch produce only
tokens its grammar allows. An answer cut off by its budget is closed (`GrammarCache.close`)
with no more model calls: at each step the allowed token that closes the most (quotes,
brackets, braces), for at most `Plan.closing_steps` tokens; an answer that does not close
within them (a format whose string the closer cannot finish, say) becomes the schema's shortest
answer instead. Closing therefore always ends, in milliseconds. The answer may run a few
tokens past the budget; those are counted in usage.

The grammar enforces most of JSON Schema; the keywords it ignores (`uniqueItems`, `not`,
`if`/`then`/`else`, `dependentRequired`, ... see the README's table) are checked after decoding
by `StructuredOutput`, which validates every answer with jsonschema and re-asks. Standard
formats the grammar ignores are refused (`json_shortest.UNENFORCED_FORMATS`): validators treat
formats as annotations, so nothing would check them.

Why xgrammar: it compiles a JSON schema to a token-level automaton once per (tokenizer, schema),
masks a step in microseconds, and works with a tokenizer trained offline; outlines and
lm-format-enforcer pull larger dependency trees and were slower per step in our measurements.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from myopto.errors import BackendUnavailable, InvalidRequest

from .json_shortest import shortest_json as shortest_json

_CLOSERS = frozenset('"]}')
_DISCOVERY_STEPS = 512  # greedy closing from an empty answer, when the built shortest answer does not fit the grammar
_FREE_TEXT = r"root ::= [^{ \t\n\r] [^]*"  # plain text, told from JSON by its first character
_COMPILER_PREFIX = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*")  # "[03:39:36] /project/cpp/x.cc:5082: "


@dataclasses.dataclass(frozen=True)
class Plan:
    """One schema, ready to decode: its compiled grammar and the token ids of the shortest
    answer the grammar accepts (what an answer that cannot be closed becomes)."""

    grammar: Any
    shortest: tuple[int, ...]

    @property
    def closing_steps(self) -> int:
        """How many tokens the closer may add before it gives up and answers `shortest`."""
        return 32 + 2 * len(self.shortest)


class GrammarCache:
    """Compiled grammars per vocabulary and schema (compiling is the slow part).

    Built from a Hugging Face tokenizer (`for_tokenizer`) or from the byte string of every
    token (`for_pieces`, as a GGUF vocabulary decodes them); `encode` turns text into token ids."""

    def __init__(
        self, info: Any, vocab_size: int, decode: Callable[[int], str], encode: Callable[[str], list[int]]
    ) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        self.vocab_size = vocab_size
        self.info = info
        self.decode = decode
        self.encode = encode
        self.compiler = xgr.GrammarCompiler(info)
        self._lock = threading.Lock()
        self._plans: dict[str, Plan] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, vocab_size: int) -> GrammarCache:
        """For a Hugging Face tokenizer; `vocab_size` is the width of the model's logits."""
        import xgrammar as xgr

        def decode(token: int) -> str:
            try:
                return str(tokenizer.decode([token]))
            except Exception:  # noqa: BLE001 - ids past the tokenizer's vocabulary (padded embedding rows) fail
                return ""

        def encode(text: str) -> list[int]:
            return list(tokenizer.encode(text, add_special_tokens=False))

        return cls(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size), vocab_size, decode, encode)

    @classmethod
    def for_pieces(
        cls, pieces: Sequence[bytes], stop_ids: Sequence[int], encode: Callable[[str], list[int]]
    ) -> GrammarCache:
        """For a vocabulary given as each token's bytes (control tokens as b"")."""
        import xgrammar as xgr

        info = xgr.TokenizerInfo(list(pieces), xgr.VocabType.RAW, vocab_size=len(pieces), stop_token_ids=list(stop_ids))
        return cls(info, len(pieces), lambda token: pieces[token].decode("utf-8", "replace"), encode)

    def compile(self, schema: dict[str, Any] | None) -> Any:
        """The compiled grammar for a JSON schema, or for any JSON object when `schema` is None."""
        return self.plan(schema).grammar

    def plan(self, schema: dict[str, Any] | None, *, free_text: bool = False) -> Plan:
        """The grammar and shortest answer for `schema` (None: any JSON object), made once per
        schema. With `free_text` the grammar also admits plain text that does not start with `{`
        (a tool call or a text answer). `InvalidRequest` when the compiler rejects the schema or
        no answer closes."""
        key = "" if schema is None else json.dumps(schema)  # keeps the schema's property order
        with self._lock:
            plan = self._plans.get(f"text|{key}" if free_text else key)
            if plan is None:
                grammar = self._compile(key, schema)
                plan = Plan(grammar, self._shortest_answer(grammar, schema))
                if free_text:
                    plan = Plan(self._or_text(key, schema), plan.shortest)
                self._plans[f"text|{key}" if free_text else key] = plan
                self._closing_scores  # noqa: B018 - ranked here, in a caller's thread, not in a decoding loop
            return plan

    def _compile(self, key: str, schema: dict[str, Any] | None) -> Any:
        try:
            if schema is None:  # json_object: any object (the builtin JSON grammar also allows arrays)
                return self.compiler.compile_json_schema('{"type": "object"}', strict_mode=False)
            return self.compiler.compile_json_schema(key, strict_mode=True)
        except (RuntimeError, ValueError, TypeError) as error:
            raise _compiler_refusal(error) from error

    def _or_text(self, key: str, schema: dict[str, Any] | None) -> Any:
        """The schema's grammar or plain text: a first character other than `{` and whitespace
        chooses text, which may then end anywhere."""
        xgr = self.xgr
        json_grammar = xgr.Grammar.from_json_schema(key or '{"type": "object"}', strict_mode=schema is not None)
        either = xgr.Grammar.union(json_grammar, xgr.Grammar.from_ebnf(_FREE_TEXT))
        return self.compiler.compile_grammar(either)

    def _shortest_answer(self, grammar: Any, schema: dict[str, Any] | None) -> tuple[int, ...]:
        """The built shortest answer as tokens when the grammar takes it whole, else whatever the
        closer writes from an empty answer; `InvalidRequest` when neither closes."""
        tokens = self.encode(shortest_json(schema))
        matcher = self.xgr.GrammarMatcher(grammar)
        if all(matcher.accept_token(token) for token in tokens) and matcher.is_completed():
            return tuple(tokens)
        found = self._greedy(self.xgr.GrammarMatcher(grammar), _DISCOVERY_STEPS)
        if found is None:
            raise InvalidRequest(
                f"constrained=True cannot find an answer this JSON schema's grammar accepts within {_DISCOVERY_STEPS} "
                "tokens; simplify the schema or call without constrained=True"
            )
        return tuple(found)

    @functools.cached_property
    def token_strings(self) -> list[str]:
        """Each token id decoded on its own, for choosing closing tokens."""
        return [self.decode(index) for index in range(self.vocab_size)]

    @functools.cached_property
    def _closing_scores(self) -> Any:
        """Minus each token's closing rank: masked by the grammar, the best closer is the argmax."""
        import torch

        return torch.tensor([-_closing_rank(text) for text in self.token_strings], dtype=torch.float32)

    def close(self, matcher: Any, plan: Plan) -> tuple[list[int], bool]:
        """Tokens that close a cut-off answer into JSON the matcher's grammar accepts, chosen
        without the model, and False; or, when it does not close within `plan.closing_steps`
        tokens, the plan's shortest answer (which replaces the whole answer) and True."""
        added = self._greedy(matcher, plan.closing_steps)
        if added is not None:
            return added, False
        return list(plan.shortest), True

    def _greedy(self, matcher: Any, steps: int) -> list[int] | None:
        """At each step the allowed token that closes the most, until the grammar may end
        (the tokens added), or None when `steps` tokens did not get there."""
        import torch

        added: list[int] = []
        mask = self.xgr.allocate_token_bitmask(1, self.vocab_size)
        for _ in range(steps + 1):
            if matcher.is_terminated() or matcher.is_completed():
                return added
            if len(added) == steps:
                return None
            matcher.fill_next_token_bitmask(mask, 0)
            scores = self._closing_scores.clone()[None]
            self.xgr.apply_token_bitmask_inplace(scores, mask)
            best = int(torch.argmax(scores[0]))  # the first of equals: the lowest token id
            if scores[0, best] == float("-inf") or not matcher.accept_token(best):
                return None
            added.append(best)
        return None


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
                        raise BackendUnavailable(
                            "constrained decoding needs xgrammar: pip install 'myopto[local]'"
                        ) from error
        return self._cache


def constrained_plan(
    grammars: LazyGrammars,
    schema: dict[str, Any] | None,
    encode: Callable[[str], list[int]],
    budget: int,
    *,
    free_text: bool = False,
) -> Plan:
    """The plan for one constrained answer of at most `budget` tokens, or `InvalidRequest`.

    The cheap refusals come first, before the vocabulary is read or the grammar compiled: a
    refused keyword, no finite answer, or a shortest answer longer than the budget."""
    text = shortest_json(schema)
    _check_fits(text, len(encode(text)), budget)
    plan = grammars().plan(schema, free_text=free_text)
    _check_fits(text, len(plan.shortest), budget)
    return plan


def _compiler_refusal(error: Exception) -> InvalidRequest:
    """The grammar compiler's complaint as an `InvalidRequest`, without its C++ source line."""
    text = str(error).strip()
    message = _COMPILER_PREFIX.sub("", text).strip().splitlines()[0] if text else type(error).__name__
    hint = " (a pattern uses regex syntax the grammar cannot enforce)" if "regex" in message.lower() else ""
    return InvalidRequest(f"constrained=True cannot use this JSON schema: {message}{hint}")


def _check_fits(text: str, needed: int, budget: int) -> None:
    if needed > budget:
        shown = text if len(text) <= 80 else f"{text[:77]}..."
        raise InvalidRequest(
            f"with constrained=True every answer is closed JSON, and the shortest answer this schema allows "
            f"({shown}) takes {needed} tokens, more than the {budget} this call may write (its max_tokens, or what "
            f"the context has left): give max_tokens={needed} or more, or loosen the schema"
        )


class JsonConstraint:
    """A logits processor holding one grammar matcher per batch row (None: that row is free)."""

    def __init__(
        self, cache: GrammarCache, plans: Sequence[Plan | None], budgets: Sequence[int], prompt_length: int
    ) -> None:
        xgr = cache.xgr
        self.cache = cache
        self.xgr = xgr
        self.plans = list(plans)
        self.matchers = [xgr.GrammarMatcher(p.grammar) if p is not None else None for p in plans]
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
            if (
                generated > self.accepted[row]
                and not matcher.is_terminated()
                and self.accepted[row] < self.budgets[row]
            ):
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
        matcher, plan = self.matchers[row], self.plans[row]
        if matcher is None or plan is None:
            return tokens
        # Tokens the processor had not seen yet (the last sampled one is never fed back).
        for token in tokens[self.accepted[row] :]:
            if matcher.is_terminated() or token in stop_ids:
                break
            matcher.accept_token(token)
        tokens = [t for t in tokens if t not in stop_ids]
        closing, replaced = self.cache.close(matcher, plan)
        return closing if replaced else tokens + closing


def _closing_rank(text: str) -> int:
    """`_closing_cost` as one number (lower is better), for choosing among a whole vocabulary at once."""
    kind, length = _closing_cost(text)
    return kind * 1000 + max(-499, min(499, length))


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
