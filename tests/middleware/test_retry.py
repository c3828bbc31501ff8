"""Retry and the error model, proven by fault injection over real HTTP (openai and litellm clients)."""

import asyncio
import concurrent.futures
import math
import time

import pytest

from myopto import (
    AuthenticationFailed,
    BackendError,
    BadRequest,
    ConfigError,
    RateLimited,
    ServerError,
    get_llm,
    get_usage_summary,
    set_role_config,
)
from myopto.middleware.retry import Retry


def custom(server, **options):
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, api_key="k", **options)


def litellm_role(server, **options):
    set_role_config(
        "executor", backend="LiteLLM", model="openai/gpt-4o-mini", base_url=server.url, api_key="k", **options
    )


FAST = {"retries": 10, "retry_backoff": 0.001, "timeout": 1.0}  # a normal answer takes ms, a "delay" fault 2 s


def test_500_calls_through_openai_with_20_percent_faults_all_succeed_without_multiplied_retries(server):
    custom(server, **FAST)
    server.chaos(0.2, delay=2.0, seed=1)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: get_llm()(f"call {i}"), range(500)))
    assert [r.text for r in responses] == [f"echo: call {i}" for i in range(500)]
    assert server.injected_faults > 60  # about 20% of the requests
    assert server.request_count == 500 + server.injected_faults
    row = get_usage_summary()["by_role"]["executor"]
    assert row["calls"] == 500 and row["errors"] == 0
    assert row["prompt_tokens"] == 1000  # each successful call counted once


async def test_500_async_calls_through_litellm_with_20_percent_faults_all_succeed(server):
    litellm_role(server, **FAST)
    server.chaos(0.2, delay=2.0, seed=2)
    semaphore = asyncio.Semaphore(16)

    async def call(i):
        async with semaphore:
            return await get_llm().acall(f"call {i}")

    responses = await asyncio.gather(*(call(i) for i in range(500)))
    assert [r.text for r in responses] == [f"echo: call {i}" for i in range(500)]
    assert server.injected_faults > 60
    assert server.request_count == 500 + server.injected_faults
    assert get_usage_summary()["by_role"]["executor"]["calls"] == 500


@pytest.mark.parametrize("role", [custom, litellm_role])
@pytest.mark.parametrize(
    "status, kind", [(401, AuthenticationFailed), (403, AuthenticationFailed), (400, BadRequest), (404, BadRequest)]
)
def test_client_errors_fail_at_once_after_one_request(server, role, status, kind):
    role(server, **FAST)
    server.fail(status, times=5)
    with pytest.raises(kind) as error:
        get_llm()("x")
    assert server.request_count == 1
    assert (error.value.attempts, error.value.role, error.value.status_code) == (1, "executor", status)
    assert error.value.model in ("m", "openai/gpt-4o-mini")
    assert error.value.__cause__ is not None


def test_exhausted_retries_raise_the_last_error_with_the_attempt_count(server):
    custom(server, retries=2, retry_backoff=0.001)
    server.fail(503, times=10)
    with pytest.raises(ServerError) as error:
        get_llm()("x")
    assert server.request_count == 3 and error.value.attempts == 3
    assert "after 3 attempts" in str(error.value)


def test_retry_after_is_honoured(server):
    custom(server, retry_backoff=0.001)
    server.fail(429, retry_after=0.4)
    start = time.monotonic()
    assert get_llm()("x").text == "echo: x"
    assert time.monotonic() - start >= 0.4
    assert server.request_count == 2


def test_a_deadline_stops_retrying_on_time(server):
    custom(server, retries=100, retry_backoff=0.2, deadline=1.0)
    server.fail(503, times=1000)
    start = time.monotonic()
    with pytest.raises(ServerError):
        get_llm()("x")
    elapsed = time.monotonic() - start
    assert elapsed < 1.6  # the deadline, plus one request's round trip at most
    assert 2 <= server.request_count < 100


def test_a_retry_after_longer_than_the_deadline_is_not_waited_for(server):
    custom(server, deadline=0.5)
    server.fail(429, retry_after=30)
    start = time.monotonic()
    with pytest.raises(RateLimited) as error:
        get_llm()("x")
    assert time.monotonic() - start < 1.0
    assert error.value.retry_after == 30


def test_each_attempt_timeout_is_clipped_to_the_deadline(server):
    custom(server, deadline=0.5, timeout=30)
    server.delay(5)
    start = time.monotonic()
    with pytest.raises(BackendError):
        get_llm()("x")
    assert time.monotonic() - start < 1.5


