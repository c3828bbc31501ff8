"""Everything the model said, kept: tool calls, logprobs, reasoning, cached-token usage and `n`
choices, from the provider through CustomLLM and LiteLLM into the Response, the disk and Redis
caches, and a replay in a new process with the server gone. Real HTTP to the test server, the
real `openai` and `litellm` clients, a real redis-server, real processes."""

import json
import os
import subprocess
import sys

import pytest
from testkit import HTTP_BACKENDS, PLAIN_ANSWER_FIELDS, use_cache

from myopto import BudgetExceeded, InvalidRequest, get_llm, set_role_config
from myopto.pricing import cost_from_map
from myopto.testing import FakeOpenAIServer
from myopto.testing.server import Answer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
        },
    }
]

# The same calls, in the same order, in the first run and in the replay.
EXPERIMENT = """
import json, os
from myopto import get_llm, set_role_config

where = {"cache_dir": os.environ["DIR"]} if os.environ.get("DIR") else {"cache_url": os.environ["REDIS"]}
set_role_config("executor", backend=os.environ["BACKEND"], model=os.environ["MODEL"], base_url=os.environ["URL"],
                api_key="sk-x", retries=0, **where)
llm = get_llm()
tools = json.loads(os.environ["TOOLS"])
answers = [
    llm("What is 2 + 3? Use the tool.", tools=tools, tool_choice="auto"),
    llm("Say three words", logprobs=True, top_logprobs=2),
    llm("Think first, then answer"),
    llm("the long instructions an optimiser sends every step, which the provider has cached"),
    llm("Four ideas, please", n=4, temperature=1.0),
]
print(json.dumps([{"record": answer.to_dict(), "dump": answer.model_dump(), "cached": answer.cached}
                  for answer in answers]))
"""


def queue_answers(server):
    server.reply(
        Answer(tool_calls=[{"id": "call_add_1", "name": "add", "arguments": {"a": 2, "b": 3}}]),
        "alpha beta gamma",
        Answer(content="42", reasoning_content="six times seven is forty two"),
        Answer(content="ok", usage={"prompt_tokens_details": {"cached_tokens": 12}}),
        "idea one",
        "idea two",
        "idea three",
        "idea four",
    )


def run_experiment(tmp_path, backend, url, mode, store):
    script = tmp_path / "experiment.py"
    script.write_text(EXPERIMENT)
    env = {
        **os.environ,
        "BACKEND": backend,
        "MODEL": HTTP_BACKENDS[backend],
        "URL": url,
        "MYOPTO_CACHE": mode,
        "TOOLS": json.dumps(TOOLS),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        **store,
    }
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def without_call_facts(record):
    """A stored answer minus what differs between a call and its replay by design."""
    return {name: value for name, value in record.items() if name not in ("cached", "latency", "attempts")}


@pytest.mark.parametrize("backend", sorted(HTTP_BACKENDS))
@pytest.mark.parametrize("store", ["disk", "redis"])
def test_every_part_of_an_answer_survives_a_replay_in_a_new_process_with_the_server_gone(
    tmp_path, request, backend, store
):
    if store == "disk":
        where = {"DIR": str(tmp_path / "cache")}
    else:
        where = {"REDIS": request.getfixturevalue("redis_server").url}
    with FakeOpenAIServer() as live:
        url = live.url
        queue_answers(live)
        first = run_experiment(tmp_path, backend, url, "on", where)
        assert live.request_count == 5
    replay = run_experiment(tmp_path, backend, url, "replay", where)  # nothing listens at `url` now

    tool_call, logprobs, reasoning, cached_tokens, four = (item["record"] for item in first)
    call = tool_call["choices"][0]["message"]["tool_calls"][0]
    assert call == {
        "id": "call_add_1",
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
    }
    assert tool_call["finish_reason"] == "tool_calls" and tool_call["choices"][0]["message"]["content"] is None
    tokens = logprobs["choices"][0]["logprobs"]["content"]
    assert [token["token"] for token in tokens] == ["alpha", " beta", " gamma"]
    assert [len(token["top_logprobs"]) for token in tokens] == [2, 2, 2]
    assert reasoning["choices"][0]["message"]["reasoning_content"] == "six times seven is forty two"
    assert reasoning["usage"]["completion_tokens_details"] == {"reasoning_tokens": 6}
    assert cached_tokens["usage"]["prompt_tokens_details"] == {"cached_tokens": 12}
    assert [choice["message"]["content"] for choice in four["choices"]] == [
        "idea one",
        "idea two",
        "idea three",
        "idea four",
    ]

    for live_answer, replayed in zip(first, replay, strict=True):
        assert replayed["cached"] is True and live_answer["cached"] is False
        assert without_call_facts(replayed["record"]) == without_call_facts(live_answer["record"])
        assert replayed["dump"] == live_answer["dump"]  # the OpenAI-shaped view, every field


