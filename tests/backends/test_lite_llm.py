"""LiteLLM end to end: the real `litellm` client over HTTP to the project's test server."""

import asyncio

import pytest
from testkit import serve

from myopto import BackendError, get_llm, set_role_config

PERSON = {
    "name": "person",
    "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
}


@pytest.fixture
def litellm_role(server):
    serve(server, backend="LiteLLM", model="openai/gpt-4o-mini", api_key="sk-litellm-key", retries=0)
    return server


def test_text_call_through_litellm(litellm_role):
    response = get_llm()("hello litellm", temperature=0)
    assert response.text == "echo: hello litellm"
    assert response.usage.prompt_tokens == 2 and response.usage.completion_tokens == 3
    sent = litellm_role.last_request
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["temperature"] == 0
    assert sent.headers["authorization"] == "Bearer sk-litellm-key"


def test_cost_comes_from_litellms_price_map_for_a_known_model(litellm_role):
    response = get_llm()("one two three")
    assert response.cost is not None and response.cost > 0


def test_cost_is_unknown_for_a_model_with_no_price(server):
    set_role_config("executor", backend="LiteLLM", model="openai/my-private-model-7", base_url=server.url, api_key="k")
    assert get_llm()("x").cost is None


def test_json_schema_is_sent_as_response_format(litellm_role):
    litellm_role.reply({"name": "Grace"})
    response = get_llm()("who?", response_format=PERSON)
    assert response.parsed == {"name": "Grace"}
    assert litellm_role.last_request.body["response_format"]["json_schema"]["schema"] == PERSON["schema"]


async def test_async_through_litellm(litellm_role):
    responses = await asyncio.gather(*(get_llm().acall(f"a{i}") for i in range(3)))
    assert sorted(r.text for r in responses) == ["echo: a0", "echo: a1", "echo: a2"]


@pytest.mark.parametrize("status, retryable", [(429, True), (503, True), (400, False), (401, False)])
def test_errors_are_translated_and_litellm_does_not_retry_on_its_own(litellm_role, status, retryable):
    litellm_role.fail(status, retry_after=2)
    with pytest.raises(BackendError) as error:
        get_llm()("x")
    assert error.value.status_code == status
    assert error.value.retryable is retryable
    assert litellm_role.request_count == 1


def test_litellm_honours_openai_base_url_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    response = get_llm()("from env")  # defaults: LiteLLM, gpt-4o
    assert response.text == "echo: from env"
    assert server.last_request.body["model"] == "gpt-4o"


def test_a_key_the_server_echoes_in_an_error_never_reaches_the_exception(server):
    marker = "sk-marker-litellm-0123456789"
    set_role_config(
        "executor", backend="LiteLLM", model="openai/gpt-4o-mini", base_url=server.url, api_key=marker, retries=0
    )
    server.fail(401, message=f"Incorrect API key provided: {marker}.")
    with pytest.raises(BackendError) as error:
        get_llm()("x")
    assert marker not in str(error.value) and "Incorrect API key provided: ***" in str(error.value)


def test_the_providers_base_url_variable_is_the_endpoint_of_a_model_without_one(server, monkeypatch):
    set_role_config("executor", backend="LiteLLM", model="hosted_vllm/my-model", api_key="k")
    assert get_llm().request("x").endpoint is None
    monkeypatch.setenv("HOSTED_VLLM_API_BASE", server.url + "/")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://other.example/v1")  # another provider's: not this model's
    assert get_llm().request("x").endpoint == server.url
    assert get_llm().request("x", model="openai/gpt-4o-mini").endpoint == "http://other.example/v1"
    response = get_llm()("through the variable")
    assert response.text == "echo: through the variable" and server.request_count == 1


# -- everything the server said is data of the response (issue 20) ---------------------------


def test_litellm_keeps_tool_calls_reasoning_and_token_classes(litellm_role):
    from myopto.pricing import cost_from_map
    from myopto.testing.server import Answer

    litellm_role.reply(
        Answer(
            content="let me add",
            reasoning_content="adding is a tool job",
            tool_calls=[{"id": "call_9", "name": "add", "arguments": {"a": 1}}],
            usage={"prompt_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 1500}},
        )
    )
    response = get_llm()(
        "add", tools=[{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    )
    message = response.choices[0].message
    assert message.content == "let me add" and message.reasoning_content == "adding is a tool job"
    assert message.tool_calls[0].function.name == "add" and message.tool_calls[0].id == "call_9"
    assert response.usage.prompt_tokens_details.cached_tokens == 1500
    usage = response.usage
    assert response.cost == pytest.approx(
        cost_from_map(
            "gpt-4o-mini",
            2000,
            usage.completion_tokens,
            cached_tokens=1500,
            reasoning_tokens=usage.completion_tokens_details.reasoning_tokens,
        )
    )


async def test_async_n_choices_through_litellm(litellm_role):
    litellm_role.reply("one", "two", "three")
    response = await get_llm().acall("three", n=3)
    assert [choice.message.content for choice in response.choices] == ["one", "two", "three"]
    assert litellm_role.last_request.body["n"] == 3 and response.usage.completion_tokens == 3
