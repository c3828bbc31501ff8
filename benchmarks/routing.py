"""Workload 12: what routing over a role's deployments adds to a call (goal: <= 2 µs from one
deployment to three).

The same role with one deployment and with three, measured alternately in one process: once
with each deployment's backend answering at once in-process (`EchoBackend`, no I/O: the chain's
own cost, and the role with one model beside it; in CPU time of the calling thread, so other
processes on the machine do not blur a difference of a microsecond), once over HTTP through the
openai client against test servers that answer at once (the figure a user sees, wall time; the
difference between one and three is within this row's noise, which the in-process rows resolve).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stats import MESSAGES, Row, per_call_us, ratio_to

ROUTING = "12 routing"


def _role(name: str, urls: list[str]) -> Any:
    from myopto import get_llm, set_role_config

    set_role_config(
        name,
        deployments=[
            {"name": f"d{i}", "backend": "CustomLLM", "model": "m", "base_url": url} for i, url in enumerate(urls)
        ],
        routing="weighted",
        cache="off",
    )
    return get_llm(name)


def _answer_in_process(llm: Any) -> Any:
    """The role with each deployment's backend swapped for one that answers in-process."""
    from myopto import Pipeline
    from myopto.testing import EchoBackend

    for deployment in llm.pipeline.backend.deployments:
        deployment.pipeline = Pipeline(EchoBackend(), deployment.pipeline.middleware)
    return llm


def cpu_us(function: Callable[[], object], calls: int) -> float:
    """CPU microseconds this thread spends per call of `function`: on a shared machine the time
    other processes take is not counted, so a difference of a microsecond can be seen."""
    start = time.thread_time()
    for _ in range(calls):
        function()
    return (time.thread_time() - start) / calls * 1e6


def routing_overhead(repeats: int, calls: int) -> list[Row]:
    from myopto import Pipeline, get_llm, set_role_config
    from myopto.testing import EchoBackend, FakeOpenAIServer

    # whole calls, `llm(messages)`: the request built (the group's endpoint for its key), routed, answered
    one = _role("bench-one", ["http://127.0.0.1:9/v1"])
    three = _role("bench-three", [f"http://127.0.0.{i}:9/v1" for i in (1, 2, 3)])
    set_role_config("bench-plain", backend="CustomLLM", model="m", base_url="http://127.0.0.1:9/v1", cache="off")
    # swapped once every role is set: a change of any role's config builds every chain anew
    one, three = _answer_in_process(one), _answer_in_process(three)
    plain_llm = get_llm("bench-plain")
    plain = Pipeline(EchoBackend(), plain_llm.pipeline.middleware)
    echo, echo_request = EchoBackend(), plain_llm.request(MESSAGES)
    calls_of: dict[str, Callable[[], object]] = {
        "echo": lambda: echo.complete(echo_request),
        "plain": lambda: plain(plain_llm.request(MESSAGES)),
        "one": lambda: one(MESSAGES),
        "three": lambda: three(MESSAGES),
    }
    samples: dict[str, list[float]] = {name: [] for name in calls_of}
    for _ in range(repeats * 8):  # interleaved in short rounds, so drift hits all alike
        echo.requests.clear()
        for name, call in calls_of.items():
            samples[name].append(cpu_us(call, max(calls // 8, 1)))
    unit = "CPU µs/call"
    speed = Row(ROUTING, "backend alone (EchoBackend, no I/O): this machine's speed", samples["echo"], unit)
    speed.note = "workload 2 measures the same call; a goal in µs holds on a machine of that speed"
    plain_row = Row(ROUTING, "role with one model (EchoBackend, no I/O)", samples["plain"], unit)
    one_row = ratio_to(Row(ROUTING, "one deployment (EchoBackend, no I/O)", samples["one"], unit), plain_row)
    one_row.note = f"+{one_row.median - plain_row.median:.1f} µs of CPU for the deployments layer"
    three_row = ratio_to(
        Row(ROUTING, "three deployments, weighted (EchoBackend, no I/O)", samples["three"], unit), one_row
    )
    added = Row(
        ROUTING,
        "routing three deployments instead of one (no I/O)",
        [a - b for a, b in zip(samples["three"], samples["one"], strict=True)],
        unit,
        goal="≤ 2 µs",
    )
    added.note = "the median of each round's three-deployment figure minus the one-deployment figure beside it"
    rows = [speed, plain_row, one_row, three_row, added]

    servers = [FakeOpenAIServer().start() for _ in range(3)]
    try:
        http_one = _role("bench-http-one", [servers[0].url])
        http_three = _role("bench-http-three", [server.url for server in servers])
        for _ in range(20):  # warm-up: clients built, connections open
            http_one(MESSAGES)
            http_three(MESSAGES)
        http: dict[str, list[float]] = {"one": [], "three": []}
        for _ in range(repeats):
            http["one"].append(per_call_us(lambda: http_one(MESSAGES), calls // 10))
            http["three"].append(per_call_us(lambda: http_three(MESSAGES), calls // 10))
    finally:
        for server in servers:
            server.stop()
    http_one_row = Row("12 routing, HTTP 0 ms", "one deployment (CustomLLM)", http["one"], "µs/call")
    http_three_row = ratio_to(
        Row("12 routing, HTTP 0 ms", "three deployments, weighted (CustomLLM)", http["three"], "µs/call"), http_one_row
    )
    http_three_row.note = f"{http_three_row.median - http_one_row.median:+.1f} µs against one deployment"
    return [*rows, http_one_row, http_three_row]


if __name__ == "__main__":
    import os
    import sys

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from stats import table

    quick = "--quick" in sys.argv
    print(table(routing_overhead(3 if quick else 5, 2000 if quick else 10000)))
