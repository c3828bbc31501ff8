import pytest
from pydantic import BaseModel

from myopto import InvalidRequest
from myopto.output_format import check_schema, normalize_response_format, schema_of, validation_error

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


class Person(BaseModel):
    name: str
    age: int


def test_every_accepted_shape_normalizes_to_openai_form():
    wrapper = normalize_response_format({"name": "person_info", "schema": PERSON, "strict": True})
    assert wrapper == {"type": "json_schema", "json_schema": {"name": "person_info", "schema": PERSON, "strict": True}}
    bare = normalize_response_format(PERSON)
    assert bare["json_schema"]["schema"] == PERSON and bare["json_schema"]["name"] == "response"
    openai_form = normalize_response_format({"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
    assert schema_of(openai_form) == PERSON
    assert normalize_response_format({"type": "json_object"}) == {"type": "json_object"}
    assert normalize_response_format({"type": "text"}) is None
    assert normalize_response_format(None) is None


def test_pydantic_model_becomes_its_json_schema():
    spec = normalize_response_format(Person)
    assert spec["json_schema"]["name"] == "Person"
    assert set(spec["json_schema"]["schema"]["properties"]) == {"name", "age"}


@pytest.mark.parametrize(
    "value, fragment",
    [
        ({"type": "object", "properties": {"a": {"type": "strng"}}}, "malformed JSON schema at properties/a/type"),
        ({"name": "x", "schema": {"type": 5}}, "malformed JSON schema"),
        ({"type": "json_schema"}, "needs 'json_schema'"),
        ({"foo": "bar"}, "cannot tell what output format"),
        ("json", "must be a dict or a pydantic model"),
    ],
)
def test_malformed_formats_raise_before_any_call(value, fragment):
    with pytest.raises(InvalidRequest) as error:
        normalize_response_format(value)
    assert fragment in str(error.value)


def test_validation_error_says_where():
    assert validation_error({"name": "a", "age": 3}, PERSON) is None
    assert "age" in validation_error({"name": "a", "age": "old"}, PERSON)
    assert "'age' is a required property" in validation_error({"name": "a"}, PERSON)


def test_a_schema_checked_once_is_not_meta_validated_again():
    """A repeated schema (every optimiser step, every cache hit) costs a lookup, not jsonschema's
    meta-validation (hundreds of microseconds): far under 50 us even on a loaded machine."""
    import time

    from myopto.output_format import check_schema

    schema = {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "why": {"type": "string"}},
        "required": ["x", "why"],
        "additionalProperties": False,
        "$defs": {"n": {"type": "number"}},
    }
    check_schema(schema)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(200):
            check_schema({**schema})  # an equal schema, another object: keyed by content, not identity
        best = min(best, (time.perf_counter() - start) / 200)
    assert best < 50e-6, f"{best * 1e6:.0f} us per check of a schema already checked"


def test_a_remembered_schema_changed_in_place_is_checked_again():
    from myopto.output_format import check_schema

    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    check_schema(schema)
    schema["properties"]["a"]["type"] = "strng"  # the same object, now malformed
    with pytest.raises(InvalidRequest, match="malformed JSON schema at properties/a/type"):
        check_schema(schema)
    schema["properties"]["a"] = {"$ref": "#/$defs/missing"}
    with pytest.raises(InvalidRequest, match="points to nothing"):
        check_schema(schema)


def test_keys_in_another_order_are_the_same_schema_and_a_bad_schema_is_refused_every_time():
    from myopto.output_format import check_schema

    check_schema({"required": ["b"], "type": "object", "properties": {"b": {"type": "integer"}}})
    check_schema({"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]})
    bad = {"type": "object", "properties": {"a": {"type": 5}}}
    for _ in range(3):
        with pytest.raises(InvalidRequest, match="malformed JSON schema"):
            normalize_response_format(bad)


def test_a_schema_that_is_not_plain_json_is_still_checked_each_time():
    from myopto.output_format import check_schema

    with pytest.raises(InvalidRequest, match="malformed JSON schema"):
        check_schema({"type": "object", "enum": {1, 2}})  # a set: no canonical text, checked, refused
    check_schema({"type": "object", "properties": {"a": {"type": "number", "maximum": float("inf")}}})


def test_the_remembered_schemas_are_bounded():
    from myopto import output_format

    for index in range(output_format._VALID_SCHEMAS_MAX + 50):
        output_format.check_schema({"type": "object", "properties": {f"p{index}": {"type": "string"}}})
    assert len(output_format._VALID_SCHEMAS) == output_format._VALID_SCHEMAS_MAX
    latest = {"type": "object", "properties": {f"p{output_format._VALID_SCHEMAS_MAX + 49}": {"type": "string"}}}
    assert output_format._canonical(latest) in output_format._VALID_SCHEMAS


def test_a_schema_judged_once_is_judged_the_same_whatever_was_checked_before():
    """A tuple where an array belongs is refused every time, also after the list spelling of the
    same schema was found valid (both give the same JSON text)."""
    as_tuple = {"type": "object", "properties": {"c": {"enum": ("a", "b")}}}
    as_list = {"type": "object", "properties": {"c": {"enum": ["a", "b"]}}}
    with pytest.raises(InvalidRequest):
        check_schema(as_tuple)
    check_schema(as_list)
    with pytest.raises(InvalidRequest):
        check_schema(as_tuple)
