"""Workloads 1, 2, 3 and 8: what myopto adds to a call, against the anchors measured beside it.

Cold imports (above `python -c pass`), the default chain on a backend that does no I/O, HTTP
through a CustomLLM or LiteLLM role against the raw openai SDK and `litellm.completion` on a
loopback server, and the tracing layer off and on (in a fresh process, so OpenTelemetry's import
is seen).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from stats import MESSAGES, Row, per_call_us, ratio_to, rounds, run_python

HERE = Path(__file__).resolve().parent


def cold_imports(repeats: int) -> list[Row]:
    env = {**os.environ}
    rows = {}
    for name, code in (
        ("import myopto", "import myopto"),
        ("import litellm", "import litellm"),
        ("import dspy", "import dspy"),
    ):
        rows[name] = Row("1 cold import", name, rounds(functools.partial(run_python, code, env), repeats), "s")
    baseline = Row("1 cold import", "python -c pass", rounds(lambda: run_python("pass", env), repeats), "s")
    for row in rows.values():
        row.samples = [max(s - baseline.median, 0.0) for s in row.samples]
    ratio_to(rows["import myopto"], rows["import litellm"])
    rows["import myopto"].goal = "light: no SDK imported"
    ratio_to(rows["import dspy"], rows["import litellm"])
    rows["import myopto"].note = "measured as the time above `python -c pass`"
    return [rows["import myopto"], rows["import litellm"], rows["import dspy"]]


def chain_overhead(repeats: int, calls: int) -> list[Row]:
    from myopto import Pipeline, Request, Response, get_llm, set_role_config
    from myopto.testing import EchoBackend

    backend = EchoBackend()
    set_role_config("bench", backend="CustomLLM", model="m", base_url="http://127.0.0.1:9/v1", cache="off")
    default = get_llm("bench").pipeline.middleware
    request = Request(model="m", messages=MESSAGES, role="bench")
    bare = Row(
        "2 chain overhead",
        "backend alone (EchoBackend, no I/O)",
        rounds(lambda: per_call_us(lambda: backend.complete(request), calls), repeats),
        "µs/call",
    )
    chain = Pipeline(backend, default)
    off = Row(
        "2 chain overhead",
        "default chain, cache off",
        rounds(lambda: per_call_us(lambda: chain(request), calls), repeats),
        "µs/call",
    )
    directory = tempfile.mkdtemp(prefix="myopto-bench-")
    set_role_config(
        "bench-cache", backend="CustomLLM", model="m", base_url="http://127.0.0.1:9/v1", cache="on", cache_dir=directory
    )
    cached_chain = Pipeline(backend, get_llm("bench-cache").pipeline.middleware)
    counter = iter(range(10**9))

    def miss() -> None:
        cached_chain(Request(model="m", messages=[{"role": "user", "content": f"miss {next(counter)}"}], role="bench"))

    on = Row(
        "2 chain overhead",
        "default chain, cache on (miss, written to disk)",
        rounds(lambda: per_call_us(miss, max(calls // 10, 50)), repeats),
        "µs/call",
    )
    llm = get_llm("bench")
    build = Row(
        "2 chain overhead",
        "building the Request in llm(...)",
        rounds(lambda: per_call_us(lambda: llm.request(MESSAGES), calls), repeats),
        "µs/call",
    )

    def passthrough(request: Request, call_next: Callable[[Request], Response]) -> Response:
        return call_next(request)

    plus = chain
    for index in range(10):
        plus = plus.insert(passthrough, name=f"pass{index}")
    with_ten = rounds(lambda: per_call_us(lambda: plus(request), calls), repeats)
    added = Row(
        "2 chain overhead",
        "per added pass-through middleware",
        [(a - b) / 10 for a, b in zip(with_ten, off.samples, strict=True)],
        "µs/call",
    )
    for row in (off, on, build):
        row.note = f"+{row.median - bare.median:.1f} µs over the backend"
    ratio_to(off, bare)
    return [bare, off, on, build, added]


def http_overhead(repeats: int, calls: int) -> list[Row]:
    import litellm
    import openai

    from myopto import get_llm, set_role_config
    from myopto.testing import FakeOpenAIServer

    rows = []
    with FakeOpenAIServer() as server:
        client = openai.OpenAI(base_url=server.url, api_key="sk-bench", max_retries=0)
        set_role_config(
            "bench-custom", backend="CustomLLM", model="m", base_url=server.url, api_key="sk-bench", cache="off"
        )
        set_role_config(
            "bench-litellm", backend="LiteLLM", model="openai/m", base_url=server.url, api_key="sk-bench", cache="off"
        )
        ours_custom, ours_lite = get_llm("bench-custom"), get_llm("bench-litellm")
        for _ in range(20):  # warm-up
            client.chat.completions.create(model="m", messages=MESSAGES)
            ours_custom(MESSAGES)
            litellm.completion(
                model="openai/m", messages=MESSAGES, api_base=server.url, api_key="sk-bench", max_retries=0
            )
            ours_lite(MESSAGES)
        raw_sdk, ours_sdk, raw_lite, ours_l = [], [], [], []
        for _ in range(repeats):  # interleaved, so drift hits both sides alike
            raw_sdk.append(per_call_us(lambda: client.chat.completions.create(model="m", messages=MESSAGES), calls))
            ours_sdk.append(per_call_us(lambda: ours_custom(MESSAGES), calls))
            raw_lite.append(
                per_call_us(
                    lambda: litellm.completion(
                        model="openai/m", messages=MESSAGES, api_base=server.url, api_key="sk-bench", max_retries=0
                    ),
                    calls,
                )
            )
            ours_l.append(per_call_us(lambda: ours_lite(MESSAGES), calls))
        a = Row("3 HTTP, 0 ms server", "raw openai SDK", raw_sdk, "µs/call")
        b = ratio_to(Row("3 HTTP, 0 ms server", "myopto CustomLLM role", ours_sdk, "µs/call", goal="≤ 1.05"), a)
        c = Row("3 HTTP, 0 ms server", "raw litellm.completion", raw_lite, "µs/call")
        d = ratio_to(Row("3 HTTP, 0 ms server", "myopto LiteLLM role", ours_l, "µs/call", goal="≤ 1.05"), c)
        rows += [a, b, c, d]
    return rows


TRACING_SCRIPT = """
import json, sys
from stats import per_call_us, rounds
from myopto import Pipeline, Request, get_llm, set_role_config
from myopto.testing import EchoBackend
repeats, calls = int(sys.argv[1]), int(sys.argv[2])
set_role_config("bench", backend="CustomLLM", model="m", base_url="http://127.0.0.1:9/v1", cache="off")
chain = Pipeline(EchoBackend(), get_llm("bench").pipeline.middleware)
request = Request(model="m", messages=[{"role": "user", "content": "hello benchmark"}], role="bench")
without = Pipeline(EchoBackend(), [m for m in chain.middleware if m.name != "tracing"])
off, bare = [], []
for _ in range(repeats):  # interleaved, so drift hits both alike
    off.append(per_call_us(lambda: chain(request), calls))
    bare.append(per_call_us(lambda: without(request), calls))
