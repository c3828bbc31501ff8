"""Prices: LiteLLM's model price map read as data (no litellm import), and prices users give.

The map is the JSON file the litellm package ships, so costs are the same offline and on every
rerun. A model missing from it, with no price given, costs None: unknown, never silently 0.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from myopto.errors import ConfigError

_MAP_FILE = "model_prices_and_context_window_backup.json"


@functools.lru_cache(maxsize=1)
def price_map() -> dict[str, Any]:
    """LiteLLM's bundled price map ({} when litellm is not installed)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _MAP_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def check_pricing(pricing: Any) -> dict[str, float]:
    """A role's `pricing`: USD per million tokens, `{"input": ..., "output": ...}`."""
    if not isinstance(pricing, Mapping) or set(pricing) - {"input", "output"} or not pricing:
        raise ConfigError('pricing is USD per million tokens: {"input": 2.5, "output": 10.0}')
    checked = {}
    for key in ("input", "output"):
        value = pricing.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"pricing[{key!r}] must be a number >= 0 (USD per million tokens), got {value!r}")
        checked[key] = float(value)
    return checked


def cost_from_map(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for a call by model name ("gpt-4o-mini" or "openai/gpt-4o-mini"), None when unknown."""
    prices = price_map()
    entry = prices.get(model) or prices.get(model.split("/", 1)[-1])
    if not isinstance(entry, Mapping):
        return None
    input_price = entry.get("input_cost_per_token")
    output_price = entry.get("output_cost_per_token")
    if input_price is None or output_price is None:
        return None
    return prompt_tokens * float(input_price) + completion_tokens * float(output_price)


def cost_from_pricing(pricing: Mapping[str, float], prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * pricing["input"] + completion_tokens * pricing["output"]) / 1_000_000
