"""Limits: rates spread evenly, tokens estimated then corrected, 429 pauses for every caller of
one endpoint's model (capped, whatever the Retry-After), budgets per role and per run (local and
on a real Redis), a Redis server killed mid-call, and the errors that say what to fix."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import os
import signal
import time

import pytest
import redis as redis_py

import myopto
from myopto import BudgetExceeded, CacheUnavailable, ConfigError, InvalidRequest, RateLimited, get_llm, set_role_config
from myopto.limiter import LONGEST_PAUSE_SECONDS, LocalLimiter, RedisLimiter
from myopto.middleware.limits import Limits, estimate_tokens
from myopto.recording import reset_unrecorded, unrecorded_counts
from myopto.request import Request
from myopto.settings import DEFAULT_MAX_PAUSE_SECONDS
from myopto.testing import FakeOpenAIServer, RedisServer

# "echo: <prompt>" answers: a one-word prompt costs 1 input and 2 output tokens on the test server
PRICING = {"input": 0.0, "output": 5000.0}  # $0.01 a call


def custom(server, **options):
    set_role_config(
        "executor",
        backend="CustomLLM",
        model="test-model",
        base_url=server.url,
        api_key="sk-limits-key-000000",
        **{"retries": 0, **options},
    )


@pytest.mark.parametrize("make", [LocalLimiter, "redis"])
def test_requests_are_spread_at_most_rpm_over_60_a_second_after_a_one_second_burst(make, request):
    limiter = RedisLimiter(request.getfixturevalue("redis_server").url) if make == "redis" else make()
    waits = [limiter.reserve("m", 1200, None, 0) for _ in range(30)]
    assert waits[:20] == [0.0] * 20  # a second's worth at once
    steps = [b - a for a, b in itertools.pairwise(waits[20:])]
    assert all(0.04 < step < 0.06 for step in steps)  # then one every 1/20 s
    assert limiter.reserve("another model", 1200, None, 0) == 0.0  # per model


@pytest.mark.parametrize("make", [LocalLimiter, "redis"])
def test_tokens_are_limited_by_the_estimate_and_corrected_with_the_real_usage(make, request):
    limiter = RedisLimiter(request.getfixturevalue("redis_server").url) if make == "redis" else make()
    # tpm 6000 = 100 tokens a second; a 100-token estimate fills the burst
    assert limiter.reserve("m", None, 6000, 100) == 0.0
    assert 0.9 < limiter.reserve("m", None, 6000, 100) <= 1.01
    limiter.adjust("m", 6000, -200)  # both calls used far fewer tokens than estimated
    assert limiter.reserve("m", None, 6000, 50) == 0.0


@pytest.mark.parametrize("make", [LocalLimiter, "redis"])
def test_a_pause_holds_back_every_caller_of_that_model_only(make, request):
    limiter = RedisLimiter(request.getfixturevalue("redis_server").url) if make == "redis" else make()
    limiter.pause("m", 2.0)
    assert 1.9 < limiter.reserve("m", None, None, 0) <= 2.0
    assert 1.9 < limiter.paused_for("m") <= 2.0
    assert limiter.reserve("other", None, None, 0) == 0.0 and limiter.paused_for("other") == 0.0
    limiter.pause("m", 0.5)  # a shorter pause never shortens a longer one
    assert limiter.paused_for("m") > 1.5


def test_estimate_counts_prompt_characters_and_the_completion_cap():
    request = Request(model="m", messages=[{"role": "user", "content": "x" * 400}], params={"max_tokens": 50})
    assert estimate_tokens(request) == 100 + 1 + 50


def test_a_429_with_retry_after_pauses_the_next_call_of_the_same_model(server):
    custom(server)  # no retries: the pause, not a retry, makes the next call wait
    server.fail(429, retry_after=0.5)
    with pytest.raises(RateLimited):
        get_llm()("x")
    refused_at = server.last_request.time
    assert get_llm()("y").text == "echo: y"
    assert server.last_request.time - refused_at >= 0.45
    set_role_config("executor", model="another-model")
    assert get_llm()("z").text == "echo: z"  # another model is not paused
    assert server.last_request.time - refused_at < 0.7


def test_a_pause_longer_than_the_time_left_fails_unsent_as_rate_limited(server):
    custom(server)
    server.fail(429, retry_after=30)
    with pytest.raises(RateLimited):
        get_llm()("first")
    with pytest.raises(RateLimited, match="held back"):
        get_llm()("second", deadline=0.5)
    assert server.request_count == 1


def test_a_role_budget_stops_calls_once_spent_and_still_serves_cached_answers(server, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    custom(server, pricing=PRICING, max_cost_usd=0.03)
    for prompt in ("a", "b", "c"):
        get_llm()(prompt)
    with pytest.raises(BudgetExceeded) as error:
        get_llm()("d")
    assert server.request_count == 3
    assert error.value.scope == "role executor" and error.value.budget == 0.03
    assert error.value.spent == pytest.approx(0.03)
    assert get_llm()("a").cached  # a cached answer costs nothing and is still served


def test_budget_exceeded_is_not_retried(server):
    custom(server, pricing=PRICING, max_cost_usd=0.01, retries=3)
    get_llm()("a")
    with pytest.raises(BudgetExceeded):
        get_llm()("b")
    assert server.request_count == 1


def test_a_run_budget_covers_the_calls_inside_it_and_inner_runs(server):
    custom(server, pricing=PRICING)
    with myopto.run("outer", max_cost_usd=0.02):
        get_llm()("a")
        with myopto.run("inner"):
            get_llm()("b")
            with pytest.raises(BudgetExceeded, match="run 'outer'"):
                get_llm()("c")
    get_llm()("outside any run")
    assert server.request_count == 3


async def test_async_calls_respect_run_budgets_and_rates(server, redis_server, monkeypatch):
    monkeypatch.setenv("MYOPTO_LIMITS_URL", redis_server.url)
    custom(server, pricing=PRICING, rpm=600)
    with myopto.run("async-run", max_cost_usd=0.02):
        llm = get_llm()
        await llm.acall("a")
        await llm.acall("b")
        with pytest.raises(BudgetExceeded):
            await llm.acall("c")
    assert server.request_count == 2
    assert RedisLimiter(redis_server.url).spent("run:async-run") == pytest.approx(0.02)


def test_a_budget_on_a_model_without_a_price_is_a_config_error(server):
    with pytest.raises(ConfigError, match="price of model 'test-model' is unknown"):
        custom(server, max_cost_usd=1.0)
    custom(server)
    with (
        myopto.run("unpriced", max_cost_usd=1.0),
        pytest.raises(ConfigError, match="run budget on model 'test-model'"),
    ):
        get_llm()("x")
    assert server.request_count == 0


def test_a_budget_on_a_model_the_price_map_knows_needs_no_pricing(server):
    set_role_config(
        "executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, api_key="sk-x", max_cost_usd=1.0
    )
    assert get_llm()("hello").cost > 0


@pytest.mark.parametrize("option, value", [("rpm", 0), ("tpm", -5), ("max_cost_usd", "ten"), ("rpm", True)])
def test_bad_limits_are_refused_at_configuration(server, option, value):
    with pytest.raises(ConfigError, match=option):
        custom(server, **{option: value})


def test_a_bad_run_budget_is_refused():
    with pytest.raises(InvalidRequest, match="max_cost_usd"):
        myopto.run("r", max_cost_usd=0)


def test_limits_show_in_the_chain_description(server, redis_server, monkeypatch):
    custom(server, rpm=60, tpm=1000)
    assert "limits (rpm 60, tpm 1000; state in this process)" in get_llm().describe()
    monkeypatch.setenv("MYOPTO_LIMITS_URL", redis_server.url)
    assert f"state in {redis_server.url}" in get_llm().describe()


def test_the_limits_middleware_waits_on_the_event_loop_without_blocking_it(loop_ticks):
    limiter = LocalLimiter()
    limits = Limits(limiter, rpm=60)  # one a second after the first

    async def answer(request):
        from myopto.response import Response

        return Response(text="ok", model=request.model)

    async def main():
        request = Request(model="m", messages=[{"role": "user", "content": "x"}])
        async with loop_ticks() as ticks:
            await limits.acall(request, answer)
            await limits.acall(request, answer)  # waits ~1 s for its slot
        return ticks.count

    assert asyncio.run(main()) >= 10


# -- pauses: one endpoint's model, capped ---------------------------------------------------
@pytest.mark.parametrize("make", [LocalLimiter, "redis"])
def test_a_pause_belongs_to_one_endpoint_and_model(make, request):
    limiter = RedisLimiter(request.getfixturevalue("redis_server").url) if make == "redis" else make()
    limiter.pause("m", 2.0, "http://a.example/v1")
    assert 1.9 < limiter.reserve("m", None, None, 0, "http://a.example/v1") <= 2.0
    assert 1.9 < limiter.paused_for("m", "http://a.example/v1") <= 2.0
    assert limiter.reserve("m", None, None, 0, "http://b.example/v1") == 0.0  # the same model elsewhere
    assert limiter.paused_for("m") == 0.0 and limiter.reserve("m", None, None, 0) == 0.0  # no endpoint
    assert limiter.paused_for("other", "http://a.example/v1") == 0.0


@pytest.mark.parametrize("make", [LocalLimiter, "redis"])
@pytest.mark.parametrize("seconds", [math.inf, math.nan, -5.0, 0.0, 1e300, 1e-9])
def test_a_limiter_takes_any_pause_length_without_breaking(make, seconds, request):
    limiter = RedisLimiter(request.getfixturevalue("redis_server").url) if make == "redis" else make()
    limiter.pause("m", seconds, "http://a.example/v1")  # inf broke the Redis script; 1e-9 made its expiry 0
    left = limiter.paused_for("m", "http://a.example/v1")
    assert 0.0 <= left <= LONGEST_PAUSE_SECONDS
    if seconds in (math.inf, 1e300):
        assert left > 1000  # held back, for at most the longest pause there is
    else:
        assert left <= 0.001  # nothing, or the shortest expiry Redis knows
    assert limiter.reserve("m", None, None, 0, "http://b.example/v1") == 0.0


def two_endpoints(server, other, **options):
    for role, where in (("a", server), ("b", other)):
        set_role_config(
            role,
            backend="CustomLLM",
            model="test-model",
            base_url=where.url,
            api_key="sk-limits-key-000000",
            **{"retries": 0, **options},
        )


@pytest.mark.parametrize("shared", [False, True])
def test_a_year_long_retry_after_pauses_one_endpoint_for_at_most_the_cap(server, redis_server, monkeypatch, shared):
    if shared:
        monkeypatch.setenv("MYOPTO_LIMITS_URL", redis_server.url)
    with FakeOpenAIServer() as other:
        two_endpoints(server, other)
        server.fail(429, retry_after=31536000)
        with pytest.raises(RateLimited):
            get_llm("a")("x")
        # the same model name on another server, and another role there, are not held back
        assert get_llm("b")("y").text == "echo: y"
        # this endpoint's model is paused for the default cap, not a year; a caller with less
        # time than that fails at once, unsent, saying so
        start = time.monotonic()
        with pytest.raises(RateLimited, match=r"held back (29\d|300)\.\d\d s") as error:
            get_llm("a")("z", deadline=5)
        assert time.monotonic() - start < 1.0 and server.request_count == 1
        assert 290 < error.value.retry_after <= DEFAULT_MAX_PAUSE_SECONDS
    if shared:  # the shared pause key lives no longer than the cap either
        client = redis_py.Redis.from_url(redis_server.url)
        ttls = [client.pttl(key) for key in client.keys("*:pause:*")]
        assert len(ttls) == 1 and 290_000 < ttls[0] <= 300_000


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(
    "retry_after, pauses", [(math.inf, True), (1e300, True), (31536000, True), (math.nan, False), (-5, False)]
)
def test_absurd_retry_after_values_pause_at_most_max_pause_seconds(
    server, redis_server, monkeypatch, shared, retry_after, pauses
):
    if shared:
        monkeypatch.setenv("MYOPTO_LIMITS_URL", redis_server.url)
    monkeypatch.setenv("MYOPTO_MAX_PAUSE_SECONDS", "0.5")
    custom(server)
    server.fail(429, retry_after=retry_after)
    with pytest.raises(RateLimited):  # the 429 itself, never a broken Redis script
        get_llm()("first")
    refused_at = server.last_request.time
    assert get_llm()("second").text == "echo: second"
    waited = server.last_request.time - refused_at
    assert (0.45 <= waited < 1.5) if pauses else waited < 0.4


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf", "nan", "1e300", "86401"])
def test_a_bad_max_pause_setting_is_a_config_error_before_anything_is_sent(server, monkeypatch, value):
    custom(server)
    monkeypatch.setenv("MYOPTO_MAX_PAUSE_SECONDS", value)
    with pytest.raises(ConfigError, match="MYOPTO_MAX_PAUSE_SECONDS must be a number of seconds > 0"):
        get_llm()("x")  # the chain is built, and the setting read, before anything is sent
    with pytest.raises(ConfigError, match="MYOPTO_MAX_PAUSE_SECONDS"):
        custom(server)  # retry options are checked with the cap they will run under
    assert server.request_count == 0


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, "300", True])
def test_a_bad_max_pause_argument_is_a_config_error(value):
    with pytest.raises(ConfigError, match="max_pause must be a number of seconds > 0"):
        Limits(max_pause=value)


def test_the_max_pause_argument_wins_over_the_setting(server, monkeypatch):
    monkeypatch.setenv("MYOPTO_MAX_PAUSE_SECONDS", "100")
    assert Limits().max_pause == 100 and Limits(max_pause=0.3).max_pause == 0.3
    monkeypatch.delenv("MYOPTO_MAX_PAUSE_SECONDS")
    assert Limits().max_pause == DEFAULT_MAX_PAUSE_SECONDS == 300
    limiter = LocalLimiter()
    limits = Limits(limiter, max_pause=0.3)
    request = Request(model="m", messages=[{"role": "user", "content": "x"}], endpoint="http://a.example/v1")

    def refuse(request):
        raise RateLimited("slow down", retryable=True, retry_after=math.inf)

    with pytest.raises(RateLimited):
        limits(request, refuse)
    assert 0.25 < limiter.paused_for("m", "http://a.example/v1") <= 0.3


# -- Redis dying while a call is in flight: the paid answer is the caller's --------------------
def kill(redis):
    os.kill(redis.process.pid, signal.SIGKILL)
    redis.process.wait()


def wait_for_request(server, count=1, timeout=30.0):
    deadline = time.monotonic() + timeout
    while server.request_count < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.request_count == count


@pytest.mark.parametrize("asynchronous", [False, True])
def test_redis_killed_while_the_model_answers_returns_the_paid_answer_and_reports_it(
    server, monkeypatch, caplog, asynchronous
):
    reset_unrecorded()
    with RedisServer() as doomed:
        monkeypatch.setenv("MYOPTO_LIMITS_URL", doomed.url)
        custom(server, pricing=PRICING, max_cost_usd=1.0, tpm=100000)  # spend and tokens count after the answer
        llm = get_llm()
        assert llm("warm up").text == "echo: warm up"  # the connection is open and the counters exist
        server.delay(1.5)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = (lambda: asyncio.run(llm.acall("paid"))) if asynchronous else (lambda: llm("paid"))
            pending = pool.submit(call)
            wait_for_request(server, 2)
            kill(doomed)  # the request is with the model now
            with caplog.at_level(logging.ERROR, logger="myopto"):
                response = pending.result(timeout=30)
    assert response.text == "echo: paid" and server.request_count == 2
    assert unrecorded_counts() == {"limits": 1}
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR and "limits" in r.getMessage()]
    assert "paid for and returned" in record.getMessage() and "nothing was sent" not in record.getMessage()
    assert "sk-limits-key" not in record.getMessage()


def test_redis_killed_before_a_call_refuses_it_unsent(server, monkeypatch):
    with RedisServer() as doomed:
        monkeypatch.setenv("MYOPTO_LIMITS_URL", doomed.url)
        custom(server, pricing=PRICING, max_cost_usd=1.0)
        get_llm()("warm up")
        kill(doomed)
        with pytest.raises(CacheUnavailable, match="nothing was sent to the model"):
            get_llm()("never sent")
    assert server.request_count == 1


def test_redis_killed_while_a_429_comes_back_still_raises_the_429(server, monkeypatch, caplog):
    reset_unrecorded()
    with RedisServer() as doomed:
        monkeypatch.setenv("MYOPTO_LIMITS_URL", doomed.url)
        custom(server, rpm=600)
        get_llm()("warm up")
        server.latency = 1.0
        server.fail(429, retry_after=5)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(get_llm(), "refused")
            wait_for_request(server, 2)
            kill(doomed)
            # not CacheUnavailable: retry decides what comes next
            with caplog.at_level(logging.WARNING, logger="myopto"), pytest.raises(RateLimited):
                pending.result(timeout=30)
    assert any("pause could not be recorded" in r.getMessage() for r in caplog.records)
    assert unrecorded_counts() == {}  # a 429 is no paid answer
