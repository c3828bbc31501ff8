import threading

import pytest
from testkit import in_threads, serve, use_cache

from myopto import (
    BackendError,
    configure_usage,
    get_cost_by_role,
    get_llm,
    get_tokens_by_role,
    get_total_cost,
    get_usage_summary,
    print_usage_summary,
    reset_usage,
    set_role_config,
)


@pytest.fixture
def two_roles(server):
    set_role_config("executor", backend="CustomLLM", model="exec-model", base_url=server.url, retries=0)
    set_role_config("optimizer", backend="LiteLLM", model="openai/gpt-4o-mini", base_url=server.url, api_key="k")
    return server


def test_tokens_per_role_match_what_the_server_reported(two_roles):
    get_llm("executor")("one two three")  # 3 prompt, 5 completion ("echo: one two three")
    get_llm("optimizer")("four")  # 1 prompt, 2 completion
    get_llm("optimizer")("five six")  # 2 prompt, 3 completion
    tokens = get_tokens_by_role()
    assert tokens["executor"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert tokens["optimizer"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    summary = get_usage_summary()
    assert summary["by_role"]["optimizer"]["calls"] == 2
    assert summary["by_model"]["exec-model"]["calls"] == 1


def test_costs_known_unknown_and_totals(two_roles):
    get_llm("executor")("x")  # CustomLLM: no price known
    get_llm("optimizer")("x")  # gpt-4o-mini: priced by LiteLLM's map
    costs = get_cost_by_role()
    assert costs["optimizer"] > 0 and costs["executor"] == 0
    assert get_total_cost() == pytest.approx(costs["optimizer"])
    summary = get_usage_summary()
    assert summary["by_role"]["executor"]["unknown_cost_calls"] == 1
    assert summary["cost_known"] is False


def test_errors_are_counted(two_roles):
    two_roles.fail(400)
    with pytest.raises(BackendError):
        get_llm("executor")("x")
    assert get_usage_summary()["by_role"]["executor"]["errors"] == 1


def test_disabled_tracking_records_nothing_and_reset_forgets(two_roles):
    configure_usage(False)
    get_llm("executor")("x")
    assert get_usage_summary()["total"]["calls"] == 0
    configure_usage(True)
    get_llm("executor")("x")
    assert get_usage_summary()["total"]["calls"] == 1
    reset_usage()
    assert get_usage_summary()["total"]["calls"] == 0


def test_usage_is_exact_under_threads(two_roles):
    def work():
        for _ in range(25):
            get_llm("executor")("a b")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    row = get_usage_summary()["by_role"]["executor"]
    assert row["calls"] == 200 == two_roles.request_count
    assert row["prompt_tokens"] == 400 and row["completion_tokens"] == 600


def test_print_usage_summary_prints_a_table(two_roles, capsys):
    get_llm("optimizer")("x")
    print_usage_summary()
    out = capsys.readouterr().out
    assert "role optimizer" in out and "model openai/gpt-4o-mini" in out
    assert "total: 1 calls" in out


def test_usage_is_exact_under_32_threads_by_role_and_model(server):
    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, retries=0)
    set_role_config("optimizer", backend="CustomLLM", model="other-model", base_url=server.url, retries=0)

    def work(n):
        role = "executor" if n % 2 else "optimizer"
        for _ in range(200):
            get_llm(role)("a b c")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = get_usage_summary()
    assert server.request_count == 6400
    for role, model in (("executor", "gpt-4o-mini"), ("optimizer", "other-model")):
        assert summary["by_role"][role]["calls"] == 3200 == summary["by_model"][model]["calls"]
        assert summary["by_role"][role]["prompt_tokens"] == 3 * 3200
        assert summary["by_role"][role]["completion_tokens"] == 4 * 3200  # "echo: a b c"
    from myopto.pricing import cost_from_map

    assert summary["by_role"]["executor"]["cost"] == pytest.approx(3200 * cost_from_map("gpt-4o-mini", 3, 4))
    assert summary["by_role"]["optimizer"]["unknown_cost_calls"] == 3200


def test_cached_calls_count_as_cached_with_the_saving(server, tmp_path):
    use_cache(server, tmp_path / "c", model="gpt-4o-mini", api_key=None)
    first = get_llm()("price me")
    get_llm()("price me")
    row = get_usage_summary()["by_role"]["executor"]
    assert (row["calls"], row["cache_hits"]) == (2, 1)
    assert row["cost"] == pytest.approx(first.cost)
    assert row["saved_cost"] == pytest.approx(first.cost)


def test_a_customllm_model_named_like_a_known_one_uses_the_price_map(server):
    set_role_config("executor", backend="CustomLLM", model="gpt-4o", base_url=server.url)
    response = get_llm()("one two")
    from myopto.pricing import price_map

    entry = price_map()["gpt-4o"]
    expected = 2 * entry["input_cost_per_token"] + 3 * entry["output_cost_per_token"]
    assert response.cost == pytest.approx(expected)


def test_user_pricing_per_role(server):
    set_role_config(
        "executor", backend="CustomLLM", model="my-finetune", base_url=server.url, pricing={"input": 1.0, "output": 2.0}
    )
    response = get_llm()("a b c d")  # 4 prompt tokens, 5 completion
    assert response.cost == pytest.approx((4 * 1.0 + 5 * 2.0) / 1e6)
    assert get_usage_summary()["cost_known"] is True


def test_bad_pricing_is_a_config_error(server):
    from myopto import ConfigError

    with pytest.raises(ConfigError, match="per million tokens"):
        set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, pricing={"in": 1})


