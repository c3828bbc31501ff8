"""DSPy programs on myopto roles, against the test server through the real `openai` (CustomLLM)
and `litellm` (LiteLLM) clients: adapters, n candidates, rollouts, tool calls, logprobs,
errors, history, the usage ledger, saving."""

from __future__ import annotations

import json
import uuid

import pytest

dspy = pytest.importorskip("dspy")

from dspy.utils.exceptions import (  # noqa: E402
    AdapterParseError,
    LMAuthError,
    LMConfigurationError,
    LMInvalidRequestError,
    LMRateLimitError,
)
from dspy_kit import (  # noqa: E402 - after the skip: it imports dspy
    AGENT_STEPS,
    Sum,
    add,
    agent,
    answering,
    arithmetic,
    chat_text,
    exact_answer,
    serve_role,
    sums,
    weather,
)
from testkit import HTTP_BACKENDS, modules_loaded_by  # noqa: E402

import myopto  # noqa: E402
from myopto import BadRequest, CacheMiss, RateLimited, get_llm, get_usage_summary, set_role_config  # noqa: E402
from myopto.integrations.dspy import RoleLM, lm, run  # noqa: E402
from myopto.testing.answers import Answer, count_tokens  # noqa: E402

ADAPTERS = {"ChatAdapter": dspy.ChatAdapter, "JSONAdapter": dspy.JSONAdapter}


@pytest.fixture(params=list(HTTP_BACKENDS))
def backend(request, server):
    """The executor on the test server through each HTTP backend; the server answers as an adder."""
    serve_role(server, request.param, HTTP_BACKENDS[request.param])
    server.responder = answering(arithmetic)
    return request.param


def cause_chain(error: BaseException) -> list[type[BaseException]]:
    kinds = []
    while error is not None:
        kinds.append(type(error))
        error = error.__cause__
    return kinds


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_predict_and_chain_of_thought_run_on_the_role_with_each_adapter(backend, adapter, server):
    with dspy.context(lm=lm("executor"), adapter=ADAPTERS[adapter]()):
        typed = dspy.Predict(Sum)(question="What is 2 plus 3?")
        thought = dspy.ChainOfThought("question -> answer")(question="What is 4 plus 4?")
    assert (typed.answer, typed.count) == ("5", 5)  # the int field parsed as an int
    assert thought.answer == "8" and thought.reasoning.startswith("Adding the numbers")
    first, second = server.requests
    if adapter == "JSONAdapter":  # the signature's output fields, as a strict JSON schema
        schema = first.body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["count"]["type"] == "integer" and schema["required"] == ["answer", "count"]
        assert set(second.body["response_format"]["json_schema"]["schema"]["properties"]) == {"reasoning", "answer"}
    else:
        assert "response_format" not in first.body and "[[ ## count ## ]]" in first.messages[-1]["content"]
    assert "num_retries" not in first.body and "cache" not in first.body  # DSPy's own controls stay home


def test_n_candidates_are_one_request_for_n_choices(custom_role):
    custom_role.reply(*(chat_text({"answer": word}) for word in ("one", "two", "three")))
    program = dspy.Predict("question -> answer")
    with dspy.context(lm=lm("executor")):
        prediction = program(question="Count.", config={"n": 3})
    assert prediction.completions.answer == ["one", "two", "three"]
    assert custom_role.request_count == 1
    sent = custom_role.last_request.body
    assert sent["n"] == 3 and sent["temperature"] == 0.7  # DSPy's default for n > 1
    executor = get_usage_summary()["by_role"]["executor"]
    words = sum(count_tokens(chat_text({"answer": word})) for word in ("one", "two", "three"))
    assert executor["calls"] == 1 and executor["completion_tokens"] == words  # every choice, counted once


