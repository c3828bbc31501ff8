"""What output a caller asked for, in one normal form: OpenAI's `response_format`.

Callers may give `{"type": "json_object"}`, `{"type": "json_schema", "json_schema": {...}}`,
the seed's wrapper `{"name": ..., "schema": {...}, "strict": ...}`, a bare JSON schema, or a
pydantic model class. `normalize_response_format` turns each into the OpenAI form, checking the
schema on the spot so a malformed one fails before any network call.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any

from myopto.errors import InvalidRequest

JSON_OBJECT: dict[str, Any] = {"type": "json_object"}
_SCHEMA_KEYS = frozenset(
    {"type", "properties", "items", "$schema", "$ref", "$defs", "anyOf", "oneOf", "allOf", "enum", "const"}
)
_NAME = re.compile(r"[^A-Za-z0-9_-]")


def is_pydantic_model(value: Any) -> bool:
    """True for a pydantic v2 model class (checked without importing pydantic)."""
    return (
        isinstance(value, type)
        and callable(getattr(value, "model_json_schema", None))
        and callable(getattr(value, "model_validate", None))
    )


def normalize_response_format(value: Any) -> dict[str, Any] | None:
    """Return `value` as an OpenAI `response_format` dict (None for plain text).

    Raises `InvalidRequest` for anything that is not one of the accepted shapes, and for a JSON
    schema that is not itself valid.
    """
    if value is None:
        return None
    if is_pydantic_model(value):
        return _json_schema(value.__name__, value.model_json_schema(), strict=False)
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            f"response_format / json_schema must be a dict or a pydantic model class, got {type(value).__name__}"
        )
    kind = value.get("type")
    if kind == "text" and len(value) == 1:
        return None
    if kind == "json_object" and len(value) == 1:
        return dict(JSON_OBJECT)
    if kind == "json_schema":
        inner = value.get("json_schema")
        if not isinstance(inner, Mapping) or not isinstance(inner.get("schema"), Mapping):
            raise InvalidRequest(
                "response_format of type 'json_schema' needs 'json_schema': {'name': ..., 'schema': {...}}"
            )
        return _json_schema(inner.get("name"), inner["schema"], inner.get("strict"))
    if (
        "schema" in value
        and isinstance(value["schema"], Mapping)
        and not (set(value) - {"name", "schema", "strict", "description"})
    ):
        return _json_schema(value.get("name"), value["schema"], value.get("strict"))
    if _SCHEMA_KEYS & set(value):
        return _json_schema(None, value, strict=None)
    raise InvalidRequest(
        "cannot tell what output format this is; give {'type': 'json_object'}, a JSON schema, "
        "{'name': ..., 'schema': {...}, 'strict': ...}, or a pydantic model class "
        f"(got keys {sorted(value)})"
    )


def _json_schema(name: Any, schema: Mapping[str, Any], strict: Any) -> dict[str, Any]:
    check_schema(schema)
    spec: dict[str, Any] = {"name": _NAME.sub("_", str(name or "response"))[:64], "schema": dict(schema)}
    if strict is not None:
        spec["strict"] = bool(strict)
    return {"type": "json_schema", "json_schema": spec}


# Schemas already found valid, by their canonical JSON text (what the provider is sent): a repeated
# schema (every step of an optimiser, every cache hit) costs one `json.dumps` and a lookup instead
# of jsonschema's meta-validation (hundreds of microseconds). Bounded, oldest forgotten first.
# Only valid schemas are kept: a malformed one is checked, and refused, every time.
_VALID_SCHEMAS: dict[str, None] = {}
_VALID_SCHEMAS_MAX = 512
_valid_schemas_lock = threading.Lock()


def _canonical(schema: Mapping[str, Any]) -> str | None:
    """The schema as canonical JSON text, or None when it is not plain JSON data (then it is
    checked every time, never remembered)."""
    if not _plain_json(schema):
        # a tuple or a read-only mapping would give the same text as a list or a dict, yet
        # jsonschema judges them otherwise: such a schema is checked every time as it is
        return None
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _plain_json(value: Any, depth: int = 0) -> bool:
    """Only dicts with string keys, lists and JSON scalars (exact types), at most 64 levels deep."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if depth > 64:
        return False
    if kind is dict:
        return all(type(key) is str and _plain_json(item, depth + 1) for key, item in value.items())
    if kind is list:
        return all(_plain_json(item, depth + 1) for item in value)
    return False


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise `InvalidRequest` when `schema` is not a valid JSON schema, or refers outside itself.

    Every `$ref` must point inside the schema (`#`, `#/$defs/...`, `#anchor`) and resolve there:
    the answer is validated after the call, and a reference that cannot be followed then (or
    that would fetch a document from elsewhere) would fail a call already paid for. A schema
    found valid once is remembered (by its canonical JSON text), so checking it again is cheap.
    """
    text = _canonical(schema)
    if text is not None and text in _VALID_SCHEMAS:
        return
    _check_schema(schema)
    if text is not None:
        with _valid_schemas_lock:
            _VALID_SCHEMAS[text] = None
            while len(_VALID_SCHEMAS) > _VALID_SCHEMAS_MAX:
                del _VALID_SCHEMAS[next(iter(_VALID_SCHEMAS))]


def _check_schema(schema: Mapping[str, Any]) -> None:
    import jsonschema  # imported here: only JSON calls pay for it

    try:
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        raise InvalidRequest(f"malformed JSON schema at {where}: {error.message}") from error
    _check_references(schema)


# Keywords whose values are data, not subschemas: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "example"})
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords whose keys are names (of properties, definitions), each mapping to a subschema.
_NAMED_SUBSCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def _check_references(schema: Mapping[str, Any]) -> None:
    references: list[tuple[str, str]] = []
    anchors: set[str] = set()
    nested_ids = _collect(schema, "", references, anchors, root=True)
    for where, reference in references:
        if not reference.startswith("#"):
            raise InvalidRequest(
                f"JSON schema at {where or '(root)'}: $ref {reference!r} points outside the schema; myopto "
                "fetches nothing: put the definition under $defs and refer to it as '#/$defs/<name>'"
            )
        # a schema with nested $id's resolves fragments against those: leave them to the validator
        if not nested_ids and not _resolves(schema, reference[1:], anchors):
            raise InvalidRequest(
                f"JSON schema at {where or '(root)'}: $ref {reference!r} points to nothing in the schema"
            )


def _collect(
    node: Any, where: str, references: list[tuple[str, str]], anchors: set[str], *, root: bool = False
) -> bool:
    """Gather (location, reference) pairs and anchor names; True when a nested `$id` was seen."""
    nested_id = False
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in _REFERENCES and isinstance(value, str):
                references.append((where, value))
            elif key in ("$anchor", "$dynamicAnchor") and isinstance(value, str):
                anchors.add(value)
            elif key == "$id" and not root:
                nested_id = True
            elif key in _NAMED_SUBSCHEMAS and isinstance(value, Mapping):
                for name, subschema in value.items():
                    nested_id |= _collect(subschema, f"{where}/{key}/{name}", references, anchors)
            elif key not in _DATA_KEYWORDS:
                nested_id |= _collect(value, f"{where}/{key}", references, anchors)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            nested_id |= _collect(item, f"{where}/{index}", references, anchors)
    return nested_id


MISSING = object()  # what `resolve_pointer` returns for a pointer that names nothing


def resolve_pointer(root: Any, pointer: str) -> Any:
    """What the JSON pointer `pointer` (`/$defs/item`, already percent-decoded) names in `root`, or
    `MISSING` (RFC 6901: `~1` is `/`, `~0` is `~`)."""
    target = root
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping) and token in target:
            target = target[token]
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            return MISSING
    return target


def _resolves(schema: Mapping[str, Any], fragment: str, anchors: set[str]) -> bool:
    """Whether `#fragment` names something in `schema`: a JSON pointer or an anchor."""
    from urllib.parse import unquote

    fragment = unquote(fragment)
    if not fragment.startswith("/"):
        return fragment == "" or fragment in anchors
    return resolve_pointer(schema, fragment) is not MISSING


def schema_of(response_format: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema inside a normal-form response_format, or None (plain text or json_object)."""
    if not response_format or response_format.get("type") != "json_schema":
        return None
    return dict(response_format["json_schema"]["schema"])


def validation_error(value: Any, schema: Mapping[str, Any]) -> str | None:
    """Why `value` does not satisfy `schema`, or None when it does."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"
