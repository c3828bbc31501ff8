"""Generation parameters: which names are accepted, and checks on their values."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from myopto.errors import InvalidRequest

# Parameters that decide the answer and travel in `Request.params` (and so in the cache key).
GENERATION_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "max_tokens",
        "max_completion_tokens",
        "max_new_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "n",
        "user",
        "reasoning_effort",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "extra_body",
        # Local models: grammar-constrained JSON decoding (cloud backends enforce JSON natively).
        "constrained",
    }
)


def _number(name: str, value: Any, low: float, high: float | None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRequest(f"{name} must be a number, got {value!r}")
    # NaN compares false with everything, so the range check alone would let it through
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        upper = f" and {high}" if high is not None else ""
        raise InvalidRequest(f"{name} must be between {low}{upper}, got {value!r}")


def _finite(value: Any) -> bool:
    """False when a NaN or infinity sits anywhere in `value`: JSON cannot carry them, and a
    provider would refuse the request only after it was sent."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(item) for item in value)
    return True


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"{name} must be a positive integer, got {value!r}")


def check_params(params: Mapping[str, Any], *, where: str = "call") -> dict[str, Any]:
    """Return `params` as a dict with None values dropped; `InvalidRequest` for bad names or values."""
    if not params:
        return {}
    checked = {key: value for key, value in params.items() if value is not None}
    unknown = sorted(set(checked) - GENERATION_PARAMS)
    if unknown:
        raise InvalidRequest(
            f"unknown parameter(s) {unknown} for this {where}; known generation parameters: "
            f"{', '.join(sorted(GENERATION_PARAMS))}. Provider-specific fields go in extra_body={{...}}"
        )
    for name, value in checked.items():
        if not _finite(value):
            raise InvalidRequest(f"{name} must hold finite numbers only (no NaN or infinity), got {value!r:.200}")
    if "temperature" in checked:
        _number("temperature", checked["temperature"], 0, 2)
    if "top_p" in checked:
        _number("top_p", checked["top_p"], 0, 1)
    for name in ("max_tokens", "max_completion_tokens", "max_new_tokens", "top_k"):
        if name in checked:
            _positive_int(name, checked[name])
    if "n" in checked:  # choices per call: response.choices holds them all
        _positive_int("n", checked["n"])
    if "seed" in checked and (isinstance(checked["seed"], bool) or not isinstance(checked["seed"], int)):
        raise InvalidRequest(f"seed must be an integer, got {checked['seed']!r}")
    if "stop" in checked:
        stop = checked["stop"]
        if isinstance(stop, str):
            checked["stop"] = [stop]
        elif not (isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop)):
            raise InvalidRequest(f"stop must be a string or a list of strings, got {stop!r}")
        else:
            checked["stop"] = list(stop)
    if "constrained" in checked and not isinstance(checked["constrained"], bool):
        raise InvalidRequest(f"constrained must be True or False, got {checked['constrained']!r}")
    if "extra_body" in checked and not isinstance(checked["extra_body"], Mapping):
        raise InvalidRequest("extra_body must be a dict")
    return checked