def test_rollouts_are_distinct_samples_in_myopto_cache(server, tmp_path):
    serve_role(server, "CustomLLM", "gpt-4o-mini", cache="on", cache_dir=str(tmp_path))
    server.responder = answering(lambda field, body: f"sample {len(server.requests)}")
    program = dspy.Predict("question -> answer")
    base = lm("executor")
    answers = []
    for rollout in (1, 2, 1):
        with dspy.context(lm=base.copy(rollout_id=rollout, temperature=1.0)):
            answers.append(program(question="Say anything.").answer)
    assert answers == ["sample 1", "sample 2", "sample 1"]  # the third is rollout 1's, from the cache
    assert server.request_count == 2


def test_native_tool_calls_come_back_as_dspy_tool_calls(custom_role):
    class Act(dspy.Signature):
        """Use a tool."""

        question: str = dspy.InputField()
        tools: list[dspy.Tool] = dspy.InputField()
        tool_calls: dspy.ToolCalls = dspy.OutputField()

    custom_role.reply(Answer(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 40}}]))
    with dspy.context(lm=lm("executor"), adapter=dspy.JSONAdapter()):
        prediction = dspy.Predict(Act)(question="Add 2 and 40.", tools=[dspy.Tool(add), dspy.Tool(weather)])
    (call,) = prediction.tool_calls.tool_calls
    assert (call.name, call.args) == ("add", {"a": 2, "b": 40})
    assert call.execute() == 42
    sent = custom_role.last_request.body
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["add", "weather"]
    assert sent["tools"][0]["function"]["parameters"]["properties"]["a"]["type"] == "integer"


def test_react_calls_both_tools_then_answers(backend, server):
    server.responder = answering(agent)
    called = []

    def add_logged(a: int, b: int) -> int:
        called.append(("add", a, b))
        return add(a, b)

    def weather_logged(city: str) -> str:
        called.append(("weather", city))
        return weather(city)

    tools = [dspy.Tool(add_logged, name="add"), dspy.Tool(weather_logged, name="weather")]
    with dspy.context(lm=lm("executor")):
        prediction = dspy.ReAct("question -> answer", tools=tools)(question="What is 2+40, and the weather?")
    assert called == [("add", 2, 40), ("weather", "Paris")]
    assert [prediction.trajectory[f"tool_name_{step}"] for step in range(3)] == ["add", "weather", "finish"]
    assert prediction.answer == "42 and sunny in Paris and Completed."
    assert server.request_count == len(AGENT_STEPS) + 1  # each step, then the extraction
    assert "add" in server.requests[0].messages[0]["content"]  # the tools, described to the model


def test_logprobs_reach_the_prediction(custom_role):
    custom_role.reply(chat_text({"answer": "Paris"}))
    with dspy.context(lm=lm("executor")):
        prediction = dspy.Predict("question -> answer")(question="Capital of France?", config={"logprobs": True})
    tokens = [entry["token"] for entry in prediction.logprobs["content"]]
    assert tokens[:2] == ["[[", " ##"] and custom_role.last_request.body["logprobs"] is True
    assert all(entry["logprob"] < 0 for entry in prediction.logprobs["content"])


def test_an_answer_that_fails_the_schema_is_the_adapters_to_judge(custom_role):
    bad = json.dumps({"answer": "five", "count": "not a number"})
    custom_role.reply(bad, bad)  # the answer and myopto's one re-ask
    with dspy.context(lm=lm("executor"), adapter=dspy.JSONAdapter()), pytest.raises(AdapterParseError) as caught:
        dspy.Predict(Sum)(question="What is 2 plus 3?")
    assert "count" in str(caught.value)
    assert custom_role.request_count == 2  # myopto re-asked once, then handed the answer to DSPy


@pytest.mark.parametrize(
    "status, dspy_error, myopto_error", [(429, LMRateLimitError, RateLimited), (400, LMInvalidRequestError, BadRequest)]
)
def test_backend_errors_arrive_as_dspy_errors_caused_by_myopto_errors(custom_role, status, dspy_error, myopto_error):
    custom_role.fail(status, retry_after=2)
    with dspy.context(lm=lm("executor")), pytest.raises(dspy_error) as caught:
        dspy.Predict("question -> answer")(question="x")
    assert myopto_error in cause_chain(caught.value)
    assert custom_role.request_count == 1  # myopto's retries are off for this role, and DSPy's too


