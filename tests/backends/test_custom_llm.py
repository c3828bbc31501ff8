"""CustomLLM end to end: the real `openai` SDK over HTTP to the project's test server."""

import asyncio
import time

import pytest

from myopto import BackendError, get_llm, set_role_config

PERSON = {
    "name": "person",
    "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
}


def test_text_call_round_trips_and_reports_server_usage(custom_role):
    response = get_llm()(
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        max_tokens=5,
        temperature=0,
    )
    assert response.choices[0].message.content == "echo: hello there"
    assert response.usage.prompt_tokens == 4  # "be brief" + "hello there"
    assert response.usage.completion_tokens == 3
    assert response.model == "test-model"
    sent = custom_role.last_request
    assert sent.body["max_tokens"] == 5 and sent.body["temperature"] == 0
    assert sent.headers["authorization"] == "Bearer sk-test-key"
    assert "response_format" not in sent.body


def test_json_schema_is_sent_natively_and_the_answer_parsed(custom_role):
    custom_role.reply({"name": "Ada"})
    response = get_llm()("who?", response_format=PERSON)
    assert response.parsed == {"name": "Ada"}
    assert custom_role.last_request.body["response_format"] == {"type": "json_schema", "json_schema": PERSON}


async def test_async_call_uses_the_async_client(custom_role):
    responses = await asyncio.gather(*(get_llm().acall(f"n{i}") for i in range(5)))
    assert sorted(r.text for r in responses) == [f"echo: n{i}" for i in range(5)]
    assert custom_role.request_count == 5


def test_max_new_tokens_is_sent_as_max_tokens(custom_role):
    get_llm()("x", max_new_tokens=7)
    assert custom_role.last_request.body["max_tokens"] == 7
    assert "max_new_tokens" not in custom_role.last_request.body


def test_server_sampling_options_the_sdk_has_no_argument_for_reach_the_server(custom_role, server):
    llm = get_llm()
    llm("hi", top_k=3, min_p=0.1, repetition_penalty=1.1, extra_body={"mirostat": 0})
    body = server.last_request.body
    assert (body["top_k"], body["min_p"], body["repetition_penalty"], body["mirostat"]) == (3, 0.1, 1.1, 0)
    assert llm.stream("hi", top_k=2).response.text  # streamed too
    assert server.last_request.body["top_k"] == 2


@pytest.mark.parametrize(
    "status, retryable", [(429, True), (500, True), (503, True), (400, False), (401, False), (404, False)]
)
def test_http_errors_become_backend_errors_that_say_if_retrying_helps(custom_role, status, retryable):
    custom_role.fail(status, retry_after=3)
    with pytest.raises(BackendError) as error:
        get_llm()("x")
    assert error.value.status_code == status
    assert error.value.retryable is retryable
    assert error.value.retry_after == 3.0
    assert error.value.__cause__ is not None
    assert custom_role.request_count == 1  # the SDK's own retries are off: one policy, ours


def test_retry_after_ms_wins_over_retry_after(custom_role):
    custom_role.fail(429, retry_after=3, retry_after_ms=250)
    with pytest.raises(BackendError) as error:
        get_llm()("x")
    assert error.value.retry_after == 0.25


def test_dropped_connection_and_malformed_body_are_retryable_backend_errors(custom_role):
    custom_role.drop()
    with pytest.raises(BackendError) as dropped:
        get_llm()("x")
    assert dropped.value.retryable and dropped.value.status_code is None
    custom_role.malformed()
    with pytest.raises(BackendError) as malformed:
        get_llm()("x")
    assert malformed.value.retryable
    assert get_llm()("x").text == "echo: x"  # the server and client are fine afterwards


def test_wrong_api_key_is_a_401_that_is_not_retryable(server):
    server.api_key = "sk-right"
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, api_key="sk-wrong", retries=0)
    with pytest.raises(BackendError) as error:
        get_llm()("x")
    assert error.value.status_code == 401 and not error.value.retryable
    set_role_config("executor", api_key="sk-right")
    assert get_llm()("x").text == "echo: x"


