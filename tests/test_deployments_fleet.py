"""Cooldowns shared by a fleet: four real worker processes on one real redis-server skip a
deployment that one of them saw failing, for as long as it rests and no longer (and what they
share names no endpoint and no key); without a shared limits URL each process learns it alone.
And the state itself: a rest read back from Redis (by another connection, as another worker
would) has the time that is left, and failures of the whole fleet add up.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
import testkit
from testkit import worker_result

from myopto.cooldowns import LOCAL, LocalCooldowns, RedisCooldowns
from myopto.middleware.deployments import DeploymentsUnavailable
from myopto.redis_connection import RedisConnection
from myopto.testing import FakeOpenAIServer

WORKER = Path(__file__).parent / "data" / "deployments_worker.py"
SECRET = f"sk-MARKER-{uuid.uuid4().hex}"


def start_worker(spec: dict, env: dict) -> subprocess.Popen:
    return testkit.start_worker(WORKER, spec, env)


def run_fleet(
    primary, spare, tmp_path, env: dict, cooldown: float, count: int = 4, midway=None
) -> tuple[float, list, list, list, object]:
    """`count` workers calling a role over `primary` (first in order) and `spare`; once all
    are calling, one request to the primary gets a 503. Returns when it was refused, what each
    server received, each worker's result, and what `midway()` said halfway through the cooldown."""
    stop = tmp_path / f"stop-{uuid.uuid4().hex[:6]}"
    deployments = [
        {"name": "primary", "backend": "CustomLLM", "model": "m", "base_url": primary.url, "api_key": SECRET},
        {"name": "spare", "backend": "CustomLLM", "model": "m", "base_url": spare.url, "api_key": SECRET},
    ]
    role = {"routing": "fallback-order", "allowed_fails": 1, "cooldown": cooldown, "retries": 0}
    workers = [
        start_worker(
            {"name": f"w{w}", "deployments": deployments, "role": role, "stop": str(stop), "pause": 0.02},
            {"MYOPTO_CACHE": "off", "MYOPTO_CACHE_DIR": str(tmp_path / f"cache-{w}"), **env},
        )
        for w in range(count)
    ]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            any(r.last_user_content.startswith(f"w{w} ") for r in primary.requests) for w in range(count)
        ):
            time.sleep(0.02)
        refused_index = primary.request_count  # the next request to arrive is refused
        primary.fail(503)
        time.sleep(cooldown / 2)
        seen = midway() if midway is not None else None
        time.sleep(cooldown / 2 + 1.5)
    finally:
        stop.touch()
    outcomes = [worker_result(worker) for worker in workers]
    received = primary.requests
    return received[refused_index].time, received, spare.requests, outcomes, seen


def shared_state(url: str) -> str:
    """Every key on the Redis server, and the values of those that hold text."""
    import redis as redis_py

    client = redis_py.Redis.from_url(url, decode_responses=True)
    keys = client.keys("*")
    values = [client.get(key) for key in keys if client.type(key) == "string"]
    client.close()
    return " ".join([*keys, *map(str, values)])


def test_four_workers_send_a_resting_deployment_nothing_until_its_cooldown_ends(redis_server, tmp_path):
    cooldown = 2.0
    with FakeOpenAIServer() as primary, FakeOpenAIServer() as spare:
        refused_at, received, spared, outcomes, state = run_fleet(
            primary,
            spare,
            tmp_path,
            {"MYOPTO_LIMITS_URL": redis_server.url},
            cooldown,
            midway=lambda: shared_state(redis_server.url),
        )
    assert all(outcome["errors"] == [] for outcome in outcomes)  # the refused call moved to the spare
    during = [r for r in received if refused_at + 0.1 < r.time < refused_at + cooldown - 0.05]
    assert during == []  # nobody in the fleet sent the resting deployment anything
    after = [r for r in received if r.time > refused_at + cooldown]
    assert len({r.last_user_content.split()[0] for r in after}) >= 3  # and the fleet came back to it
    helped = {r.last_user_content.split()[0] for r in spared if refused_at < r.time < refused_at + cooldown}
    assert len(helped) == 4  # meanwhile every worker's calls went to the spare
    # what the fleet shares names each deployment by a hash: no endpoint, no key
    assert ":deployments:{deployments}:" in state and ":rest" in state
    assert SECRET not in state and "127.0.0.1" not in state


