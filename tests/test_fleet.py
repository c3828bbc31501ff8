"""Many worker processes, one redis-server, one test server: single flight across processes,
a SIGKILLed lease owner, shared rate limits, a fleet-wide pause after a 429, a shared budget.

Every worker is a real process (tests/data/fleet_worker.py); the server's own timestamps say
when requests arrived.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import testkit
from testkit import worker_result

from myopto.parsing import content_text
from myopto.testing import FakeOpenAIServer

WORKER = Path(__file__).parent / "data" / "fleet_worker.py"


def start_worker(spec: dict, env: dict) -> subprocess.Popen:
    return testkit.start_worker(WORKER, spec, env)


def last_user(body: dict) -> str:
    return content_text(body["messages"][-1]["content"])


def fleet_env(redis_server, tmp_path, name: str, **extra: str) -> dict:
    return {
        "MYOPTO_CACHE": "on",
        "MYOPTO_CACHE_URL": redis_server.url,
        "MYOPTO_CACHE_DIR": str(tmp_path / f"disk-{name}"),
        **extra,
    }


def test_four_workers_asking_the_same_prompts_make_one_backend_call_each(redis_server, tmp_path):
    def slow_unique_answer(body):
        time.sleep(random.uniform(0.05, 0.15))
        return f"{last_user(body)} #{uuid.uuid4().hex[:8]}"  # two calls would give two answers

    shared = [f"shared question {i}" for i in range(30)]
    with FakeOpenAIServer(slow_unique_answer) as backend:
        workers = []
        for worker in range(4):
            prompts = random.Random(worker).sample(shared, len(shared)) + [
                f"worker {worker} own {i}" for i in range(10)
            ]
            spec = {"base_url": backend.url, "prompts": prompts, "threads": 4, "role": {"retries": 0}}
            workers.append(start_worker(spec, fleet_env(redis_server, tmp_path, str(worker))))
        results = [worker_result(worker) for worker in workers]
        assert backend.request_count == 70
        assert sorted(request.last_user_content for request in backend.requests) == sorted(
            shared + [f"worker {w} own {i}" for w in range(4) for i in range(10)]
        )
    for outcome in results:
        assert outcome["errors"] == {}
        assert len(outcome["answers"]) == 40
    for prompt in shared:
        assert len({outcome["answers"][prompt] for outcome in results}) == 1
    # every shared answer was made once and served from the cache to the other three workers
    assert sum(outcome["cached"][prompt] for outcome in results for prompt in shared) == 3 * 30


def test_a_killed_lease_owner_costs_at_most_one_extra_request_and_nobody_hangs(redis_server, tmp_path):
    release = threading.Event()
    calls = {"slow": 0}
    lock = threading.Lock()

    def answer(body):
        with lock:
            calls["slow"] += 1
            first = calls["slow"] == 1
        if first:
            release.wait(60)  # the owner's call hangs until the test is done
        return f"answer #{uuid.uuid4().hex[:8]}"

    lease = 1.5
    env = {"MYOPTO_CACHE_LEASE_SECONDS": str(lease)}
    with FakeOpenAIServer(answer) as backend:
        spec = {"base_url": backend.url, "prompts": ["the slow one"], "role": {"retries": 0, "timeout": 120}}
        owner = start_worker(spec, fleet_env(redis_server, tmp_path, "owner", **env))
        deadline = time.monotonic() + 60
        while backend.request_count == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.request_count == 1
        waiters = [start_worker(spec, fleet_env(redis_server, tmp_path, f"waiter{i}", **env)) for i in range(2)]
        time.sleep(3 * lease)  # the waiters wait the whole time, the owner keeps renewing its lease
        assert backend.request_count == 1
        os.kill(owner.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        outcomes = [worker_result(waiter, timeout=30) for waiter in waiters]
        finished = time.monotonic() - killed_at
        release.set()
        owner.wait()
    assert backend.request_count == 2  # the dead owner's and one waiter's, never a third
    assert finished < lease + 5
    assert outcomes[0]["errors"] == {} and outcomes[1]["errors"] == {}
    assert outcomes[0]["answers"] == outcomes[1]["answers"]


def gcra_violations(times: list[float], rate: float, burst: float, slack: int = 4) -> list[tuple[int, int]]:
    """Pairs (i, j) of arrivals with more requests between them than the limit allows:
    at most `burst` + `rate` per second of the span between them (+ `slack`: a request may leave a
    few ms after its slot, on a busy machine tens of ms)."""
    times = sorted(times)
    return [
        (i, j)
        for i in range(len(times))
        for j in range(i + 1, len(times))
        if j - i + 1 > burst + rate * (times[j] - times[i]) + slack
    ]


def test_four_workers_share_one_rate_limit_through_redis_and_keep_their_own_without_it(redis_server, tmp_path):
    with FakeOpenAIServer() as backend:

        def fleet(env):
            backend.reset()
            workers = [
                start_worker(
                    {
                        "base_url": backend.url,
                        "prompts": [f"w{w} p{i}" for i in range(25)],
                        "threads": 4,
                        "role": {"rpm": 1200, "retries": 0},
                    },
                    env,
                )
                for w in range(4)
            ]
            for worker in workers:
                assert worker_result(worker)["errors"] == {}
            return backend.requests

        shared = fleet({"MYOPTO_CACHE": "off", "MYOPTO_LIMITS_URL": redis_server.url})
        assert len(shared) == 100
        times = [request.time for request in shared]
        assert gcra_violations(times, rate=20, burst=20) == []
        assert max(times) - min(times) >= (100 - 20) / 20 * 0.9  # 20 a second at most, together

        alone = fleet({"MYOPTO_CACHE": "off"})  # no Redis: each process limits only itself
    assert len(alone) == 100
    for worker in range(4):
        own = [request.time for request in alone if request.last_user_content.startswith(f"w{worker} ")]
        assert gcra_violations(own, rate=20, burst=20) == []
    assert gcra_violations([request.time for request in alone], rate=20, burst=20) != []


def test_one_429_with_retry_after_pauses_the_whole_fleet_for_that_model(redis_server, tmp_path):
    with FakeOpenAIServer() as backend:
        env = {"MYOPTO_CACHE": "off", "MYOPTO_LIMITS_URL": redis_server.url}
        workers = [
            start_worker(
                {
                    "base_url": backend.url,
                    "prompts": [f"w{w} p{i}" for i in range(400)],
                    "role": {"rpm": 600, "retries": 3},
                },
                env,
            )
            for w in range(3)
        ]
        deadline = time.monotonic() + 60
        # every worker is past its first requests (a request already on its way when the pause
        # begins cannot be called back; the pause holds back every slot taken after it)
        while time.monotonic() < deadline and not all(
            sum(r.last_user_content.startswith(f"w{w} ") for r in backend.requests) >= 3 for w in range(3)
        ):
            time.sleep(0.01)
        first_refused = backend.request_count  # the next request to arrive gets the 429
        backend.fail(429, retry_after=2)
        time.sleep(4)
        for worker in workers:
            worker.kill()
            worker.wait()
        requests = backend.requests
    refused_at = requests[first_refused].time
    during = [r for r in requests if refused_at + 0.1 < r.time < refused_at + 1.95]
    after = [r for r in requests if r.time > refused_at + 2.0]
    assert during == []  # nobody in the fleet sent anything while the model was paused
    assert len(after) >= 5  # and everyone went on afterwards


def test_a_run_budget_shared_by_two_workers_stops_both(redis_server, tmp_path):
    with FakeOpenAIServer() as backend:
        # each answer "echo: <prompt>" is 2 output tokens at $5000 a million: $0.01 a call
        role = {"pricing": {"input": 0.0, "output": 5000.0}, "retries": 0}
        env = {"MYOPTO_CACHE": "off", "MYOPTO_LIMITS_URL": redis_server.url}
        run = {"name": f"budget-{uuid.uuid4().hex[:6]}", "max_cost_usd": 0.10}
        workers = [
            start_worker(
                {"base_url": backend.url, "prompts": [f"w{w}-{i}" for i in range(20)], "role": role, "run": run}, env
            )
            for w in range(2)
        ]
        outcomes = [worker_result(worker) for worker in workers]
        sent = backend.request_count
    assert 10 <= sent <= 10 + 2  # at most one call in flight per process past the budget
    for outcome in outcomes:
        assert outcome["errors"], "each worker must have been stopped"
        assert all(error.startswith("BudgetExceeded") for error in outcome["errors"].values())
    assert sum(len(outcome["answers"]) for outcome in outcomes) == sent


def test_a_year_long_retry_after_pauses_one_endpoint_of_the_fleet_for_at_most_the_cap(redis_server, tmp_path):
    cap = 1.5
    with FakeOpenAIServer() as refusing, FakeOpenAIServer() as elsewhere:
        env = {"MYOPTO_CACHE": "off", "MYOPTO_LIMITS_URL": redis_server.url, "MYOPTO_MAX_PAUSE_SECONDS": str(cap)}
        role = {"rpm": 600, "retries": 3, "deadline": 60}
        # two workers on one server, one on another server with a model of the same name
        workers = [
            start_worker({"base_url": backend.url, "prompts": [f"w{w} p{i}" for i in range(400)], "role": role}, env)
            for w, backend in enumerate((refusing, refusing, elsewhere))
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (refusing.request_count >= 6 and elsewhere.request_count >= 3):
            time.sleep(0.01)
        first_refused = refusing.request_count
        refusing.fail(429, retry_after=31536000)  # a year
        time.sleep(cap + 2.5)
        for worker in workers:
            worker.kill()
            worker.wait()
        refused, other = refusing.requests, elsewhere.requests
    refused_at = refused[first_refused].time
    during = [r for r in refused if refused_at + 0.1 < r.time < refused_at + cap - 0.05]
    after = [r for r in refused if r.time > refused_at + cap]
    assert during == []  # the refusing server's model was paused fleet-wide...
    assert len(after) >= 5  # ...for the cap, not a year
    # ...and the same model name on the other server went on the whole time
    assert len([r for r in other if refused_at + 0.1 < r.time < refused_at + cap - 0.05]) >= 5


def test_a_worker_whose_redis_is_killed_mid_call_keeps_the_paid_answer(tmp_path):
    from myopto.testing import RedisServer

    arrived, release = threading.Event(), threading.Event()

    def slow(body):
        if last_user(body) == "the paid one":
            arrived.set()
            release.wait(60)  # the model is thinking while Redis dies
        return f"answer to {last_user(body)}"

    with RedisServer() as doomed, FakeOpenAIServer(slow) as backend:
        spec = {
            "base_url": backend.url,
            "prompts": ["warm up", "the paid one"],
            "role": {"retries": 0, "pricing": {"input": 0.0, "output": 5000.0}, "max_cost_usd": 1.0, "tpm": 100000},
        }
        worker = start_worker(spec, {"MYOPTO_CACHE": "off", "MYOPTO_LIMITS_URL": doomed.url})
        assert arrived.wait(60)
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
        release.set()
        outcome = worker_result(worker, timeout=60)
        assert backend.request_count == 2
    assert outcome["errors"] == {}
    assert outcome["answers"]["the paid one"] == "answer to the paid one"
    assert outcome["unrecorded"] == {"limits": 1}
