"""The shortest answer a JSON schema allows, as constrained decoding reads the schema.

`shortest_json` builds it in pure Python, before any grammar is compiled: constrained decoding
refuses a schema whose shortest answer does not fit the token budget, and an answer that cannot
be closed in time becomes this one. It follows the grammar's reading: properties in their
declared order and only the declared ones, `$ref`s resolved (a reference met again while it is
being expanded is a branch with no end), a single `allOf` followed and several ignored.

`InvalidRequest` when the schema uses a standard format the grammar ignores
(`UNENFORCED_FORMATS`: validators treat formats as annotations, so nothing would check them), or
when no finite value satisfies it, saying where.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Mapping
from typing import Any

from myopto.errors import InvalidRequest
from myopto.output_format import MISSING, resolve_pointer

from .json_scalars import NoValue, compact, shortest_integer, shortest_number, shortest_string, whole

_MAX_SCHEMA_VISITS = 20_000  # subschemas visited while building the shortest answer

# Standard formats (JSON Schema 2020-12) the grammar ignores. Validators check formats only when
# asked to, so an answer breaking one would come back as valid: constrained=True refuses them.
UNENFORCED_FORMATS = frozenset({"iri", "iri-reference", "idn-email", "idn-hostname", "regex"})
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "example"})

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
    except NoValue as problem:
        message = f"constrained decoding can give no valid answer for this JSON schema {problem}; fix the schema"
        raise InvalidRequest(message) from None
    return compact(value)


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
            raise NoValue(where, "the schema `false` allows no value")
        if not isinstance(node, Mapping):
            return 0
        reference = node.get("$ref")
        if isinstance(reference, str):
            return self._reference(reference, where)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return _enum(node, where)
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
            except NoValue as error:
                problem = error
        if not candidates:
            raise problem or NoValue(where, "no type is allowed")
        return min(candidates, key=lambda v: len(compact(v)))

    def _reference(self, reference: str, where: str) -> Any:
        if reference in self.expanding:
            raise NoValue(
                where, f"$ref {reference!r} leads back to itself with no way to end, so every value would be infinite"
            )
        target = _resolve(self.root, reference)
        if target is MISSING:
            raise NoValue(where, f"$ref {reference!r} points to nothing in the schema")
        self.expanding.append(reference)
        try:
            return self.value(target, f"{where}/$ref")
        finally:
            self.expanding.pop()

    def _shortest_of(self, branches: list[tuple[Any, str]], where: str, keyword: str) -> Any:
        found, problems = [], []
        for node, path in branches:
            try:
                found.append(self.value(node, path))
            except NoValue as error:
                problems.append(error)
        if found:
            return min(found, key=lambda v: len(compact(v)))
        if problems:
            raise problems[0]
        raise NoValue(where, f"{keyword} lists no schema")

    def _typed(self, kind: str, node: Mapping[str, Any], where: str) -> Any:
        if kind == "null":
            return None
        if kind == "boolean":
            return False
        if kind == "integer":
            return shortest_integer(node, where)
        if kind == "number":
            return shortest_number(node, where)
        if kind == "string":
            return shortest_string(node, where)
        if kind == "array":
            return self._array(node, where)
        if kind == "object":
            return self._object(node, where)
        return 0  # any value

    def _array(self, node: Mapping[str, Any], where: str) -> list[Any]:
        prefix_items = node.get("prefixItems")
        prefix: list[Any] = prefix_items if isinstance(prefix_items, list) else []
        items = node.get("items")
        low, high = whole(node.get("minItems")) or 0, whole(node.get("maxItems"))
        if high is not None and low > high:
            raise NoValue(where, f"minItems {low} is greater than maxItems {high}")
        values = [self.value(prefix[i], f"{where}/prefixItems/{i}") for i in range(min(low, len(prefix)))]
        rest = low - len(values)
        if rest > 0:
            if items is False or (items is None and prefix):  # strict: only declared items
                raise NoValue(where, f"minItems {low} but only the {len(prefix)} items of prefixItems are allowed")
            item = 0 if items is None else self.value(items, f"{where}/items")
            values.extend([item] * rest)
        return values

    def _object(self, node: Mapping[str, Any], where: str) -> dict[str, Any]:
        properties = node.get("properties")
        declared: Mapping[str, Any] = properties if isinstance(properties, Mapping) else {}
        required = [name for name in node.get("required") or () if isinstance(name, str)]
        extra = node.get("additionalProperties")
        for name in required:
            if name not in declared and not isinstance(extra, Mapping):
                raise NoValue(
                    where,
                    f"required property {name!r} is not in properties, and with constrained=True an "
                    "object holds only the properties it declares",
                )
        chosen = {
            name: self.value(declared[name], f"{where}/properties/{name}") for name in declared if name in required
        }
        low, high = whole(node.get("minProperties")) or 0, whole(node.get("maxProperties"))
        if high is not None and len(set(required)) > high:
            raise NoValue(where, f"{len(set(required))} properties are required and maxProperties is {high}")
        if len(chosen) < low:
            optional = []
            for name in declared:
                if name not in chosen:
                    with contextlib.suppress(NoValue):
                        optional.append((name, self.value(declared[name], f"{where}/properties/{name}")))
            optional.sort(key=lambda pair: len(compact(pair[1])))
            chosen.update(optional[: low - len(chosen)])
            if len(chosen) < low and not isinstance(extra, Mapping):
                raise NoValue(where, f"minProperties {low} but only {len(chosen)} properties can be given")
        # in the declared order, as the grammar writes them
        value = {name: chosen[name] for name in declared if name in chosen}
        for name in required:
            if name not in value:
                value[name] = self.value(extra, f"{where}/additionalProperties")
        return value


def _enum(node: Mapping[str, Any], where: str) -> Any:
    """The shortest of the enum's values that has the schema's type."""
    values = node["enum"]
    if not isinstance(values, list) or not values:
        raise NoValue(where, "enum lists no value")
    kinds = node.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else None
    fitting = [v for v in values if kinds is None or any(_is_type(v, kind) for kind in kinds)]
    if not fitting:
        raise NoValue(where, f"none of enum's values is of type {node.get('type')}")
    return min(fitting, key=lambda v: len(compact(v)))


def _resolve(root: Any, reference: str) -> Any:
    """The subschema `reference` names in `root` (a JSON pointer or an anchor), or `MISSING`."""
    from urllib.parse import unquote

    if not reference.startswith("#"):
        return MISSING
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
        return MISSING
    for child in children:
        found = _anchor(child, name)
        if found is not MISSING:
            return found
    return MISSING


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