@pytest.fixture(params=sorted(HTTP_BACKENDS))
def role(request, server, tmp_path):
    backend = request.param
    use_cache(server, tmp_path / "cache", backend=backend, model=HTTP_BACKENDS[backend])
    return backend


def test_tool_calls_are_the_response_s_own_data_not_only_raw(role, server):
    server.reply(
        Answer(
            tool_calls=[
                {"id": "call_1", "name": "add", "arguments": {"a": 1, "b": 2}},
                {"id": "call_2", "name": "add", "arguments": '{"a": 3, "b": 4}'},
            ]
        )
    )
    response = get_llm()("add things", tools=TOOLS, tool_choice="required")
    calls = response.choices[0].message.tool_calls
    assert [(call.id, call.type, call.function.name, json.loads(call.function.arguments)) for call in calls] == [
        ("call_1", "function", "add", {"a": 1, "b": 2}),
        ("call_2", "function", "add", {"a": 3, "b": 4}),
    ]
    assert response["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] == '{"a": 3, "b": 4}'
    assert response.finish_reason == response.choices[0].finish_reason == "tool_calls"
    assert response.text == "" and response.choices[0].message.content is None
    assert server.last_request.body["tools"] == TOOLS and server.last_request.body["tool_choice"] == "required"
    hit = get_llm()("add things", tools=TOOLS, tool_choice="required")
    assert hit.cached and hit.choices == response.choices and server.request_count == 1


def test_logprobs_and_reasoning_reach_the_response(role, server):
    server.reply(Answer(content="red green", reasoning_content="colours are easy"))
    response = get_llm()("two colours", logprobs=True, top_logprobs=3)
    choice = response.choices[0]
    assert choice.message.reasoning_content == "colours are easy"
    assert [(token.token, token.logprob) for token in choice.logprobs.content] == [("red", -0.125), (" green", -0.25)]
    assert [top.token for top in choice.logprobs.content[1].top_logprobs] == [" green", " green~1", " green~2"]
    assert choice.logprobs.content[0].bytes == tuple(b"red")
    assert response.usage.completion_tokens == 5 and response.usage.completion_tokens_details.reasoning_tokens == 3
    assert response.model_dump()["choices"][0]["logprobs"]["content"][0]["token"] == "red"


def test_n_choices_come_back_with_usage_and_cost_of_all_of_them_and_a_hit_returns_the_same(role, server):
    server.reply("first answer", "second one here", "third", "the fourth answer now")
    response = get_llm()("give me four", n=4, temperature=1.0)
    assert server.last_request.body["n"] == 4
    assert [choice.index for choice in response.choices] == [0, 1, 2, 3]
    assert [choice.message.content for choice in response.choices] == [
        "first answer",
        "second one here",
        "third",
        "the fourth answer now",
    ]
    assert response.text == "first answer"
    assert response.usage.prompt_tokens == 3 and response.usage.completion_tokens == 2 + 3 + 1 + 4
    assert response.cost == pytest.approx(cost_from_map("gpt-4o-mini", 3, 10), rel=1e-12)
    hit = get_llm()("give me four", n=4, temperature=1.0)
    assert server.request_count == 1 and hit.cached
    assert hit.choices == response.choices and hit.usage == response.usage and hit.cost == response.cost


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", True, 2.0])
def test_n_that_is_not_a_whole_number_of_one_or_more_is_refused_before_sending(custom_role, n):
    with pytest.raises(InvalidRequest, match="n must be a positive integer"):
        get_llm()("x", n=n)
    assert custom_role.request_count == 0


def test_cached_prompt_tokens_cost_the_same_on_both_backends_and_what_litellm_charges(server):
    """1M prompt tokens of which 900k came from the provider's prompt cache, on gpt-4o-mini."""
    import litellm
    from litellm import ModelResponse
    from litellm.types.utils import CompletionTokensDetailsWrapper, PromptTokensDetailsWrapper, Usage

    usage = {
        "prompt_tokens": 1_000_000,
        "completion_tokens": 1000,
        "prompt_tokens_details": {"cached_tokens": 900_000},
        "completion_tokens_details": {"reasoning_tokens": 400},
    }
    costs = {}
    for backend, model in HTTP_BACKENDS.items():
        set_role_config("executor", backend=backend, model=model, base_url=server.url, api_key="sk-x", retries=0)
        server.reply(Answer(content="fine", usage=usage))
        response = get_llm()("x")
        assert response.usage.prompt_tokens_details.cached_tokens == 900_000
        assert response.usage["completion_tokens_details"]["reasoning_tokens"] == 400
        costs[backend] = response.cost
    theirs = litellm.completion_cost(
        completion_response=ModelResponse(
            model="gpt-4o-mini",
            usage=Usage(
                prompt_tokens=1_000_000,
                completion_tokens=1000,
                total_tokens=1_001_000,
                prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=900_000),
                completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=400),
            ),
        ),
        model="gpt-4o-mini",
    )
    assert costs["CustomLLM"] == pytest.approx(costs["LiteLLM"], rel=1e-12)
    assert costs["CustomLLM"] == pytest.approx(theirs, rel=1e-12)
    # 100k at $0.15/M, 900k at the $0.075/M cache-read price, 1000 completion tokens at $0.60/M
    assert costs["CustomLLM"] == pytest.approx(0.015 + 0.0675 + 0.0006, rel=1e-12)