def test_a_wrong_key_says_where_to_give_the_role_its_key(server):
    server.api_key = "sk-right"
    serve_role(server, "CustomLLM", "gpt-4o-mini")
    with dspy.context(lm=lm("executor")), pytest.raises(LMAuthError) as caught:
        dspy.Predict("question -> answer")(question="x")
    assert "set_role_config('executor', api_key=...)" in str(caught.value) and "sk-x" not in str(caught.value)


def test_replay_without_a_recording_is_a_configuration_error(server, tmp_path):
    serve_role(server, "CustomLLM", "gpt-4o-mini", cache="replay", cache_dir=str(tmp_path))
    with dspy.context(lm=lm("executor")), pytest.raises(LMConfigurationError) as caught:
        dspy.Predict("question -> answer")(question="never recorded")
    assert CacheMiss in cause_chain(caught.value) and server.request_count == 0


def test_history_and_inspect_history_show_each_call_with_myopto_cost(backend, server, capsys):
    program_lm = lm("executor")
    with dspy.context(lm=program_lm):
        dspy.Predict(Sum)(question="What is 2 plus 3?")
        dspy.ChainOfThought("question -> answer")(question="What is 1 plus 1?")
    assert len(program_lm.history) == 2
    entry = program_lm.history[-1]
    assert entry["model"] == "myopto/executor" and entry["response_model"] == "gpt-4o-mini"
    assert entry["outputs"][0].startswith("[[ ## reasoning ## ]]")
    spent = get_usage_summary()["total_cost"]
    assert spent > 0 and sum(e["cost"] for e in program_lm.history) == pytest.approx(spent)
    program_lm.inspect_history(n=1)
    dspy.inspect_history(n=1)
    shown = capsys.readouterr().out
    assert shown.count("[[ ## question ## ]]\nWhat is 1 plus 1?") == 2 and "Adding the numbers" in shown


def test_usage_lands_in_the_ledger_by_role_and_run_also_from_dspy_threads(custom_role):
    custom_role.responder = answering(arithmetic)
    program = dspy.Predict("question -> answer")
    evaluate = dspy.Evaluate(devset=sums(4), metric=exact_answer, num_threads=2, display_progress=False)
    with dspy.context(lm=lm("executor")):
        with myopto.run("same-thread"):
            program(question="What is 1 plus 2?")
        with run("threads", lr=0.1):
            result = evaluate(program)
    assert result.score == 100.0
    assert get_usage_summary(run="same-thread")["by_role"]["executor"]["calls"] == 1
    assert get_usage_summary(run="threads")["by_role"]["executor"]["calls"] == 4  # from Evaluate's threads


def test_a_run_budget_holds_in_dspy_threads_too(server):
    serve_role(server, "CustomLLM", "gpt-4o-mini")
    server.responder = answering(arithmetic)
    evaluate = dspy.Evaluate(devset=sums(3), metric=exact_answer, num_threads=1, display_progress=False)
    with dspy.context(lm=lm("executor")), run("capped", max_cost_usd=1e-9):
        result = evaluate(dspy.Predict("question -> answer"))
    executor = get_usage_summary(run="capped")["by_role"]["executor"]
    assert (executor["calls"], executor["errors"]) == (3, 2)  # the first call spent the budget
    assert server.request_count == 1 and result.score == pytest.approx(100 / 3, abs=0.01)


