import json

import pytest

from myopto import Pipeline, Request, SchemaError, StructuredOutputError, get_llm, llm_json, set_role_config
from myopto.middleware.structured_output import StructuredOutput, json_instruction
from myopto.output_format import normalize_response_format
from myopto.testing import EchoBackend

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture
def prompt_role(server):
    """An OpenAI-compatible server used as if it had no JSON mode (how local SLMs are driven)."""
    set_role_config("executor", backend="CustomLLM", model="slm", base_url=server.url, structured_output="prompt")
    return server


def test_prompt_mode_sends_no_response_format_and_injects_the_schema(prompt_role):
    prompt_role.reply('Sure!\n```json\n{"city": "Paris"}\n```')
    response = get_llm()("Capital of France?", response_format=SCHEMA)
    assert response.parsed == {"city": "Paris"}
    body = prompt_role.last_request.body
    assert "response_format" not in body
    last = body["messages"][-1]["content"]
    assert last.startswith("Capital of France?\n\n")
    assert json.dumps(SCHEMA, sort_keys=True) in last


def test_json_object_instruction_reaches_a_backend_without_json_mode(prompt_role):
    prompt_role.reply('{"reasoning": "r", "suggestion": {}}')
    response = get_llm()(
        messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "go"}],
        response_format={"type": "json_object"},
    )
    body = prompt_role.last_request.body
    assert "response_format" not in body
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert "one valid JSON object" in body["messages"][1]["content"]
    assert response.parsed == {"reasoning": "r", "suggestion": {}}


def test_instruction_is_appended_as_a_user_message_when_there_is_none():
    backend = EchoBackend(answer=lambda r: '{"city": "Rome"}', json_schema=False, json_object=False)
    pipeline = Pipeline(backend, [StructuredOutput()])
    request = Request(
        model="m",
        messages=[{"role": "system", "content": "only system"}],
        response_format=normalize_response_format(SCHEMA),
    )
    assert pipeline(request).parsed == {"city": "Rome"}
    sent = backend.requests[0].messages_list()
    assert sent[-1]["role"] == "user" and "JSON schema" in sent[-1]["content"]


def test_capability_decides_not_the_backend_name():
    native = EchoBackend(json_schema=True, json_object=False)
    Pipeline(native, [StructuredOutput(json_schema=True, json_object=False)])(
        Request(model="m", messages=[{"role": "user", "content": "a"}], response_format={"type": "json_object"})
    )
    assert native.requests[0].response_format is None  # json_object not supported natively: instruction
    Pipeline(native, [StructuredOutput(json_schema=True, json_object=False)])(
        Request(
            model="m", messages=[{"role": "user", "content": "a"}], response_format=normalize_response_format(SCHEMA)
        )
    )
    assert native.requests[1].response_format["type"] == "json_schema"


def test_an_invalid_answer_is_repaired_by_a_reask_that_quotes_the_problem(prompt_role):
    prompt_role.reply('{"town": "Paris"}', '{"city": "Paris"}')
    response = get_llm()("Capital of France?", response_format=SCHEMA)
    assert response.parsed == {"city": "Paris"}
    reask = prompt_role.last_request.body["messages"]
    assert reask[-2] == {"role": "assistant", "content": '{"town": "Paris"}'}
    assert "'city' is a required property" in reask[-1]["content"]
    assert prompt_role.request_count == 2
    assert response.usage.prompt_tokens > 0  # both calls' tokens are counted
    assert response.usage.completion_tokens == 2 + 2


def test_a_never_valid_answer_ends_in_schema_error_with_the_last_answer(prompt_role):
    set_role_config("executor", reasks=2)
    prompt_role.reply('{"town": "A"}', '{"town": "B"}', '{"town": "C"}')
    with pytest.raises(SchemaError) as error:
        get_llm()("x", response_format=SCHEMA)
    assert isinstance(error.value, StructuredOutputError)
    assert "'city' is a required property" in str(error.value)
    assert error.value.response.text == '{"town": "C"}'
    assert error.value.response.parsed == {"town": "C"}
    assert prompt_role.request_count == 3


def test_reasks_zero_raises_at_once(prompt_role):
    set_role_config("executor", reasks=0)
    prompt_role.reply("not json")
    with pytest.raises(SchemaError, match="is not JSON"):
        get_llm()("x", response_format=SCHEMA)
    assert prompt_role.request_count == 1


async def test_async_reask(prompt_role):
    prompt_role.reply("nope", '{"city": "Rome"}')
    assert (await get_llm().acall("x", response_format=SCHEMA)).parsed == {"city": "Rome"}


def test_an_answer_that_is_not_json_raises_for_a_schema(prompt_role):
    prompt_role.reply("```python\nprint('Paris')\n```", "still not json")
    with pytest.raises(StructuredOutputError, match="is not JSON"):
        llm_json("x", SCHEMA)


