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
    # `numbers.Real` promises `<` and `<=`, not `>`
    if not math.isfinite(value) or value < low or (high is not None and not value <= high):
        upper = f" and {high}" if high is not None else ""
        raise InvalidRequest(f"{name} must be between {low}{upper}, got {value!r}")


# As deep as `myopto.request.is_json_data` reads (its bound): deeper is refused, not recursed into.
_MAX_DEPTH = 64


def _json_problem(value: Any, depth: int = 0) -> str | None:
    """What keeps `value` from being JSON data (`myopto.request.is_json_data`: what can be keyed,
    stored and sent), or None. NaN and infinity are refused (JSON cannot carry them, and a
    provider would refuse the request only after it was sent), and so are numbers of other types
    (`Fraction`, `Decimal`, numpy's) that the SDKs cannot encode, sets, bytes and objects."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} (no NaN or infinity: finite numbers only)"
    if depth >= _MAX_DEPTH:
        return f"data nested more than {_MAX_DEPTH} levels deep"
    if isinstance(value, (list, tuple)):
        return next((problem for item in value if (problem := _json_problem(item, depth + 1))), None)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"a {type(key).__name__} key {key!r:.40} (keys are strings)"
            if (problem := _json_problem(item, depth + 1)) is not None:
                return problem
        return None
    hint = " (convert it with int() or float())" if isinstance(value, numbers.Number) else ""
    return f"a {type(value).__module__}.{type(value).__qualname__}{hint}"


def _logit_bias(value: Any) -> dict[str, Any]:
    """`logit_bias` with its token ids as the strings JSON sends (`{42: 5}` and `{"42": 5}` are
    one request); `InvalidRequest` for an id that is not a whole number, or one given twice."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"logit_bias must be a dict of token id -> bias, got {type(value).__name__}")
    biases: dict[str, Any] = {}
    for token, bias in value.items():
        try:
            number = None if isinstance(token, bool) or not isinstance(token, (int, str)) else int(token)
        except ValueError:
            number = None
        if number is None:
            raise InvalidRequest(f"logit_bias keys must be token ids (whole numbers), got {token!r:.40}")
        name = str(number)
        if name in biases:
            raise InvalidRequest(f"logit_bias gives token id {name} twice ({token!r} and another spelling)")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)):
            raise InvalidRequest(f"logit_bias values must be numbers, got {bias!r:.40} for token id {name}")
        biases[name] = bias
    return biases


def _check_types(checked: dict[str, Any]) -> None:
    """Types a provider would refuse only after the request was sent, refused here."""
    tools = checked.get("tools")
    if tools is not None and not (
        isinstance(tools, (list, tuple)) and all(isinstance(tool, Mapping) for tool in tools)
    ):
        raise InvalidRequest(
            f"tools must be a list of tool dicts ({{'type': 'function', 'function': {{...}}}}), got {tools!r:.100}"
        )
    names = _tool_names(tools) if tools is not None else None
    tool_choice = checked.get("tool_choice")
    if tool_choice is not None:
        _check_tool_choice(tool_choice, names)
    for name in ("logprobs", "parallel_tool_calls"):
        if name in checked and not isinstance(checked[name], bool):
            raise InvalidRequest(f"{name} must be True or False, got {checked[name]!r:.100}")
    if "top_logprobs" in checked:
        top = checked["top_logprobs"]
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
            raise InvalidRequest(f"top_logprobs must be a whole number from 0 to 20, got {top!r:.100}")
    for name in ("user", "reasoning_effort"):
        if name in checked and not isinstance(checked[name], str):
            raise InvalidRequest(f"{name} must be a string, got {checked[name]!r:.100}")
    for name in ("presence_penalty", "frequency_penalty", "repetition_penalty", "min_p"):
        value = checked.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidRequest(f"{name} must be a number, got {value!r:.100}")


_TOOL_CHOICES = ("auto", "none", "required")


