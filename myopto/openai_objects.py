"""What the parts of a `Response` share: they read like the OpenAI SDK's objects, and they are
built from stored dicts strictly.

`obj["field"]` and `obj.get("field")` read `obj.field`, as LiteLLM's ModelResponse allows, so
code written against either SDK reads our responses unchanged. A stored record is rebuilt field
by field: a name the part does not have is a `ValueError`, never silently dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

Part = TypeVar("Part")


class ItemAccess:
    """Lets `obj["field"]` read `obj.field`, as LiteLLM's ModelResponse allows."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


def fields_of(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`data` as keyword arguments of the dataclass `cls`; a name `cls` does not have is a
    `ValueError`, data that is not a mapping a `TypeError` (`where` names it in both)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{where} is a {type(data).__name__}, not an object")
    unknown = set(data) - {field.name for field in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{where} has fields it does not have: {', '.join(sorted(map(repr, unknown)))}")
    return dict(data)


def part_of(cls: type[Part], value: Any, where: str) -> Part:
    """`value` as a `cls`: itself when it is one, else built from a stored dict by `fields_of`."""
    return value if isinstance(value, cls) else cls(**fields_of(cls, value, where))
