"""Single flight in the cache: a follower's outcome depends on its own options only, and no wait
deadlocks an event loop. Real HTTP (the test server), real threads, real asyncio cancellation."""

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
from testkit import finish_or_fail, in_threads, use_cache, use_redis_cache

from myopto import AuthenticationFailed, BackendTimeout, Response, ServerError, get_llm


@pytest.fixture
def cached(server, tmp_path):
    use_cache(server, tmp_path / "cache", model="m1")
    return server


def wait_for_requests(server, count, within=10.0):
    """Block until the server has received `count` requests (a leader is in flight)."""
    end = time.monotonic() + within
    while server.request_count < count:
        assert time.monotonic() < end, f"the server saw {server.request_count} requests, expected {count}"
        time.sleep(0.005)


async def await_requests(server, count, within=10.0):
    end = time.monotonic() + within
    while server.request_count < count:
        assert time.monotonic() < end, f"the server saw {server.request_count} requests, expected {count}"
        await asyncio.sleep(0.005)


# -- hangs ---------------------------------------------------------------------------------------

SYNC_INSIDE_A_COROUTINE = """
import asyncio, json, sys, time
from myopto import get_llm, set_role_config
from myopto.testing import FakeOpenAIServer

with FakeOpenAIServer(latency=1.0) as server:
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, api_key="sk-x",
                    cache="on", cache_dir=sys.argv[1], retries=0)

    async def main():
        leader = asyncio.create_task(get_llm().acall("same prompt"))
        while server.request_count == 0:  # the async leader's request is in flight
            await asyncio.sleep(0.01)
        began = time.monotonic()
        answer = get_llm()("same prompt")  # sync, on the loop's own thread
        took = time.monotonic() - began
        first = await leader
        print(json.dumps({"sync": answer.text, "async": first.text, "took": took, "requests": server.request_count}))

    asyncio.run(main())
"""


def test_a_sync_call_inside_a_coroutine_never_waits_on_its_own_loops_flight(tmp_path):
    script = tmp_path / "sync_in_loop.py"
    script.write_text(SYNC_INSIDE_A_COROUTINE)
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "cache")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MYOPTO_CACHE": "on"},
    )
    out, err = finish_or_fail(process, 45, "the sync call deadlocked the event loop running the async call it joined")
    assert process.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["sync"] == result["async"] == "echo: same prompt"
    assert result["took"] < 10  # its own call (1 s at the server), not a wait on the blocked loop
    assert result["requests"] == 2  # it could not share the loop's flight, so it called on its own


SYNC_INSIDE_A_COROUTINE_WITH_REDIS = """
import asyncio, json, sys, time
from myopto import get_llm, set_role_config
from myopto.testing import FakeOpenAIServer, RedisServer

with FakeOpenAIServer(latency=1.0) as server, RedisServer() as redis:
    for role in ("executor", "optimizer"):  # two roles, two cache middlewares, one store and one key
        set_role_config(role, backend="CustomLLM", model="m", base_url=server.url, api_key="sk-x", cache="on",
                        cache_url=redis.url, retries=0)

    async def main():
        leader = asyncio.create_task(get_llm("executor").acall("same prompt"))  # holds the store's lease
        while server.request_count == 0:
            await asyncio.sleep(0.01)
        answer = get_llm("optimizer")("same prompt")  # sync, on the loop's own thread
        first = await leader
        print(json.dumps({"sync": answer.text, "async": first.text}))

    asyncio.run(main())
"""


def test_a_sync_call_inside_a_coroutine_never_waits_on_a_store_lease_its_loop_holds(tmp_path):
    script = tmp_path / "sync_in_loop_redis.py"
    script.write_text(SYNC_INSIDE_A_COROUTINE_WITH_REDIS)
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = finish_or_fail(
        process, 45, "the sync call blocked the event loop on a lease held by a task of that loop"
    )
    assert process.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"sync": "echo: same prompt", "async": "echo: same prompt"}


async def test_a_sync_call_in_a_worker_thread_still_follows_an_async_flight(cached):
    cached.latency = 0.5
    leader = asyncio.create_task(get_llm().acall("shared"))
    await await_requests(cached, 1)
    follower = await asyncio.to_thread(get_llm(), "shared")  # no loop on that thread: it may wait
    assert (await leader).text == follower.text and follower.cached
    assert cached.request_count == 1


