"""One cache for DSPy programs, myopto's: a rerun sends nothing, a replay needs no server, an
optimiser compiles on a role, and two processes compiling the same program with the cache on
Redis send each distinct prompt once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

dspy = pytest.importorskip("dspy")

from dspy.streaming import StreamListener, StreamResponse  # noqa: E402
from dspy.utils.exceptions import LMConfigurationError  # noqa: E402
from dspy_kit import (  # noqa: E402
    Sum,
    add,
    agent,
    answering,
    arithmetic,
    compile_and_evaluate,
    serve_role,
    weather,
)
from testkit import HTTP_BACKENDS, finish_or_fail  # noqa: E402

from myopto import CacheMiss, get_usage_summary, set_role_config  # noqa: E402
from myopto.integrations.dspy import lm  # noqa: E402
from myopto.testing import FakeOpenAIServer  # noqa: E402

CHILD = Path(__file__).resolve().parents[1] / "data" / "dspy_compile.py"


def model(field: str, body: dict[str, Any]) -> Any:
    """ReAct's steps for the agent, sums for everything else."""
    return (
        agent(field, body) if "[[ ## trajectory ## ]]" in body["messages"][-1]["content"] else arithmetic(field, body)
    )


async def streamed(question: str) -> tuple[list[str], str]:
    program = dspy.streamify(
        dspy.Predict("question -> answer"), stream_listeners=[StreamListener(signature_field_name="answer")]
    )
    pieces, answer = [], ""
    async for value in program(question=question):
        if isinstance(value, StreamResponse):
            pieces.append(value.chunk)
        elif isinstance(value, dspy.Prediction):
            answer = value.answer
    return pieces, answer


def whole_program() -> list[Any]:
    """Every kind of call a DSPy program makes, on the executor: both adapters, ChainOfThought,
    ReAct with two tools, n=3, async and streamed. What each returned."""
    outputs: list[Any] = []
    with dspy.context(lm=lm("executor")):
        outputs.append(dspy.Predict(Sum)(question="What is 1 plus 2?").toDict())
        with dspy.context(adapter=dspy.JSONAdapter()):
            outputs.append(dspy.Predict(Sum)(question="What is 3 plus 4?").toDict())
            outputs.append(dspy.ChainOfThought("question -> answer")(question="What is 5 plus 6?").answer)
        react = dspy.ReAct("question -> answer", tools=[dspy.Tool(add), dspy.Tool(weather)])
        outputs.append(react(question="Add, then the weather.").answer)
        outputs.append(
            dspy.Predict("question -> answer")(question="What is 7 plus 8?", config={"n": 3}).completions.answer
        )
        outputs.append(asyncio.run(dspy.Predict("question -> answer").acall(question="What is 9 plus 9?")).answer)
        outputs.append(asyncio.run(streamed("What is 10 plus 10?")))
    return outputs


@pytest.mark.parametrize("backend", list(HTTP_BACKENDS))
def test_a_rerun_sends_nothing_and_a_replay_needs_no_server(backend, tmp_path):
    with FakeOpenAIServer(answering(model)) as server:
        serve_role(server, backend, HTTP_BACKENDS[backend], cache="on", cache_dir=str(tmp_path))
        first = whole_program()
        sent = server.request_count
        again = whole_program()
        assert server.request_count == sent  # every call of the rerun came from myopto's cache
    assert first[0] == {"answer": "3", "count": 3} and first[3] == "42 and sunny in Paris and Completed."
    assert first[6][1] == "20" and len(first[6][0]) > 1  # streamed in pieces
    assert again == first
    set_role_config("executor", cache="replay")  # the server is gone: a replay reads the recording
    assert whole_program() == first
    with dspy.context(lm=lm("executor")), pytest.raises(LMConfigurationError) as caught:
        dspy.Predict("question -> answer")(question="A question never asked.")
    assert isinstance(caught.value.__cause__.__cause__, CacheMiss)
    executor = get_usage_summary()["by_role"]["executor"]
    assert (executor["calls"], executor["cache_hits"], executor["errors"]) == (3 * sent + 1, 2 * sent, 1)


def test_bootstrap_few_shot_compiles_on_a_role_and_its_evaluation_runs(custom_role):
    custom_role.responder = answering(arithmetic)
    with dspy.context(lm=lm("executor")):
        demos, score = compile_and_evaluate()
    assert demos == ["What is 1 plus 2?", "What is 2 plus 3?"] and score == 100.0
    evaluation = [r for r in custom_role.requests if "What is 10 plus 11?" in r.messages[-1]["content"]]
    assert len(evaluation) == 1 and any("What is 1 plus 2?" in m["content"] for m in evaluation[0].messages)


def test_two_processes_compiling_with_a_redis_cache_send_each_prompt_once(server, redis_server):
    server.responder = answering(arithmetic)
    server.latency = 0.05  # calls overlap: the processes meet in flight, not only in the cache
    env = {**os.environ, "URL": server.url, "REDIS_URL": redis_server.url, "MYOPTO_CACHE_NAMESPACE": "dspy-fleet"}
    workers = [
        subprocess.Popen(
            [sys.executable, str(CHILD)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    results = []
    for worker in workers:
        out, err = finish_or_fail(worker, 240, "a compiling process hung")
        assert worker.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    prompts = [json.dumps(request.body, sort_keys=True) for request in server.requests]
    # two bootstrapping calls (it stops at max_bootstrapped_demos) and three evaluation calls, once each
    assert len(prompts) == len(set(prompts)) == 5
    first, second = results
    assert first["demos"] == second["demos"] and first["score"] == second["score"] == 100.0
    sent_by_each = [result["calls"] - result["cache_hits"] for result in results]
    assert sum(sent_by_each) == len(prompts)  # what each process did not get from the other was sent once
