"""One price map for every cost myopto reports, whichever package imported LiteLLM first.

LiteLLM downloads its model price map from GitHub when it is imported, unless
`LITELLM_LOCAL_MODEL_COST_MAP` is set: offline that is connection warnings and seconds of waiting
before the first call, online prices that can change between a run and its rerun. myopto prices
every call from the map the installed litellm package ships (`myopto.pricing.price_map()`), so
a cost is the same offline, online and on every rerun:

- `prefer_bundled_price_map()` runs when myopto is imported: a LiteLLM imported afterwards (by
  myopto or anyone) loads the map it ships and never asks the network. A value the user set wins.
- When LiteLLM was imported first and fetched another map (Trace's `opto` imports it),
  `litellm_cost` prices a LiteLLM answer from the bundled map's entry for its model, through
  LiteLLM's own `completion_cost`: the cost a myopto-first process would have reported.

Nothing here imports litellm; `litellm_cost` is given the module by the backend that has it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from myopto.pricing import price_map

LOCAL_MAP_VARIABLE = "LITELLM_LOCAL_MODEL_COST_MAP"
_MAP_FILE = "model_prices_and_context_window_backup.json"


def prefer_bundled_price_map() -> None:
    """Have a LiteLLM imported from now on (here or in a child process) load the price map it
    ships instead of fetching one. Leaves a value the user set alone."""
    os.environ.setdefault(LOCAL_MAP_VARIABLE, "True")


@functools.lru_cache(maxsize=1)
def bundled_revision() -> str | None:
    """The git blob id of litellm's bundled price map file, as LiteLLM names the map it loaded
    (None when litellm is not installed)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        body = (Path(next(iter(spec.submodule_search_locations))) / _MAP_FILE).read_bytes()
    except OSError:
        return None
    return hashlib.sha1(b"blob %d\0" % len(body) + body, usedforsecurity=False).hexdigest()


def litellm_loaded_bundled_map() -> bool:
    """True when the imported LiteLLM priced from its bundled map (also after a failed fetch);
    False when it fetched another one, or cannot say (an older litellm)."""
    try:
        from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_provenance
    except ImportError:
        return False
    revision = get_model_cost_map_provenance().get("source_revision")
    return revision is not None and revision == bundled_revision()


def bundled_entry(model: str) -> Mapping[str, Any] | None:
    """The bundled map's prices for `model` ("gpt-4o-mini" or "openai/gpt-4o-mini"; an alias
    row is followed to its model), None when the map has no prices for it."""
    prices = price_map()
    for name in (model, model.split("/", 1)[-1]):
        entry = prices.get(name)
        if isinstance(entry, Mapping) and isinstance(entry.get("alias_of"), str):
            entry = prices.get(entry["alias_of"])
        if isinstance(entry, Mapping) and entry.get("input_cost_per_token") is not None:
            return entry
    return None


def litellm_cost(litellm: Any, raw: Any, model: str) -> float | None:
    """USD cost of a LiteLLM answer `raw` to a call for `model`, priced from the bundled map;
    None when the model is not in it (unknown, not free).

    When LiteLLM itself loaded the bundled map, its own figure is used (the `response_cost` it
    computed during the call, else `completion_cost`). Otherwise the bundled entry of the model
    asked for (or of the model that answered) is handed to `completion_cost`, which then prices
    every token class (cached prompt tokens, reasoning tokens) from it.
    """
    try:
        if litellm_loaded_bundled_map():
            cost = (getattr(raw, "_hidden_params", None) or {}).get("response_cost")
            if cost is None:
                # models the map does not list are answered without asking LiteLLM: its
                # `completion_cost` raises for them, and raising costs more than the call
                prices = litellm.model_cost
                if model not in prices and model.split("/", 1)[-1] not in prices:
                    return None
                cost = litellm.completion_cost(completion_response=raw, model=model)
        else:
            entry = bundled_entry(model) or bundled_entry(str(getattr(raw, "model", None) or ""))
            if entry is None:
                return None
            cost = litellm.completion_cost(
                completion_response=raw, model=model, requested_model_info_override=dict(entry)
            )
        return float(cost)
    except Exception:  # noqa: BLE001 - LiteLLM raises a variety of errors for answers it cannot price
        return None


__all__ = [
    "bundled_entry",
    "bundled_revision",
    "litellm_cost",
    "litellm_loaded_bundled_map",
    "prefer_bundled_price_map",
]
