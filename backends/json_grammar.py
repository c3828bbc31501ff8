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
formats the grammar ignores are refused (`UNENFORCED_FORMATS`): validators treat formats as
annotations, so nothing would check them.

Why xgrammar: it compiles a JSON schema to a token-level automaton once per (tokenizer, schema),
masks a step in microseconds, and works with a tokenizer trained offline; outlines and
lm-format-enforcer pull larger dependency trees and were slower per step in our measurements.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from myopto.errors import BackendUnavailable, InvalidRequest
from myopto.output_format import MISSING, resolve_pointer

_CLOSERS = frozenset('"]}')
_DISCOVERY_STEPS = 512  # greedy closing from an empty answer, when the built shortest answer does not fit the grammar
_MAX_SCHEMA_VISITS = 20_000  # subschemas visited while building the shortest answer

# Standard formats (JSON Schema 2020-12) the grammar ignores. Validators check formats only when
# asked to, so an answer breaking one would come back as valid: constrained=True refuses them.
UNENFORCED_FORMATS = frozenset({"iri", "iri-reference", "idn-email", "idn-hostname", "regex"})
# A short value of each format the grammar enforces (each accepted by xgrammar's rule for it).
_FORMAT_EXAMPLES = {
    "email": "a@a",
    "date": "2000-01-01",
    "time": "00:00:00Z",
    "date-time": "2000-01-01T00:00:00Z",
    "duration": "P0D",
    "uri": "a:",
    "uri-reference": "",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "0.0.0.0",
    "ipv6": "::",
    "hostname": "a",
    "uri-template": "",
    "json-pointer": "",
    "relative-json-pointer": "0",
}
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
            except Exception:  # ids past the tokenizer's vocabulary (padded embedding rows)
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
            f"with constrained=True every answer is closed JSON, and the shortest answer this schema allows ({shown}) "
            f"takes {needed} tokens, more than the {budget} this call may write (its max_tokens, or what the context has "
            f"left): give max_tokens={needed} or more, or loosen the schema"
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


# -- the shortest answer a schema allows ---------------------------------------------------------


def shortest_json(schema: Mapping[str, Any] | None) -> str:
    """The shortest JSON text (compact) of a value that `schema` allows, as the constrained
    grammar reads it (properties in their order, only the declared ones); None means any object.

    `InvalidRequest` when the schema uses a format constrained decoding refuses, or when no
    finite value satisfies it (an empty `enum`, `minItems` over `maxItems`, a required `$ref`
    back to itself with no way out...), saying where. Pure Python: no grammar is compiled."""
    if schema is None:
        return "{}"
    return _shortest_text(json.dumps(schema))


@functools.lru_cache(maxsize=512)
def _shortest_text(text: str) -> str:
    schema = json.loads(text)
    _refuse_unenforced(schema, "")
    try:
        value = _Shortest(schema).value(schema, "")
    except _NoValue as problem:
        message = f"constrained decoding can give no valid answer for this JSON schema {problem}; fix the schema"
        raise InvalidRequest(message) from None
    return _compact(value)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "example"})