async def test_async_retry_does_not_block_the_event_loop(server, loop_ticks):
    custom(server, retry_backoff=0.001)
    server.fail(429, retry_after=0.5)
    async with loop_ticks() as ticks:
        response = await get_llm().acall("x")
    assert response.text == "echo: x"
    assert ticks.count >= 6  # the loop kept running through the 0.5 s wait


def test_per_call_retries_override_the_role(server):
    custom(server, retries=5, retry_backoff=0.001)
    server.fail(500, times=3)
    with pytest.raises(ServerError):
        get_llm()("x", retries=0)
    assert server.request_count == 1


def test_our_own_bad_input_is_never_retried_and_never_sent(server):
    custom(server)
    with pytest.raises(ValueError):
        get_llm()("x", temperature=9)
    assert server.request_count == 0


@pytest.mark.parametrize("options", [{"retries": -1}, {"deadline": 0}, {"retry_backoff": -1}, {"reasks": -2}])
def test_bad_retry_options_are_config_errors(server, options):
    with pytest.raises(ConfigError):
        custom(server, **options)


def test_retry_describes_itself():
    assert Retry(retries=2, deadline=9).describe() == "retry (up to 2 retries within 9 s, transient errors only)"


@pytest.mark.parametrize(
    "option, value",
    [
        ("retry_backoff", math.nan),
        ("retry_backoff", math.inf),
        ("retry_backoff", -0.5),
        ("retry_backoff", "0.5"),
        ("retry_max_wait", math.nan),
        ("retry_max_wait", math.inf),
        ("retry_max_wait", -1),
        ("deadline", math.nan),
        ("deadline", math.inf),
        ("deadline", -1),
        ("deadline", True),
    ],
)
def test_non_finite_or_negative_retry_bounds_are_config_errors_that_name_the_option(server, option, value):
    with pytest.raises(ConfigError, match=f"{option} must be a finite number of seconds") as error:
        custom(server, **{option: value})
    assert repr(value) in str(error.value)
    arguments = {"retry_backoff": "backoff", "retry_max_wait": "max_wait"}
    with pytest.raises(ConfigError, match=option):
        Retry(**{arguments.get(option, option): value})
    assert server.request_count == 0


def test_a_nan_backoff_no_longer_means_no_backoff(server):
    with pytest.raises(ConfigError, match="retry_backoff"):
        custom(server, retries=3, retry_backoff=math.nan)
    custom(server, retries=3, retry_backoff=0.2)  # a real backoff waits between attempts
    server.fail(503, times=1)
    start = time.monotonic()
    assert get_llm()("x").text == "echo: x"
    assert time.monotonic() - start >= 0.1


@pytest.mark.parametrize("retry_after", [31536000, math.inf, 1e300])
def test_an_absurd_retry_after_waits_at_most_the_pause_cap_then_tries_again(server, monkeypatch, retry_after):
    monkeypatch.setenv("MYOPTO_MAX_PAUSE_SECONDS", "0.4")
    custom(server, retry_backoff=0.001)
    server.fail(429, retry_after=retry_after)
    start = time.monotonic()
    assert get_llm()("x").text == "echo: x"
    assert 0.35 <= time.monotonic() - start < 2.0
    assert server.request_count == 2


@pytest.mark.parametrize("retry_after", [math.nan, -5])
def test_a_retry_after_that_is_no_length_of_time_falls_back_to_the_backoff(server, retry_after):
    custom(server, retry_backoff=0.001)
    server.fail(429, retry_after=retry_after)
    start = time.monotonic()
    assert get_llm()("x").text == "echo: x"
    assert time.monotonic() - start < 0.5 and server.request_count == 2


def test_a_capped_retry_after_still_stops_at_the_deadline(server):
    custom(server, deadline=0.5)  # the default cap is 300 s: longer than the deadline, so no wait
    server.fail(429, retry_after=math.inf)
    start = time.monotonic()
    with pytest.raises(RateLimited):
        get_llm()("x")
    assert time.monotonic() - start < 1.0 and server.request_count == 1


def test_retry_takes_its_pause_cap_as_an_argument_or_from_the_setting(monkeypatch):
    assert Retry().max_pause == 300
    monkeypatch.setenv("MYOPTO_MAX_PAUSE_SECONDS", "12.5")
    assert Retry().max_pause == 12.5 and Retry(max_pause=2).max_pause == 2
    with pytest.raises(ConfigError, match="max_pause"):
        Retry(max_pause=math.inf)