imported = "opentelemetry" in sys.modules
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
class Drop(SpanExporter):
    def export(self, spans): return SpanExportResult.SUCCESS
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(Drop()))
trace.set_tracer_provider(provider)
on = rounds(lambda: per_call_us(lambda: chain(request), calls), repeats)
print(json.dumps({"off": off, "bare": bare, "on": on, "imported_when_off": imported}))
"""


def tracing_cost(repeats: int, calls: int) -> list[Row]:
    """The default chain with tracing off (no provider, nothing imported) and on (the SDK with a
    batch processor and an exporter that drops spans), in a fresh process."""
    script = Path(tempfile.mkdtemp()) / "tracing.py"
    script.write_text(TRACING_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    out = subprocess.run(
        [sys.executable, str(script), str(repeats), str(calls)], check=True, capture_output=True, text=True, env=env
    ).stdout
    measured = json.loads(out.strip().splitlines()[-1])
    off = Row("8 tracing", "default chain, tracing off (no provider)", measured["off"], "µs/call")
    off.note = "OpenTelemetry imported while off: " + ("yes" if measured["imported_when_off"] else "no")
    on = ratio_to(
        Row(
            "8 tracing",
            "default chain, tracing on (SDK, batch processor, dropping exporter)",
            measured["on"],
            "µs/call",
        ),
        off,
    )
    on.note = f"+{on.median - off.median:.1f} µs a call for the span"
    layer = Row(
        "8 tracing",
        "the tracing layer while off (chain with it minus chain without it)",
        [a - b for a, b in zip(measured["off"], measured["bare"], strict=True)],
        "µs/call",
        goal="< 1 µs",
    )
    return [off, on, layer]