def test_without_a_shared_limits_url_each_worker_learns_of_the_failure_alone(tmp_path):
    cooldown = 2.0
    with FakeOpenAIServer() as primary, FakeOpenAIServer() as spare:
        refused_at, received, _, outcomes, _ = run_fleet(primary, spare, tmp_path, {}, cooldown, count=2)
    assert all(outcome["errors"] == [] for outcome in outcomes)
    refused = received[[r.time for r in received].index(refused_at)].last_user_content.split()[0]
    during = {r.last_user_content.split()[0] for r in received if refused_at + 0.1 < r.time < refused_at + cooldown}
    assert during == {"w0", "w1"} - {refused}  # the one that did not see the 503 kept calling it


@pytest.fixture(params=["local", "redis"])
def cooldowns(request):
    if request.param == "local":
        LOCAL.reset()
        yield LocalCooldowns(), None
        return
    url = request.getfixturevalue("redis_server").url
    # two connections, as two workers have
    yield RedisCooldowns(RedisConnection(url)), RedisCooldowns(RedisConnection(url))


def test_a_rest_read_back_has_the_time_that_is_left(cooldowns):
    state, other = cooldowns
    other = other or state
    key = uuid.uuid4().hex
    assert state.remaining([key]) == [0.0]
    state.rest(key, 1.5)
    (first,) = other.remaining([key])
    assert 1.0 < first <= 1.5
    time.sleep(0.3)
    (later,) = other.remaining([key])
    assert later <= first - 0.3 + 0.01  # it runs down, read from anywhere
    state.rest(key, 0.5)  # a shorter rest never cuts a longer one short
    assert other.remaining([key])[0] > 0.5


def test_allowed_fails_failures_of_the_fleet_begin_one_rest(cooldowns):
    state, other = cooldowns
    other = other or state
    key = uuid.uuid4().hex
    assert state.failed(key, 3, 1.0) == (0.0, False)
    assert other.failed(key, 3, 1.0) == (0.0, False)  # another worker's failure counts too
    left, began = state.failed(key, 3, 1.0)
    assert (left, began) == (1.0, True)
    left, began = other.failed(key, 3, 1.0)  # resting: the rest goes on, no new one begins
    assert 0 < left <= 1.0 and not began
    assert other.remaining([key, uuid.uuid4().hex])[1] == 0.0


def test_async_calls_share_the_fleets_cooldowns_and_calls_in_flight(redis_server):
    import asyncio

    from myopto import get_llm, set_role_config
    from myopto.router import ROUTER

    with FakeOpenAIServer() as failing, FakeOpenAIServer() as other:
        set_role_config(
            "async-fleet",
            deployments=[
                {"name": "failing", "backend": "CustomLLM", "model": "m", "base_url": failing.url},
                {"name": "other", "backend": "CustomLLM", "model": "m", "base_url": other.url},
            ],
            routing="least-busy",
            allowed_fails=1,
            cooldown=30,
            retries=0,
            limits_url=redis_server.url,
            cache="off",
        )
        failing.fail(503)

        async def calls():
            llm = get_llm("async-fleet")
            with pytest.raises(DeploymentsUnavailable):  # a call for `failing` alone: 503, and nowhere else to go
                await llm.acall("first question", model="failing")
            return await asyncio.gather(*(llm.acall(f"question {i}") for i in range(12)))

        responses = asyncio.run(calls())
        assert failing.request_count == 1  # failed once, then rested: the fleet's state says so
        assert {r.deployment for r in responses} == {"other"}
        state = ROUTER.chain("async-fleet")[1].backend
        shared = RedisCooldowns(RedisConnection(redis_server.url))
        assert shared.remaining([d.key for d in state.deployments])[0] > 25
        assert shared.busy([d.key for d in state.deployments]) == [0, 0]  # every call counted out
