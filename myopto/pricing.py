"""Prices: LiteLLM's model price map read as data (no litellm import), and prices users give.

The map is the JSON file the litellm package ships, so costs are the same offline and on every
rerun. A model missing from it, with no price given, costs None: unknown, never silently 0.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from myopto.errors import ConfigError

_MAP_FILE = "model_prices_and_context_window_backup.json"
# LiteLLM prices a Fireworks model's cached prompt tokens at half its input price when the map
# gives no cache-read price (litellm.constants.FIREWORKS_AI_DEFAULT_CACHE_READ_RATE_RATIO)
_FIREWORKS_CACHE_READ_RATIO = 0.5


@functools.lru_cache(maxsize=1)
def price_map() -> dict[str, Any]:
    """LiteLLM's bundled price map ({} when litellm is not installed)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _MAP_FILE
    try:
        prices: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return prices


_PRICING_KEYS = ("input", "output", "cached_input")


def check_pricing(pricing: Any) -> dict[str, float]:
    """A role's `pricing`: USD per million tokens, `{"input": ..., "output": ...}`, and optionally
    `"cached_input"`, the price of prompt tokens served from the provider's prompt cache (without
    it they cost `input`, as providers that publish no cache price bill them)."""
    if not isinstance(pricing, Mapping) or set(pricing) - set(_PRICING_KEYS) or not pricing:
        raise ConfigError(
            'pricing is USD per million tokens: {"input": 2.5, "output": 10.0}, optionally with '
            '"cached_input": 1.25 (prompt tokens served from the provider\'s prompt cache)'
        )
    checked = {}
    for key in _PRICING_KEYS:
        if key == "cached_input" and key not in pricing:
            continue
        value = pricing.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"pricing[{key!r}] must be a number >= 0 (USD per million tokens), got {value!r}")
        checked[key] = float(value)
    return checked


@dataclasses.dataclass(frozen=True)
class Rates:
    """USD per token for each token class a call reports."""

    input: float
    output: float
    cached_input: float
    reasoning: float

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, reasoning_tokens: int = 0
    ) -> float:
        """The call's USD cost, split as LiteLLM's `completion_cost` splits it: cached prompt tokens
        at the cache-read price, the rest of the prompt at the input price; reasoning tokens (part
        of the completion) at the reasoning price, the rest of the completion at the output price."""
        prompt_cost = max(prompt_tokens - cached_tokens, 0) * self.input + cached_tokens * self.cached_input
        if reasoning_tokens > 0:
            completion_cost = (
                max(completion_tokens - reasoning_tokens, 0) * self.output + reasoning_tokens * self.reasoning
            )
        else:
            completion_cost = completion_tokens * self.output
        return prompt_cost + completion_cost


def _entry(model: str) -> Mapping[str, Any] | None:
    """The map's row for `model` (with or without its provider prefix); an alias row
    (`{"alias_of": ...}`, such as "claude-sonnet-latest") is followed to its model's row."""
    prices = price_map()
    for name in (model, model.split("/", 1)[-1]):
        entry = prices.get(name)
        if isinstance(entry, Mapping) and isinstance(entry.get("alias_of"), str):
            entry = prices.get(entry["alias_of"])
        if isinstance(entry, Mapping):
            return entry
    return None


def _rate(entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)  # some entries hold numbers as text ("3e-7")
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=256)
def _thresholds(model: str) -> tuple[tuple[float, str], ...]:
    """The prompt sizes above which `model` is billed at other rates (`..._above_200k_tokens`):
    (tokens, the size as the map spells it), ascending."""
    entry = _entry(model) or {}
    found = set()
    for key in entry:
        if key.startswith(
            ("input_cost_per_token_above_", "output_cost_per_token_above_", "cache_read_input_token_cost_above_")
        ) and key.endswith("_tokens"):
            size = key.rsplit("_above_", 1)[1][: -len("_tokens")]
            try:
                found.add((float(size.removesuffix("k")) * (1000 if size.endswith("k") else 1), size))
            except ValueError:
                continue
    return tuple(sorted(found))


_Default = TypeVar("_Default", bound=float | None)


def _rate_or(entry: Mapping[str, Any], key: str, default: _Default) -> float | _Default:
    rate = _rate(entry, key)
    return default if rate is None else rate


