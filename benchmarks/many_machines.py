"""Workload 7: many machines sharing one Redis: a hit in a new process beside disk and DSPy, the
Redis round trips a call costs, and 4 processes sharing single flight against one process alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cache_hits import HIT_SCRIPT
from stats import Row, ratio_to

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
            trips: float = json.loads(out.strip().splitlines()[-1])
            return trips

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
        one = Row("7 many machines", "1 process: 100 prompts × 20 ms, 4 threads, Redis cache", alone, "s")  # noqa: RUF001 - the multiplication sign, as the results table prints it
        anchor = Row("7 many machines", "4 processes, 100 prompts of their own each", apart, "s")
        anchor.note = f"the backend saw {apart_calls} calls (4 × 100 prompts of their own, 1 shared warm-up)"  # noqa: RUF001 - the multiplication sign, as the results table prints it
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
        together_row.note = f"the backend saw {shared_calls} calls for the 4 × 101 asks"  # noqa: RUF001 - the multiplication sign, as the results table prints it
        rows += [one, anchor, together_row]
    return rows