def _refuse_unenforced(node: Any, where: str) -> None:
    """`InvalidRequest` for a standard format anywhere in the schema that the grammar ignores."""
    if isinstance(node, Mapping):
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in UNENFORCED_FORMATS:
            raise InvalidRequest(
                f"constrained=True cannot enforce format {fmt!r} (at {where or '(root)'}): the grammar ignores it and "
                "answers are not checked against formats; drop it, describe the string with a pattern, or call without "
                "constrained=True"
            )
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                _refuse_unenforced(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _refuse_unenforced(item, f"{where}/{index}")


class _NoValue(Exception):
    """No finite value satisfies the subschema at `where`."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"at {where or '(root)'}: {why}")


_OBJECT_WORDS = (
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "propertyNames",
)
_ARRAY_WORDS = ("items", "prefixItems", "minItems", "maxItems", "contains")
_STRING_WORDS = ("minLength", "maxLength", "pattern", "format")
_NUMBER_WORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


class _Shortest:
    """Builds the shortest value of a schema, following `$ref`s (a reference met again while it
    is being expanded is a branch with no end)."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.expanding: list[str] = ["#"]  # the root is being expanded
        self.visits = 0

    def value(self, node: Any, where: str) -> Any:
        self.visits += 1
        if self.visits > _MAX_SCHEMA_VISITS:
            raise InvalidRequest(
                "this JSON schema is too large or too deeply referenced for constrained=True to bound its answers"
            )
        if node is False:
            raise _NoValue(where, "the schema `false` allows no value")
        if not isinstance(node, Mapping):
            return 0
        reference = node.get("$ref")
        if isinstance(reference, str):
            return self._reference(reference, where)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return self._enum(node, where)
        for keyword in ("anyOf", "oneOf"):
            branches = node.get(keyword)
            if isinstance(branches, list):
                return self._shortest_of(
                    [(b, f"{where}/{keyword}/{i}") for i, b in enumerate(branches)], where, keyword
                )
        every = node.get("allOf")
        if isinstance(every, list) and len(every) == 1:  # the grammar follows a single allOf, and ignores several
            return self.value(every[0], f"{where}/allOf/0")
        candidates, problem = [], None
        for kind in _types(node):
            try:
                candidates.append(self._typed(kind, node, where))
            except _NoValue as error:
                problem = error
        if not candidates:
            raise problem or _NoValue(where, "no type is allowed")
        return min(candidates, key=lambda v: len(_compact(v)))

    def _reference(self, reference: str, where: str) -> Any:
        if reference in self.expanding:
            raise _NoValue(
                where, f"$ref {reference!r} leads back to itself with no way to end, so every value would be infinite"
            )
        target = _resolve(self.root, reference)
        if target is _MISSING:
            raise _NoValue(where, f"$ref {reference!r} points to nothing in the schema")
        self.expanding.append(reference)
        try:
            return self.value(target, f"{where}/$ref")
        finally:
            self.expanding.pop()

    def _enum(self, node: Mapping[str, Any], where: str) -> Any:
        values = node["enum"]
        if not isinstance(values, list) or not values:
            raise _NoValue(where, "enum lists no value")
        kinds = node.get("type")
        kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else None
        fitting = [v for v in values if kinds is None or any(_is_type(v, kind) for kind in kinds)]
        if not fitting:
            raise _NoValue(where, f"none of enum's values is of type {node.get('type')}")
        return min(fitting, key=lambda v: len(_compact(v)))

    def _shortest_of(self, branches: list[tuple[Any, str]], where: str, keyword: str) -> Any:
        found, problems = [], []
        for node, path in branches:
            try:
                found.append(self.value(node, path))
            except _NoValue as error:
                problems.append(error)
        if found:
            return min(found, key=lambda v: len(_compact(v)))
        if problems:
            raise problems[0]
        raise _NoValue(where, f"{keyword} lists no schema")

    def _typed(self, kind: str, node: Mapping[str, Any], where: str) -> Any:
        if kind == "null":
            return None
        if kind == "boolean":
            return False
        if kind == "integer":
            return _integer(node, where)
        if kind == "number":
            return _number(node, where)
        if kind == "string":
            return _string(node, where)
        if kind == "array":
            return self._array(node, where)
        if kind == "object":
            return self._object(node, where)
        return 0  # any value

    def _array(self, node: Mapping[str, Any], where: str) -> list[Any]:
        prefix = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
        items = node.get("items")
        low, high = _whole(node.get("minItems"), 0), _whole(node.get("maxItems"), None)
        if high is not None and low > high:
            raise _NoValue(where, f"minItems {low} is greater than maxItems {high}")
        values = [self.value(prefix[i], f"{where}/prefixItems/{i}") for i in range(min(low, len(prefix)))]
        rest = low - len(values)
        if rest > 0:
            if items is False or (items is None and prefix):  # strict: only declared items
                raise _NoValue(where, f"minItems {low} but only the {len(prefix)} items of prefixItems are allowed")
            item = 0 if items is None else self.value(items, f"{where}/items")
            values.extend([item] * rest)
        return values

    def _object(self, node: Mapping[str, Any], where: str) -> dict[str, Any]:
        declared = node.get("properties") if isinstance(node.get("properties"), Mapping) else {}
        required = [name for name in node.get("required") or () if isinstance(name, str)]
        extra = node.get("additionalProperties")
        for name in required:
            if name not in declared and not isinstance(extra, Mapping):
                raise _NoValue(
                    where,
                    f"required property {name!r} is not in properties, and with constrained=True an "
                    "object holds only the properties it declares",
                )
        chosen = {
            name: self.value(declared[name], f"{where}/properties/{name}") for name in declared if name in required
        }
        low, high = _whole(node.get("minProperties"), 0), _whole(node.get("maxProperties"), None)
        if high is not None and len(set(required)) > high:
            raise _NoValue(where, f"{len(set(required))} properties are required and maxProperties is {high}")
        if len(chosen) < low:
            optional = []
            for name in declared:
                if name not in chosen:
                    try:
                        optional.append((name, self.value(declared[name], f"{where}/properties/{name}")))
                    except _NoValue:
                        pass
            optional.sort(key=lambda pair: len(_compact(pair[1])))
            chosen.update(optional[: low - len(chosen)])
            if len(chosen) < low and not isinstance(extra, Mapping):
                raise _NoValue(where, f"minProperties {low} but only {len(chosen)} properties can be given")
        value = {
            name: chosen[name] for name in declared if name in chosen
        }  # in the declared order, as the grammar writes them
        for name in required:
            if name not in value:
                value[name] = self.value(extra, f"{where}/additionalProperties")
        return value


_MISSING = MISSING  # a reference that names nothing


def _resolve(root: Any, reference: str) -> Any:
    """The subschema `reference` names in `root` (a JSON pointer or an anchor), or `_MISSING`."""
    from urllib.parse import unquote

    if not reference.startswith("#"):
        return _MISSING
    fragment = unquote(reference[1:])
    if not fragment:
        return root
    if not fragment.startswith("/"):
        return _anchor(root, fragment)
    return resolve_pointer(root, fragment)


def _anchor(node: Any, name: str) -> Any:
    if isinstance(node, Mapping):
        if node.get("$anchor") == name or node.get("$dynamicAnchor") == name:
            return node
        children = [v for k, v in node.items() if k not in _DATA_KEYWORDS]
    elif isinstance(node, list):
        children = node
    else:
        return _MISSING
    for child in children:
        found = _anchor(child, name)
        if found is not _MISSING:
            return found
    return _MISSING


def _types(node: Mapping[str, Any]) -> list[str]:
    """The types a schema allows: its `type`, else what its keywords imply, else any."""
    kind = node.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list) and kind:
        return [k for k in kind if isinstance(k, str)]
    for words, implied in (
        (_OBJECT_WORDS, "object"),
        (_ARRAY_WORDS, "array"),
        (_STRING_WORDS, "string"),
        (_NUMBER_WORDS, "number"),
    ):
        if any(word in node for word in words):
            return [implied]
    return ["any"]


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    types = {"string": str, "boolean": bool, "null": type(None), "object": dict, "array": list}
    return isinstance(value, types.get(kind, object))


