import pytest
from pydantic import BaseModel

from myopto import InvalidRequest
from myopto.output_format import normalize_response_format, schema_of, validation_error

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