@pytest.fixture
def priced_cache(server, tmp_path):
    use_cache(server, tmp_path / "c", model="gpt-4o-mini", api_key=None)
    server.latency = 0.3
    return server


def assert_paid_once(server, results):
    paid = [r for r in results if not r.cached]
    assert server.request_count == 1 and len(paid) == 1 and paid[0].cost > 0
    row = get_usage_summary()["by_role"]["executor"]
    assert (row["calls"], row["cache_hits"], row["errors"]) == (8, 7, 0)
    assert row["cost"] == pytest.approx(paid[0].cost)  # what the server was paid for, once
    assert row["saved_cost"] == pytest.approx(7 * paid[0].cost)
    assert get_total_cost() == pytest.approx(paid[0].cost)


def test_eight_threads_sharing_one_call_pay_for_it_once_and_count_seven_hits(priced_cache):
    results = in_threads(8, lambda: get_llm()("the same question"))
    assert_paid_once(priced_cache, results)


async def test_eight_tasks_sharing_one_call_pay_for_it_once_and_count_seven_hits(priced_cache):
    import asyncio

    results = await asyncio.gather(*(get_llm().acall("the same question") for _ in range(8)))
    assert_paid_once(priced_cache, results)


def test_the_summary_counts_prompt_tokens_served_from_the_providers_cache(server, capsys):
    from myopto.testing.server import Answer

    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, retries=0)
    server.reply(
        Answer(
            content="a b",
            reasoning_content="hmm",
            usage={"prompt_tokens": 5000, "prompt_tokens_details": {"cached_tokens": 4096}},
        )
    )
    get_llm()("x")
    row = get_usage_summary()["by_role"]["executor"]
    assert (row["prompt_tokens"], row["cached_tokens"], row["reasoning_tokens"]) == (5000, 4096, 1)
    print_usage_summary()
    out = capsys.readouterr().out
    header, _, executor = out.splitlines()[:3]
    assert "cache-read" in header and executor.split()[:7] == ["role", "executor", "1", "0", "0", "5000", "4096"]
    assert "4096 prompt tokens read from the providers' prompt caches" in out


def test_role_pricing_with_a_cached_input_price_prices_cached_tokens_at_it(server):
    from myopto.testing.server import Answer

    serve(server, model="my-finetune", retries=0, pricing={"input": 1.0, "output": 2.0, "cached_input": 0.1})
    server.reply(
        Answer(content="ten words " * 5, usage={"prompt_tokens": 1000, "prompt_tokens_details": {"cached_tokens": 800}})
    )
    response = get_llm()("x")
    assert response.cost == pytest.approx((200 * 1.0 + 800 * 0.1 + 10 * 2.0) / 1e6)
    assert get_usage_summary()["by_role"]["executor"]["cost"] == pytest.approx(response.cost)