# -- a leader's own options are its own ------------------------------------------------------------


async def test_a_leader_cancelled_by_its_own_wait_for_does_not_cancel_60_followers(cached):
    cached.latency = 1.0
    llm = get_llm()
    leader = asyncio.create_task(asyncio.wait_for(llm.acall("same"), 0.5))
    await await_requests(cached, 1)
    followers = [asyncio.create_task(llm.acall("same")) for _ in range(60)]
    with pytest.raises(asyncio.TimeoutError):
        await leader
    results = await asyncio.gather(*followers, return_exceptions=True)
    assert [type(r).__name__ for r in results if not isinstance(r, Response)] == []
    assert {r.text for r in results} == {"echo: same"}
    # the cancelled leader's request, then one follower's in its place; the other 59 followed it
    assert cached.request_count == 2
    assert sum(not r.cached for r in results) == 1


def test_thread_followers_of_an_async_leader_cancelled_on_another_loop_get_the_answer(cached):
    cached.latency = 1.0
    leader_outcome = []

    def leader():
        async def call():
            try:
                await asyncio.wait_for(get_llm().acall("same"), 0.5)
            except asyncio.TimeoutError:
                leader_outcome.append("cancelled by its own wait_for")

        asyncio.run(call())

    thread = threading.Thread(target=leader)
    thread.start()
    wait_for_requests(cached, 1)
    results = in_threads(16, lambda: get_llm()("same"))
    thread.join()
    assert leader_outcome == ["cancelled by its own wait_for"]
    assert [r.text if isinstance(r, Response) else repr(r) for r in results] == ["echo: same"] * 16
    assert cached.request_count == 2


def test_a_leader_that_times_out_on_its_own_timeout_leaves_followers_their_own(cached):
    cached.latency = 1.0

    def leader():
        with pytest.raises(BackendTimeout):
            get_llm()("slow", timeout=0.2)
        return "leader timed out"

    thread_results = []
    thread = threading.Thread(target=lambda: thread_results.append(leader()))
    thread.start()
    wait_for_requests(cached, 1)
    results = in_threads(8, lambda: get_llm()("slow", timeout=30))
    thread.join()
    assert thread_results == ["leader timed out"]
    assert [r.text if isinstance(r, Response) else repr(r) for r in results] == ["echo: slow"] * 8
    assert cached.request_count == 2


async def test_async_followers_outlive_a_leader_whose_timeout_is_short(cached):
    cached.latency = 1.0
    leader = asyncio.create_task(get_llm().acall("slow", timeout=0.2))
    await await_requests(cached, 1)
    followers = [asyncio.create_task(get_llm().acall("slow", timeout=30)) for _ in range(8)]
    with pytest.raises(BackendTimeout):
        await leader
    assert {r.text for r in await asyncio.gather(*followers)} == {"echo: slow"}
    assert cached.request_count == 2


def test_a_retryable_failure_the_leader_did_not_retry_is_not_its_followers(cached):
    cached.latency = 0.5
    cached.fail(500)  # the leader's request only; it has retries=0
    errors = []

    def leader():
        with pytest.raises(ServerError) as raised:
            get_llm()("flaky")
        errors.append(raised.value)

    thread = threading.Thread(target=leader)
    thread.start()
    wait_for_requests(cached, 1)
    results = in_threads(6, lambda: get_llm()("flaky"))
    thread.join()
    assert len(errors) == 1
    assert [r.text if isinstance(r, Response) else repr(r) for r in results] == ["echo: flaky"] * 6
    assert cached.request_count == 2


def test_an_error_no_option_changes_is_shared_and_sent_once(cached):
    cached.latency = 0.5
    cached.fail(401)

    def leader():
        with pytest.raises(AuthenticationFailed):
            get_llm()("denied")

    thread = threading.Thread(target=leader)
    thread.start()
    wait_for_requests(cached, 1)
    results = in_threads(6, lambda: get_llm()("denied"))
    thread.join()
    assert all(isinstance(r, AuthenticationFailed) for r in results), results
    assert cached.request_count == 1


# -- a follower waits on its own clock -------------------------------------------------------------


