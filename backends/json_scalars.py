"""The shortest value of a scalar JSON schema (integer, number, string), for `json_shortest`.

A number is the shortest one within the bounds (`minimum`, `exclusiveMaximum`, draft 4's
boolean exclusives...), a multiple of `multipleOf` where the grammar enforces it; a string is
`minLength` characters, or a short value of its `format`, or a shortest string its `pattern`
matches, read with Python's own regex parser (lookarounds ignored, as the grammar does).
A subschema that no value satisfies raises `NoValue`, saying where and why.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from typing import Any

# A short value of each format the grammar enforces (each accepted by xgrammar's rule for it).
FORMAT_EXAMPLES = {
    "email": "a@a",
    "date": "2000-01-01",
    "time": "00:00:00Z",
    "date-time": "2000-01-01T00:00:00Z",
    "duration": "P0D",
    "uri": "a:",
    "uri-reference": "",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "0.0.0.0",
    "ipv6": "::",
    "hostname": "a",
    "uri-template": "",
    "json-pointer": "",
    "relative-json-pointer": "0",
}


class NoValue(Exception):
    """No finite value satisfies the subschema at `where`."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"at {where or '(root)'}: {why}")


def compact(value: Any) -> str:
    """`value` as compact JSON text, as the grammar writes it (its length decides "shortest")."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def whole(value: Any) -> int | None:
    """`value` when it is a whole number (a count such as `minItems`), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number_bounds(node: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low is exclusive, high, high is exclusive), draft 4's boolean exclusives included."""

    def number(key: str) -> float | None:
        value = node.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    low, high = number("minimum"), number("maximum")
    low_open, high_open = node.get("exclusiveMinimum") is True, node.get("exclusiveMaximum") is True
    exclusive_low, exclusive_high = number("exclusiveMinimum"), number("exclusiveMaximum")
    if exclusive_low is not None and (low is None or exclusive_low >= low):
        low, low_open = exclusive_low, True
    if exclusive_high is not None and (high is None or exclusive_high <= high):
        high, high_open = exclusive_high, True
    return low, low_open, high, high_open


def _within(value: float, low: float | None, low_open: bool, high: float | None, high_open: bool) -> bool:
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return not (high is not None and (value > high or (high_open and value == high)))


def shortest_integer(node: Mapping[str, Any], where: str) -> int:
    """0 when the bounds allow it, else the allowed multiple of `multipleOf` nearest to 0."""
    low, low_open, high, high_open = _number_bounds(node)
    first = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
    last = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
    if first is not None and last is not None and first > last:
        raise NoValue(where, f"no integer lies between {low} and {high}")
    step = node.get("multipleOf")
    step = step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else 1
    if (first is None or first <= 0) and (last is None or last >= 0):
        return 0
    # a positive first multiple, else every allowed integer is negative
    value = math.ceil(first / step) * step if first is not None and first > 0 else math.floor((last or 0) / step) * step
    if (first is not None and value < first) or (last is not None and value > last):
        raise NoValue(where, f"no multiple of {step} lies between {low} and {high}")
    return value


def shortest_number(node: Mapping[str, Any], where: str) -> int | float:
    """The shortest-written number within the bounds (0, a bound, a whole number beside one, or
    their middle)."""
    low, low_open, high, high_open = _number_bounds(node)
    candidates: list[float] = [0]
    for bound in (low, high):
        if bound is not None:
            candidates += [bound, math.floor(bound) + 1, math.ceil(bound) - 1]
    if low is not None and high is not None:
        candidates.append((low + high) / 2)
    fitting = [c for c in candidates if _within(c, low, low_open, high, high_open)]
    if not fitting:
        raise NoValue(where, f"no number lies between {low} and {high}")
    step = node.get("multipleOf")
    if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
        fitting = [c for c in fitting if math.isclose(c / step, round(c / step))] or fitting  # the grammar ignores it
    best = min(fitting, key=lambda c: len(compact(int(c) if float(c).is_integer() else c)))
    return int(best) if float(best).is_integer() else best


def shortest_string(node: Mapping[str, Any], where: str) -> str:
    """A shortest match of the string's pattern, else a short value of its format, else
    `minLength` letters."""
    pattern = node.get("pattern")
    if isinstance(pattern, str):  # the grammar ignores minLength / maxLength beside a pattern
        return _shortest_match(pattern)
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in FORMAT_EXAMPLES:
        return FORMAT_EXAMPLES[fmt]
    low, high = whole(node.get("minLength")) or 0, whole(node.get("maxLength"))
    if high is not None and low > high:
        raise NoValue(where, f"minLength {low} is greater than maxLength {high}")
    return "a" * low


def _sre() -> Any:
    """Python's own regex parser (its node kinds are attributes of the module)."""
    if sys.version_info >= (3, 11):
        import re._parser as parser
    else:  # pragma: no cover - Python 3.10
        import sre_parse as parser
    return parser


def _shortest_match(pattern: str) -> str:
    """A shortest string the whole of which matches `pattern` (lookarounds ignored, as the grammar does)."""
    try:
        return _regex_text(_sre().parse(pattern))
    except (re.error, RecursionError, ValueError, TypeError):
        return ""  # the grammar compiler says what is wrong with it


def _regex_text(items: Any) -> str:
    c = _sre()
    out = []
    for op, arg in items:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append("a" if arg != ord("a") else "b")
        elif op is c.ANY:
            out.append("a")
        elif op is c.IN:
            out.append(_class_member(arg))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)):
            low, _, sub = arg
            out.append(_regex_text(sub) * low)
        elif op is c.SUBPATTERN:
            out.append(_regex_text(arg[-1]))
        elif op is getattr(c, "ATOMIC_GROUP", None):
            out.append(_regex_text(arg))
        elif op is c.BRANCH:
            out.append(min((_regex_text(alternative) for alternative in arg[1]), key=len))
        elif op is c.CATEGORY:
            out.append(_category_member(arg))
        # AT (anchors), ASSERT, ASSERT_NOT (lookarounds, ignored by the grammar) add nothing
    return "".join(out)


def _category_member(category: Any) -> str:
    name = str(category)
    if "NOT_DIGIT" in name or "NOT_SPACE" in name:
        return "a"
    if "NOT_WORD" in name:
        return " "
    if "DIGIT" in name:
        return "0"
    if "SPACE" in name:
        return " "
    return "a"


def _class_member(items: Any) -> str:
    """A character of a `[...]` class: its first member, or one it does not exclude."""
    c = _sre()

    if items and items[0][0] is c.NEGATE:
        excluded = items[1:]
        return next((ch for ch in "a0A _-.x" if not _in_class(ch, excluded)), "a")
    for op, arg in items:
        if op is c.LITERAL:
            return chr(arg)
        if op is c.RANGE:
            return chr(arg[0])
        if op is c.CATEGORY:
            return _category_member(arg)
    return "a"


def _in_class(ch: str, items: Any) -> bool:
    c = _sre()

    for op, arg in items:
        if (op is c.LITERAL and chr(arg) == ch) or (op is c.RANGE and arg[0] <= ord(ch) <= arg[1]):
            return True
        if op is c.CATEGORY and re.fullmatch(_CATEGORY_REGEX.get(str(arg), "(?!)"), ch):
            return True
    return False


_CATEGORY_REGEX = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}