def test_unparsable_json_object_answer_is_returned_for_the_caller_to_handle(prompt_role):
    prompt_role.reply("not json at all")
    response = get_llm()("x", response_format={"type": "json_object"})
    assert response.text == "not json at all" and response.parsed is None


def test_plain_text_calls_are_untouched(prompt_role):
    response = get_llm()("hello")
    assert response.parsed is None
    assert prompt_role.last_request.body["messages"] == [{"role": "user", "content": "hello"}]


def test_json_instruction_text():
    assert "no code fences" in json_instruction({"type": "json_object"})
    assert '"city"' in json_instruction(normalize_response_format(SCHEMA))


NULLABLE = [
    {"type": ["object", "null"], "properties": {"city": {"type": "string"}}},
    {"anyOf": [{"type": "object", "properties": {"city": {"type": "string"}}}, {"type": "null"}]},
    {"type": "null"},
]


@pytest.mark.parametrize("schema", NULLABLE)
def test_a_json_null_answers_a_nullable_schema_without_a_reask(prompt_role, schema):
    prompt_role.reply("null", "```json\nnull\n```")
    response = get_llm()("Capital of Atlantis?", response_format=schema)
    assert response.text == "null" and response.parsed is None
    assert llm_json("Capital of Atlantis?", schema) is None
    assert prompt_role.request_count == 2  # one call each, no re-ask


def test_a_json_null_for_a_schema_that_does_not_allow_it_is_reasked(prompt_role):
    prompt_role.reply("null", '{"city": "Paris"}')
    assert get_llm()("x", response_format=SCHEMA).parsed == {"city": "Paris"}
    assert "None is not of type 'object'" in prompt_role.last_request.body["messages"][-1]["content"]


# -- n choices: each one validated, each failing one asked again on its own (issue 20) --------


def test_each_of_n_choices_is_validated_and_only_the_failing_ones_are_asked_again(prompt_role):
    prompt_role.reply(
        '{"city": "Paris"}',
        '{"town": "Lyon"}',
        "no json here",
        '{"city": "Nice"}',
        '{"city": "Lyon"}',
        '{"city": "Lille"}',
    )
    response = get_llm()("French cities?", response_format=SCHEMA, n=4)
    assert [choice.message.parsed for choice in response.choices] == [
        {"city": "Paris"},
        {"city": "Lyon"},
        {"city": "Lille"},
        {"city": "Nice"},
    ]
    assert response.parsed == {"city": "Paris"} and [c.index for c in response.choices] == [0, 1, 2, 3]
    first, reask_1, reask_2 = prompt_role.requests
    assert first.body["n"] == 4
    assert "n" not in reask_1.body and "n" not in reask_2.body  # one answer per re-ask
    assert reask_1.body["messages"][-2] == {"role": "assistant", "content": '{"town": "Lyon"}'}
    assert "'city' is a required property" in reask_1.body["messages"][-1]["content"]
    assert reask_2.body["messages"][-2] == {"role": "assistant", "content": "no json here"}
    assert "it is not JSON" in reask_2.body["messages"][-1]["content"]
    assert response.usage.completion_tokens == (2 + 2 + 3 + 2) + 2 + 2  # the three calls' tokens


async def test_async_n_choices_are_validated_per_choice(prompt_role):
    prompt_role.reply("nope", '{"city": "Rome"}', '{"city": "Milan"}')
    response = await get_llm().acall("x", response_format=SCHEMA, n=2)
    assert [choice.message.parsed for choice in response.choices] == [{"city": "Milan"}, {"city": "Rome"}]
    assert response.text == '{"city": "Milan"}' and prompt_role.request_count == 2


def test_a_choice_still_invalid_after_the_reasks_raises_naming_it_with_every_choice_attached(prompt_role):
    prompt_role.reply('{"city": "Paris"}', '{"town": "A"}', '{"town": "B"}')
    with pytest.raises(SchemaError, match=r"choice 1 of 2: .*'city' is a required property") as error:
        get_llm()("x", response_format=SCHEMA, n=2)
    choices = error.value.response.choices
    assert choices[0].message.parsed == {"city": "Paris"} and choices[1].message.content == '{"town": "B"}'


def test_json_object_answers_are_parsed_per_choice(prompt_role):
    prompt_role.reply('{"a": 1}', "not json")
    response = get_llm()("x", response_format={"type": "json_object"}, n=2)
    assert [choice.message.parsed for choice in response.choices] == [{"a": 1}, None]
    assert prompt_role.request_count == 1


def test_a_choice_that_calls_a_tool_is_not_checked_against_the_schema(prompt_role):
    from myopto.testing.server import Answer

    prompt_role.reply(Answer(tool_calls=[{"name": "lookup", "arguments": {"q": "capital"}}]))
    response = get_llm()("x", response_format=SCHEMA, tools=[{"type": "function", "function": {"name": "lookup"}}])
    assert response.choices[0].message.tool_calls[0].function.name == "lookup" and response.parsed is None
    assert prompt_role.request_count == 1