def _whole(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _number_bounds(node: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low is exclusive, high, high is exclusive), draft 4's boolean exclusives included."""

    def number(key: str) -> float | None:
        value = node.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    low, high = number("minimum"), number("maximum")
    low_open, high_open = node.get("exclusiveMinimum") is True, node.get("exclusiveMaximum") is True
    if number("exclusiveMinimum") is not None and (low is None or number("exclusiveMinimum") >= low):
        low, low_open = number("exclusiveMinimum"), True
    if number("exclusiveMaximum") is not None and (high is None or number("exclusiveMaximum") <= high):
        high, high_open = number("exclusiveMaximum"), True
    return low, low_open, high, high_open


def _within(value: float, low: float | None, low_open: bool, high: float | None, high_open: bool) -> bool:
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return not (high is not None and (value > high or (high_open and value == high)))


def _integer(node: Mapping[str, Any], where: str) -> int:
    low, low_open, high, high_open = _number_bounds(node)
    first = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
    last = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
    if first is not None and last is not None and first > last:
        raise _NoValue(where, f"no integer lies between {low} and {high}")
    step = node.get("multipleOf")
    step = step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else 1
    if (first is None or first <= 0) and (last is None or last >= 0):
        return 0
    if first is not None and first > 0:
        value = math.ceil(first / step) * step
    else:  # every allowed integer is negative
        value = math.floor((last or 0) / step) * step
    if (first is not None and value < first) or (last is not None and value > last):
        raise _NoValue(where, f"no multiple of {step} lies between {low} and {high}")
    return value


def _number(node: Mapping[str, Any], where: str) -> int | float:
    low, low_open, high, high_open = _number_bounds(node)
    candidates: list[float] = [0]
    for bound in (low, high):
        if bound is not None:
            candidates += [bound, math.floor(bound) + 1, math.ceil(bound) - 1]
    if low is not None and high is not None:
        candidates.append((low + high) / 2)
    fitting = [c for c in candidates if _within(c, low, low_open, high, high_open)]
    if not fitting:
        raise _NoValue(where, f"no number lies between {low} and {high}")
    step = node.get("multipleOf")
    if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
        fitting = [c for c in fitting if math.isclose(c / step, round(c / step))] or fitting  # the grammar ignores it
    best = min(fitting, key=lambda c: len(_compact(int(c) if float(c).is_integer() else c)))
    return int(best) if float(best).is_integer() else best


def _string(node: Mapping[str, Any], where: str) -> str:
    pattern = node.get("pattern")
    if isinstance(pattern, str):  # the grammar ignores minLength / maxLength beside a pattern
        return _shortest_match(pattern)
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMAT_EXAMPLES:
        return _FORMAT_EXAMPLES[fmt]
    low, high = _whole(node.get("minLength"), 0), _whole(node.get("maxLength"), None)
    if high is not None and low > high:
        raise _NoValue(where, f"minLength {low} is greater than maxLength {high}")
    return "a" * low


def _sre() -> Any:
    """Python's own regex parser (its node kinds are attributes of the module)."""
    try:
        import re._parser as parser  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10
        import sre_parse as parser  # type: ignore[no-redef]
    return parser


def _shortest_match(pattern: str) -> str:
    """A shortest string the whole of which matches `pattern` (lookarounds ignored, as the grammar does)."""
    try:
        return _regex_text(_sre().parse(pattern))
    except (re.error, RecursionError, ValueError, TypeError):
        return ""  # the grammar compiler says what is wrong with it


def _regex_text(items: Any) -> str:
    c = _sre()
    out = []
    for op, arg in items:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append("a" if arg != ord("a") else "b")
        elif op is c.ANY:
            out.append("a")
        elif op is c.IN:
            out.append(_class_member(arg))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)):
            low, _, sub = arg
            out.append(_regex_text(sub) * low)
        elif op is c.SUBPATTERN:
            out.append(_regex_text(arg[-1]))
        elif op is getattr(c, "ATOMIC_GROUP", None):
            out.append(_regex_text(arg))
        elif op is c.BRANCH:
            out.append(min((_regex_text(alternative) for alternative in arg[1]), key=len))
        elif op is c.CATEGORY:
            out.append(_category_member(arg))
        # AT (anchors), ASSERT, ASSERT_NOT (lookarounds, ignored by the grammar) add nothing
    return "".join(out)


def _category_member(category: Any) -> str:
    name = str(category)
    if "NOT_DIGIT" in name or "NOT_SPACE" in name:
        return "a"
    if "NOT_WORD" in name:
        return " "
    if "DIGIT" in name:
        return "0"
    if "SPACE" in name:
        return " "
    return "a"


def _class_member(items: Any) -> str:
    """A character of a `[...]` class: its first member, or one it does not exclude."""
    c = _sre()

    if items and items[0][0] is c.NEGATE:
        excluded = items[1:]
        return next((ch for ch in "a0A _-.x" if not _in_class(ch, excluded)), "a")
    for op, arg in items:
        if op is c.LITERAL:
            return chr(arg)
        if op is c.RANGE:
            return chr(arg[0])
        if op is c.CATEGORY:
            return _category_member(arg)
    return "a"


def _in_class(ch: str, items: Any) -> bool:
    c = _sre()

    for op, arg in items:
        if (op is c.LITERAL and chr(arg) == ch) or (op is c.RANGE and arg[0] <= ord(ch) <= arg[1]):
            return True
        if op is c.CATEGORY and re.fullmatch(_CATEGORY_REGEX.get(str(arg), "(?!)"), ch):
            return True
    return False


_CATEGORY_REGEX = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}