def test_a_budget_is_spent_at_the_cache_read_price(server):
    set_role_config(
        "executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, retries=0, max_cost_usd=0.1
    )
    cached = {"prompt_tokens": 1_000_000, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 900_000}}
    server.reply(Answer(content="a", usage=cached), Answer(content="b", usage=cached))
    assert get_llm()("one").cost == pytest.approx(0.0825)
    get_llm()("two")  # $0.0825 spent of $0.10: allowed (at the full input price $0.15 would have been spent)
    with pytest.raises(BudgetExceeded, match=r"spent \$0\.1650"):
        get_llm()("three")
    assert server.request_count == 2


def test_a_record_written_before_choices_existed_is_still_served(custom_role, tmp_path):
    set_role_config("executor", cache="on", cache_dir=str(tmp_path / "old"))
    first = get_llm()("hello")
    store = next(m for m in get_llm().pipeline.middleware if m.name == "cache").store
    ((key, record),) = store.items()
    assert set(record["response"]) == PLAIN_ANSWER_FIELDS  # a plain answer: today's shape
    old = {
        **record,
        "response": {
            "text": "from an old record",
            "model": "test-model",
            "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
            "cost": None,
            "parsed": None,
            "cached": False,
            "latency": 0.5,
            "finish_reason": "stop",
            "id": "chatcmpl-old",
            "created": 1700000000,
        },
    }
    store.set(key, old)
    hit = get_llm()("hello")
    assert hit.cached and hit.text == "from an old record" and first.text == "echo: hello"
    assert hit.choices[0].message.content == "from an old record" and hit.choices[0].message.tool_calls is None
    assert hit.usage.prompt_tokens_details.cached_tokens == 0 and len(hit.choices) == 1
    assert custom_role.request_count == 1


@pytest.mark.parametrize(
    "damage, problem",
    [
        ({"choices": []}, "'response.choices' is empty"),
        ({"choices": [{"message": {"content": 5}}]}, "content is text"),
        (
            {"choices": [{"message": {"content": "x", "tool_calls": [{"id": "c", "function": {"name": 3}}]}}]},
            "are text",
        ),
        (
            {"choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"token": "x", "logprob": "high"}]}}]},
            "logprob is a number",
        ),
        ({"choices": [{"message": {"content": "x"}, "surprise": 1}]}, "'surprise'"),
        ({"usage": {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1.5}}}, "not a whole number"),
        ({"usage": {"prompt_tokens": 1, "completion_tokens_details": {"thinking": 2}}}, "'thinking'"),
    ],
)
def test_a_stored_answer_whose_new_parts_are_damaged_is_a_damaged_entry(damage, problem):
    from myopto.errors import DamagedCacheEntry
    from myopto.stores.memory import decode_record

    record = {"version": 1, "response": {"text": "x", **damage}}
    with pytest.raises(DamagedCacheEntry, match=problem):
        decode_record(json.dumps(record), key="k" * 64, location="test")


def test_an_export_with_every_part_imports_and_a_damaged_line_is_refused(role, server, tmp_path):
    from myopto.cache_transfer import export_file, import_records
    from myopto.stores.disk import disk_store

    server.reply(Answer(tool_calls=[{"name": "add", "arguments": {"a": 1, "b": 1}}]), "one", "two")
    get_llm()("tool", tools=TOOLS)
    get_llm()("two ways", n=2, logprobs=True)
    store = next(m for m in get_llm().pipeline.middleware if m.name == "cache").store
    exported = tmp_path / "export.jsonl"
    assert export_file(store, exported) == (2, [])
    lines = exported.read_text().splitlines()
    damaged = json.loads(lines[1])
    damaged["response"]["choices"][1]["message"]["tool_calls"] = "add"
    exported.write_text("\n".join([lines[0], json.dumps(damaged)]) + "\n")
    target = disk_store(tmp_path / "imported")
    report = import_records(target, exported)
    assert report.imported == 1 and len(report.problems) == 1 and "tool_calls" in report.problems[0][1]
    expected = json.loads(lines[0])
    ((key, record),) = target.items()
    assert key == expected.pop("key") and record == expected
    assert record["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "add"
