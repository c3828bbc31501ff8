"""Limits: rates spread evenly, tokens estimated then corrected, 429 pauses for every caller,
budgets per role and per run (local and on a real Redis), and the errors that say what to fix."""

from __future__ import annotations

import asyncio
import time

import pytest

import myopto
from myopto import BudgetExceeded, ConfigError, InvalidRequest, RateLimited, get_llm, set_role_config
from myopto.limiter import LocalLimiter, RedisLimiter
from myopto.middleware.limits import Limits, estimate_tokens
from myopto.request import Request

# "echo: <prompt>" answers: a one-word prompt costs 1 input and 2 output tokens on the test server
PRICING = {"input": 0.0, "output": 5000.0}  # $0.01 a call


def custom(server, **options):
    set_role_config("executor", backend="CustomLLM", model="test-model", base_url=server.url,
                    api_key="sk-limits-key-000000", **{"retries": 0, **options})


@pytest.mark.parametrize("make", [LocalLimiter, "redis"])
def test_requests_are_spread_at_most_rpm_over_60_a_second_after_a_one_second_burst(make, request):
    limiter = RedisLimiter(request.getfixturevalue("redis_server").url) if make == "redis" else make()
    waits = [limiter.reserve("m", 1200, None, 0) for _ in range(30)]
    assert waits[:20] == [0.0] * 20  # a second's worth at once
    steps = [b - a for a, b in zip(waits[20:], waits[21:])]
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
    with myopto.run("unpriced", max_cost_usd=1.0):
        with pytest.raises(ConfigError, match="run budget on model 'test-model'"):
            get_llm()("x")
    assert server.request_count == 0


def test_a_budget_on_a_model_the_price_map_knows_needs_no_pricing(server):
    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, api_key="sk-x",
                    max_cost_usd=1.0)
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