def _tool_names(tools: Any) -> set[str]:
    """The function names `tools` declares, each checked: a function tool has a `function` dict
    with a name providers take (letters, digits, `_`, `-`, at most 64) and, when given, JSON
    Schema `parameters`; names are unique. Other tool types (a provider's built-in tools) pass."""
    from myopto.output_format import check_schema

    names: set[str] = set()
    for index, tool in enumerate(tools):
        kind = tool.get("type", "function")
        if not isinstance(kind, str):
            raise InvalidRequest(f"tools[{index}]['type'] must be a string such as 'function', got {kind!r:.60}")
        if kind != "function":
            continue
        function = tool.get("function")
        if not isinstance(function, Mapping):
            raise InvalidRequest(
                f"tools[{index}] is a function tool without a 'function' dict: "
                "{'type': 'function', 'function': {'name': ..., 'parameters': {...}}}"
            )
        name = function.get("name")
        if (
            not isinstance(name, str)
            or not 0 < len(name) <= 64
            or not all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
        ):
            raise InvalidRequest(
                f"tools[{index}]['function']['name'] must be 1-64 letters, digits, '_' or '-', got {name!r:.80}"
            )
        if name in names:
            raise InvalidRequest(f"tools declares the function {name!r} twice")
        names.add(name)
        parameters = function.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, Mapping):
                raise InvalidRequest(
                    f"tools[{index}]['function']['parameters'] must be a JSON schema (a dict), got {parameters!r:.80}"
                )
            try:
                check_schema(parameters)
            except InvalidRequest as error:
                raise InvalidRequest(
                    f"tools[{index}] ({name}): its parameters are not a usable JSON schema: {error}"
                ) from None
    return names


def _check_tool_choice(tool_choice: Any, names: set[str] | None) -> None:
    """`tool_choice` is 'auto', 'none', 'required', or a dict; one naming a function names one of
    `tools` (when the same call gives them)."""
    if isinstance(tool_choice, str):
        if tool_choice not in _TOOL_CHOICES:
            raise InvalidRequest(
                f"tool_choice must be one of {_TOOL_CHOICES} or a dict naming a tool, got {tool_choice!r:.60}"
            )
        if tool_choice == "required" and names is not None and not names:
            raise InvalidRequest("tool_choice='required' needs at least one function in tools")
        return
    if not isinstance(tool_choice, Mapping):
        raise InvalidRequest(
            f"tool_choice must be 'auto', 'none', 'required' or a dict naming a tool, got {tool_choice!r:.100}"
        )
    if tool_choice.get("type", "function") != "function":
        return
    function = tool_choice.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str):
        raise InvalidRequest(
            "tool_choice naming a function is {'type': 'function', 'function': {'name': ...}}, "
            f"got {tool_choice!r:.100}"
        )
    if names is not None and name not in names:
        raise InvalidRequest(
            f"tool_choice names the function {name!r}, which tools does not declare (it declares {sorted(names)})"
        )


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"{name} must be a positive integer, got {value!r}")


def check_params(params: Mapping[str, Any], *, where: str = "call") -> dict[str, Any]:
    """Return `params` as a dict with None values dropped; `InvalidRequest` for bad names or values.

    Every value must be JSON data (what can be keyed, stored and sent: `_json_problem`), and the
    known parameters must have the types providers take; all of it before anything is sent."""
    if not params:
        return {}
    checked = {key: value for key, value in params.items() if value is not None}
    unknown = sorted(set(checked) - GENERATION_PARAMS)
    if unknown:
        raise InvalidRequest(
            f"unknown parameter(s) {unknown} for this {where}; known generation parameters: "
            f"{', '.join(sorted(GENERATION_PARAMS))}. Provider-specific fields go in extra_body={{...}}"
        )
    if "logit_bias" in checked:  # token ids may be given as ints: JSON sends them as strings
        checked["logit_bias"] = _logit_bias(checked["logit_bias"])
    for name, value in checked.items():
        problem = _json_problem(value)
        if problem is not None:
            raise InvalidRequest(
                f"{name} must be JSON data (str, finite number, bool, None, and lists and "
                f"dicts of them with string keys); it holds {problem}"
            )
    _check_types(checked)
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