def test_per_call_timeout_gives_a_retryable_error(custom_role):
    custom_role.delay(1.0)
    start = time.perf_counter()
    with pytest.raises(BackendError) as error:
        get_llm()("x", timeout=0.2)
    assert time.perf_counter() - start < 0.9
    assert error.value.retryable


def test_role_timeout_option(server):
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, timeout=0.2, retries=0)
    server.delay(1.0)
    with pytest.raises(BackendError):
        get_llm()("x")


def test_connection_refused_is_a_retryable_backend_error():
    set_role_config("executor", backend="CustomLLM", model="m", base_url="http://127.0.0.1:9/v1", retries=0)
    with pytest.raises(BackendError) as error:
        get_llm()("x")
    assert error.value.retryable


def test_async_calls_work_across_several_event_loops(custom_role):
    for i in range(3):  # each asyncio.run makes and closes a new loop
        assert asyncio.run(get_llm().acall(f"loop {i}")).text == f"echo: loop {i}"


MARKER_KEY = "sk-marker-key-0123456789abcdef"


@pytest.mark.parametrize("where", ["api_key", "extra_headers"])
def test_a_key_the_server_echoes_in_an_error_never_reaches_the_exception(server, where):
    secret = {"api_key": MARKER_KEY} if where == "api_key" else {"extra_headers": {"X-Api-Key": MARKER_KEY}}
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, retries=0, **secret)
    server.fail(401, message=f"Incorrect API key provided: {MARKER_KEY}.")
    with pytest.raises(BackendError) as error:
        get_llm()("x")
    assert MARKER_KEY not in str(error.value) and MARKER_KEY not in repr(error.value.args)
    assert "Incorrect API key provided: ***" in str(error.value)


# -- everything the server said is data of the response (issue 20) ---------------------------


def test_reasoning_sent_as_reasoning_like_vllm_is_the_messages_reasoning_content(custom_role):
    from myopto.testing.server import Answer

    custom_role.reply(Answer(content="4", message_fields={"reasoning": "two and two"}))
    assert get_llm()("2+2?").choices[0].message.reasoning_content == "two and two"


def test_deepseeks_prompt_cache_hit_tokens_count_as_cached_tokens(server):
    from myopto.pricing import cost_from_map
    from myopto.testing.server import Answer

    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, retries=0)
    server.reply(Answer(content="ok", usage={"prompt_tokens": 1000, "prompt_cache_hit_tokens": 600}))
    response = get_llm()("x")
    assert response.usage.prompt_tokens_details.cached_tokens == 600
    assert response.cost == pytest.approx(cost_from_map("gpt-4o-mini", 1000, 1, cached_tokens=600))
    assert response.cost < cost_from_map("gpt-4o-mini", 1000, 1)


def test_tool_call_arguments_sent_as_an_object_are_kept_as_json_text(custom_role):
    from myopto.testing.server import Answer

    custom_role.reply(
        Answer(tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": [1, 2]}}}])
    )
    call = get_llm()("x").choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("c1", "f", '{"x": [1, 2]}')


def test_a_tool_call_that_names_no_function_is_a_retryable_malformed_response(custom_role):
    from myopto import MalformedResponse
    from myopto.testing.server import Answer

    custom_role.reply(
        Answer(tool_calls=[{"id": "c1", "type": "function", "function": {"name": None, "arguments": "{}"}}])
    )
    with pytest.raises(MalformedResponse, match="names no function") as error:
        get_llm()("x")
    assert error.value.retryable


async def test_async_calls_keep_every_choice_and_its_logprobs(custom_role):
    custom_role.reply("a b", "c")
    response = await get_llm().acall("two please", n=2, logprobs=True)
    assert [choice.message.content for choice in response.choices] == ["a b", "c"]
    assert [[token.token for token in choice.logprobs.content] for choice in response.choices] == [["a", " b"], ["c"]]
    assert response.usage.completion_tokens == 3
