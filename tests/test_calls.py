import pytest
from pydantic import BaseModel

from myopto import StructuredOutputError, allm_json, allm_text, llm_json, llm_text

PERSON = {
    "name": "person_info",
    "schema": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    "strict": True,
}


class Person(BaseModel):
    name: str
    age: int


def test_llm_text_returns_the_answer_and_adds_the_system_message(custom_role):
    assert llm_text("hi", system="be kind", temperature=0) == "echo: hi"
    body = custom_role.last_request.body
    assert body["messages"][0] == {"role": "system", "content": "be kind"}
    assert body["temperature"] == 0


def test_llm_json_with_the_seed_wrapper(custom_role):
    custom_role.reply({"name": "John", "age": 30})
    assert llm_json("Extract: John is 30 years old.", json_schema=PERSON) == {"name": "John", "age": 30}
    assert custom_role.last_request.body["response_format"]["json_schema"]["strict"] is True


def test_llm_json_with_a_bare_schema_and_with_no_schema(custom_role):
    custom_role.reply({"name": "Ann", "age": 4}, {"anything": [1]})
    assert llm_json("x", PERSON["schema"]) == {"name": "Ann", "age": 4}
    assert llm_json("x") == {"anything": [1]}
    assert custom_role.last_request.body["response_format"] == {"type": "json_object"}


def test_llm_json_with_a_pydantic_model_returns_an_instance(custom_role):
    custom_role.reply({"name": "Bo", "age": 7})
    person = llm_json("x", Person)
    assert isinstance(person, Person) and person.age == 7


def test_llm_json_raises_when_no_json_comes_back(custom_role):
    custom_role.reply("no json")
    with pytest.raises(StructuredOutputError) as error:
        llm_json("x")
    assert error.value.response.text == "no json"


def test_llm_json_raises_on_a_malformed_schema_before_any_call(custom_role):
    with pytest.raises(ValueError, match="malformed JSON schema"):
        llm_json("x", {"type": "object", "properties": {"a": {"type": 1}}})
    assert custom_role.request_count == 0


async def test_async_twins(custom_role):
    custom_role.reply({"name": "Cy", "age": 1})
    assert await allm_json("x", PERSON) == {"name": "Cy", "age": 1}
    assert await allm_text("y") == "echo: y"


def test_batch_keeps_input_order_and_per_item_errors(custom_role):
    from myopto import BackendError, get_llm

    custom_role.fail(400)  # exactly one of the calls gets a 400
    results = get_llm().batch([f"item {i}" for i in range(10)], max_concurrency=4)
    errors = [r for r in results if isinstance(r, BackendError)]
    assert len(errors) == 1
    for index, result in enumerate(results):
        if not isinstance(result, BackendError):
            assert result.text == f"echo: item {index}"
    with pytest.raises(ValueError):
        get_llm().batch(["a"], max_concurrency=0)


def test_batch_can_raise_instead(custom_role):
    from myopto import BackendError, get_llm

    custom_role.fail(400)
    with pytest.raises(BackendError):
        get_llm().batch(["a", "b"], return_exceptions=False, progress=True)


def test_llm_json_returns_none_for_a_null_a_nullable_schema_allows_and_raises_for_a_json_object(custom_role):
    custom_role.reply("null", "null")
    assert llm_json("x", {"anyOf": [PERSON["schema"], {"type": "null"}]}) is None
    with pytest.raises(StructuredOutputError):
        llm_json("x")  # any JSON object: null is not one