@pytest.mark.parametrize("limit", [{"timeout": 0.3}, {"deadline": 0.3}])
def test_a_follower_times_out_on_its_own_clock_behind_a_slow_leader(cached, limit):
    cached.latency = 2.0
    leader_results = []
    thread = threading.Thread(target=lambda: leader_results.append(get_llm()("slow", timeout=30)))
    thread.start()
    wait_for_requests(cached, 1)
    began = time.monotonic()
    with pytest.raises(BackendTimeout, match=re.escape("own limit of 0.3 s")):
        get_llm()("slow", **limit)
    waited = time.monotonic() - began
    thread.join()
    assert 0.25 < waited < 1.5
    assert leader_results[0].text == "echo: slow"
    assert cached.request_count == 1  # the follower sent nothing


def test_a_follower_that_takes_over_counts_its_wait_against_its_deadline(cached):
    cached.latency = 2.0

    def leader():
        with pytest.raises(BackendTimeout):
            get_llm()("slow", timeout=0.3)

    thread = threading.Thread(target=leader)
    thread.start()
    wait_for_requests(cached, 1)
    began = time.monotonic()
    with pytest.raises(BackendTimeout):  # its own call, sent at ~0.3 s with the 0.9 s it had left
        get_llm()("slow", deadline=1.2)
    waited = time.monotonic() - began
    thread.join()
    assert cached.request_count == 2
    assert 1.0 < waited < 1.4  # its deadline (1.2 s), not the leader's timeout (0.3 s) nor 0.3 + 1.2 s


async def test_an_async_follower_times_out_on_its_own_clock(cached):
    cached.latency = 2.0
    leader = asyncio.create_task(get_llm().acall("slow", timeout=30))
    await await_requests(cached, 1)
    began = time.monotonic()
    with pytest.raises(BackendTimeout):
        await get_llm().acall("slow", timeout=0.3)
    assert 0.25 < time.monotonic() - began < 1.5
    assert (await leader).text == "echo: slow"
    assert cached.request_count == 1


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_caller_waiting_on_another_workers_lease_stops_at_its_own_timeout(server, redis_server, asynchronous):
    # two roles: two cache middlewares, so the second waits on the store's lease, as another
    # process would
    for role in ("executor", "optimizer"):
        use_redis_cache(server, redis_server.url, role=role, model="m1")
    server.latency = 2.0
    prompt = f"a lease only this test takes ({asynchronous})"
    leader_results = []
    thread = threading.Thread(target=lambda: leader_results.append(get_llm("executor")(prompt)))
    thread.start()
    wait_for_requests(server, 1)
    began = time.monotonic()
    with pytest.raises(BackendTimeout, match=re.escape("own limit of 0.3 s")):
        if asynchronous:
            asyncio.run(get_llm("optimizer").acall(prompt, timeout=0.3))
        else:
            get_llm("optimizer")(prompt, timeout=0.3)
    waited = time.monotonic() - began
    thread.join()
    assert 0.25 < waited < 1.5
    assert leader_results[0].text == f"echo: {prompt}" and server.request_count == 1


async def test_a_follower_cancelled_itself_leaves_the_flight_to_the_others(cached):
    cached.latency = 1.0
    leader = asyncio.create_task(get_llm().acall("same"))
    await await_requests(cached, 1)
    quitter = asyncio.create_task(get_llm().acall("same"))
    stayer = asyncio.create_task(get_llm().acall("same"))
    await asyncio.sleep(0.1)
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    assert (await leader).text == (await stayer).text == "echo: same"
    assert cached.request_count == 1


def test_the_answer_a_follower_gets_is_a_hit_with_its_own_latency(cached):
    cached.latency = 0.5
    results = in_threads(4, lambda: get_llm()("shared"))
    paid = [r for r in results if not r.cached]
    followed = [r for r in results if r.cached]
    assert len(paid) == 1 and len(followed) == 3
    assert all(r.attempts == 0 and r.text == paid[0].text for r in followed)
    assert all(0 < r.latency < 5 for r in followed)
    assert cached.request_count == 1


def test_a_caller_that_records_does_not_follow_a_call_that_records_nothing(cached):
    cached.latency = 0.5
    thread = threading.Thread(target=lambda: get_llm()("q", cache="read_only"))
    thread.start()
    wait_for_requests(cached, 1)
    assert not get_llm()("q").cached  # `on`: its own call, recorded
    thread.join()
    assert cached.request_count == 2
    assert get_llm()("q", cache="replay").cached
