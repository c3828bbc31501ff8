"""Cost by token class: myopto's price-map reading (what CustomLLM and budgets use) equals
LiteLLM's own `completion_cost` for the same usage, cached prompt tokens and reasoning tokens
included, and a role's own pricing takes a cached-input price."""

import pytest

from myopto import ConfigError
from myopto.pricing import check_pricing, cost_from_map, cost_from_pricing

USAGES = [
    # prompt, completion, cached, reasoning
    (1000, 200, 0, 0),
    (1_000_000, 1000, 900_000, 0),
    (1000, 500, 0, 300),
    (300_000, 500, 250_000, 100),  # past the 200k/256k thresholds and tiers
    (200_000, 10, 10, 0),  # exactly on a threshold: xAI bills the higher tier there, others do not
    (10, 10, 10, 10),
]
MODELS = [
    "gpt-4o-mini",  # cache-read price half the input price
    "openai/gpt-4o-mini",
    "o3-mini",
    "dashscope/qwen-turbo",  # its own reasoning price
    "gemini/gemini-2.5-pro",  # above-200k prices, cached ones too
    "xai/grok-4.3",  # above-200k prices from the threshold itself
    "fireworks_ai/accounts/fireworks/models/deepseek-r1",  # no cache price: Fireworks' default half
    "opencode_go/qwen3.7-plus",  # a tiered_pricing table
    "claude-sonnet-latest",  # an alias row, followed to its model
]


def litellm_cost(model, prompt, completion, cached, reasoning):
    import litellm
    from litellm import ModelResponse
    from litellm.types.utils import CompletionTokensDetailsWrapper, PromptTokensDetailsWrapper, Usage

    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=cached) if cached else None,
        completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=reasoning) if reasoning else None,
    )
    return litellm.completion_cost(completion_response=ModelResponse(model=model, usage=usage), model=model)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("usage", USAGES, ids=lambda usage: "-".join(map(str, usage)))
def test_price_map_cost_equals_litellms_completion_cost(model, usage):
    prompt, completion, cached, reasoning = usage
    ours = cost_from_map(model, prompt, completion, cached_tokens=cached, reasoning_tokens=reasoning)
    assert ours == pytest.approx(litellm_cost(model, *usage), rel=1e-12, abs=1e-18)


def test_cached_and_reasoning_tokens_change_the_cost_where_the_map_prices_them_apart():
    assert cost_from_map("gpt-4o-mini", 1_000_000, 0, cached_tokens=900_000) == pytest.approx(0.0825)
    assert cost_from_map("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    # qwen-turbo: $0.2/M output, $0.5/M reasoning
    assert cost_from_map("dashscope/qwen-turbo", 0, 1_000_000, reasoning_tokens=1_000_000) == pytest.approx(0.5)
    assert cost_from_map("no-such-model", 1, 1, cached_tokens=1) is None


def test_role_pricing_takes_a_cached_input_price():
    pricing = check_pricing({"input": 1.0, "output": 2.0, "cached_input": 0.1})
    assert cost_from_pricing(pricing, 1000, 10, cached_tokens=800) == pytest.approx(
        (200 * 1.0 + 800 * 0.1 + 10 * 2.0) / 1e6
    )
    plain = check_pricing({"input": 1.0, "output": 2.0})
    assert plain == {"input": 1.0, "output": 2.0}  # cached prompt tokens cost `input` without it
    assert cost_from_pricing(plain, 1000, 10, cached_tokens=800) == pytest.approx((1000 * 1.0 + 10 * 2.0) / 1e6)


@pytest.mark.parametrize(
    "pricing",
    [
        {"input": 1.0, "output": 2.0, "cached_input": -1},
        {"input": 1.0, "output": 2.0, "cached_input": "cheap"},
        {"input": 1.0, "output": 2.0, "cached_input": float("nan")},
        {"input": 1.0, "output": 2.0, "cache_read": 0.5},
        {"input": float("nan"), "output": 2.0},  # NaN compares false with everything: no budget could hold
        {"input": 1.0, "output": float("inf")},
    ],
)
def test_a_bad_cached_input_price_is_a_config_error_that_says_what_to_give(pricing):
    with pytest.raises(ConfigError, match=r"cached_input|USD per million|must be a number >= 0"):
        check_pricing(pricing)