def rates_from_map(model: str, prompt_tokens: int = 0) -> Rates | None:
    """`model`'s rates in LiteLLM's price map for a call with `prompt_tokens` (long prompts cost
    more on some models: `input_cost_per_token_above_200k_tokens`), None when unknown.

    As LiteLLM reads the map: a missing cache-read price is the input price, a missing
    reasoning price the output price, a `tiered_pricing` table bills every token at the tier
    the prompt falls in. Priced by name alone: service tiers, batch prices, off-peak hours and
    regional uplifts (which depend on when and how the call was made) and audio, image and
    cache-write tokens (which myopto does not count) are not applied.
    """
    entry = _entry(model)
    if entry is None:
        return None
    input_rate, output_rate = _rate(entry, "input_cost_per_token"), _rate(entry, "output_cost_per_token")
    if input_rate is None or output_rate is None:
        return None
    tier = _tier(entry, prompt_tokens)
    if tier is not None:
        return _tier_rates(entry, tier, output_rate)
    cached_rate = _rate(entry, "cache_read_input_token_cost")
    # xAI bills the higher tier from the threshold itself, the others above it (as LiteLLM does)
    inclusive = model.startswith("xai/")
    for threshold, size in _thresholds(model):
        if prompt_tokens > threshold or (inclusive and prompt_tokens == threshold):
            input_rate = _rate_or(entry, f"input_cost_per_token_above_{size}_tokens", input_rate)
            output_rate = _rate_or(entry, f"output_cost_per_token_above_{size}_tokens", output_rate)
            cached_rate = _rate_or(entry, f"cache_read_input_token_cost_above_{size}_tokens", cached_rate)
    if cached_rate is None and model.startswith("fireworks_ai/"):
        cached_rate = input_rate * _FIREWORKS_CACHE_READ_RATIO  # Fireworks' published default
    reasoning_rate = _rate(entry, "output_cost_per_reasoning_token")
    return Rates(
        input=input_rate,
        output=output_rate,
        cached_input=input_rate if cached_rate is None else cached_rate,
        reasoning=output_rate if reasoning_rate is None else reasoning_rate,
    )


def _tier(entry: Mapping[str, Any], prompt_tokens: int) -> Mapping[str, Any] | None:
    """The row of a `tiered_pricing` table a call of `prompt_tokens` is billed at, as LiteLLM
    picks it: the tier with start < prompt_tokens <= end, else the last one; all its tokens are
    billed at that tier's rates."""
    table = entry.get("tiered_pricing")
    if not isinstance(table, list) or prompt_tokens <= 0:
        return None
    ranged = []
    for tier in table:
        bounds = tier.get("range") if isinstance(tier, Mapping) else None
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(_is_count(bound) for bound in bounds):
            ranged.append((float(bounds[0]), float(bounds[1]), tier))
    if not ranged:
        return None
    ranged.sort(key=lambda row: row[0])
    tier = next((row[2] for row in ranged if row[0] < prompt_tokens <= row[1]), ranged[-1][2])
    return tier if tier.get("input_cost_per_token") is not None else None


def _is_count(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _tier_rates(entry: Mapping[str, Any], tier: Mapping[str, Any], model_output: float) -> Rates:
    input_rate = _rate(tier, "input_cost_per_token") or 0.0
    output_rate = _rate_or(tier, "output_cost_per_token", model_output)
    reasoning = _rate(tier, "output_cost_per_reasoning_token")
    if reasoning is None:
        model_reasoning = _rate(entry, "output_cost_per_reasoning_token")
        reasoning = _rate(tier, "output_cost_per_token") if "output_cost_per_token" in tier else model_reasoning
    return Rates(
        input=input_rate,
        output=output_rate,
        cached_input=_rate_or(tier, "cache_read_input_token_cost", input_rate),
        reasoning=output_rate if reasoning is None else reasoning,
    )


def cost_from_map(
    model: str, prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> float | None:
    """USD for a call by model name ("gpt-4o-mini" or "openai/gpt-4o-mini"), None when unknown.

    `cached_tokens` (of the prompt) and `reasoning_tokens` (of the completion) are priced at the
    map's cache-read and reasoning prices, so the cost equals LiteLLM's `completion_cost` for
    the same usage (see `rates_from_map` for what is not priced).
    """
    rates = rates_from_map(model, prompt_tokens)
    if rates is None:
        return None
    return rates.cost(prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens)


def cost_from_pricing(
    pricing: Mapping[str, float],
    prompt_tokens: int,
    completion_tokens: int,
    *,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> float:
    """USD for a call at a role's own `pricing`: cached prompt tokens at `cached_input` (else at
    `input`), reasoning tokens at `output`."""
    input_price, output_price = pricing["input"], pricing["output"]
    cached_price = pricing.get("cached_input", input_price)
    prompt = max(prompt_tokens - cached_tokens, 0) * input_price + cached_tokens * cached_price
    return (prompt + completion_tokens * output_price) / 1_000_000