def test_a_cache_hit_bills_nothing_in_dspy_history(server, tmp_path):
    serve_role(server, "CustomLLM", "gpt-4o-mini", cache="on", cache_dir=str(tmp_path))
    server.responder = answering(arithmetic)
    program_lm = lm("executor")
    with dspy.context(lm=program_lm):
        for _ in range(2):
            dspy.Predict("question -> answer")(question="What is 2 plus 2?")
    paid, hit = program_lm.history
    assert paid["cost"] > 0 and paid["usage"]["prompt_tokens"] > 0
    assert hit["cost"] == 0 and hit["usage"]["prompt_tokens"] == 0  # as DSPy counts its own cache hits
    recorded = hit["response"].provider_data["myopto"]
    assert recorded["cached"] is True and recorded["saved_cost"] == paid["cost"]
    assert recorded["usage"] == paid["response"].provider_data["myopto"]["usage"]


def test_dspy_cache_and_retries_are_off_by_default_and_can_be_turned_back_on(custom_role):
    plain = lm("executor")
    assert (plain.cache, plain.num_retries) == (False, 0)
    program = dspy.Predict("question -> answer")
    custom_role.responder = answering(arithmetic)
    question = f"What is 1 plus 1? ({uuid.uuid4()})"  # a prompt no earlier run left in DSPy's cache
    with dspy.context(lm=plain):
        program(question=question)
        program(question=question)
    assert custom_role.request_count == 2  # myopto's cache is off for this role, and DSPy's is off
    doubled = lm("executor", cache=True, num_retries=2)
    assert (doubled.cache, doubled.num_retries) == (True, 2)
    with dspy.context(lm=doubled):
        program(question=question + " again")
        program(question=question + " again")
    assert custom_role.request_count == 3  # DSPy's cache served the repeat
    custom_role.fail(503, retry_after=0.01)
    with dspy.context(lm=doubled):
        assert program(question=question + " after a fault").answer  # DSPy retried the 503
    assert custom_role.request_count == 5


def test_dspy_generation_settings_reach_the_request_as_a_role_takes_them(custom_role):
    custom_role.responder = answering(arithmetic)
    with dspy.context(lm=lm("executor", temperature=0.4, max_tokens=64)):
        dspy.Predict("question -> answer")(question="What is 1 plus 1?", config={"stop": ["###"], "seed": 7})
    sent = custom_role.last_request.body
    assert (sent["temperature"], sent["max_tokens"], sent["stop"], sent["seed"]) == (0.4, 64, ["###"], 7)
    assert "max_completion_tokens" not in sent


def test_a_role_that_cannot_work_fails_when_the_lm_is_built():
    set_role_config("critic", backend="CustomLLM", model="m")
    with pytest.raises(myopto.ConfigError):
        lm("")
    with pytest.raises(ValueError, match="myopto/<role>"):
        RoleLM("openai/gpt-4o-mini")
    assert lm("critic").model == "myopto/critic"


def test_a_role_llm_with_overrides_serves_this_lm_only(custom_role):
    overridden = lm(get_llm("executor", temperature=0.3))
    custom_role.responder = answering(arithmetic)
    with dspy.context(lm=overridden):
        dspy.Predict("question -> answer")(question="What is 1 plus 1?")
    assert custom_role.last_request.body["temperature"] == 0.3
    with pytest.raises(TypeError, match="overrides are not saved"):
        overridden.dump_state()


def test_a_program_saved_with_its_lm_loads_back_on_the_same_role(custom_role, tmp_path):
    custom_role.responder = answering(arithmetic)
    program = dspy.Predict("question -> answer")
    program.lm = lm("executor", temperature=0.2)
    program.save(tmp_path / "program.json")
    loaded = dspy.Predict("question -> answer")
    loaded.load(tmp_path / "program.json", allow_unsafe_lm_state=True)
    assert isinstance(loaded.lm, RoleLM) and loaded.lm.role == "executor" and loaded.lm.kwargs["temperature"] == 0.2
    assert loaded(question="What is 3 plus 4?").answer == "7"
    assert custom_role.last_request.body["temperature"] == 0.2


def test_import_myopto_does_not_import_dspy():
    assert modules_loaded_by("import myopto; import myopto.utils", {"dspy", "litellm"}) == []
    assert modules_loaded_by("import myopto.integrations.dspy", {"dspy"}) == ["dspy"]
