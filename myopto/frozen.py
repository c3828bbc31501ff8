"""`changed`: a copy of a frozen, slotted dataclass (a `Request`, a `Response`) with some fields
changed, made without `dataclasses.replace`'s trip through `__init__` and its keyword handling.

Middleware copies a request or a response on most calls (a clipped timeout, a deployment's model,
the attempts made); at a few microseconds each that was a large part of what a chain adds to a
call. The copy is checked as `replace` checks it: an unknown or non-init field is a `TypeError`
or `ValueError`, fields not given keep their values, fields that are not init fields get their
defaults again (`Request`'s memoised key), and `__post_init__` runs on the result. It is for
dataclasses whose generated `__init__` only stores fields (no `InitVar`s, no `__init__` of their
own), as `Request` and `Response` are.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

Frozen = TypeVar("Frozen")


@functools.cache
def _layout(cls: type) -> tuple[frozenset[str], tuple[str, ...], tuple[tuple[str, Any], ...]]:
    """`cls`'s init field names, those names in order, and its other fields with their defaults."""
    fields = dataclasses.fields(cls)
    names = tuple(field.name for field in fields if field.init)
    others = []
    for field in fields:
        if not field.init:
            if field.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{field.name} has no plain default: use dataclasses.replace")
            others.append((field.name, field.default))
    return frozenset(names), names, tuple(others)


def changed(instance: Frozen, changes: dict[str, Any]) -> Frozen:
    """A copy of `instance` with `changes` applied, checked like `dataclasses.replace`."""
    cls: type = type(instance)
    known, names, others = _layout(cls)
    if not changes.keys() <= known:
        unknown = sorted(changes.keys() - known)[0]
        if unknown in dict(others):
            raise ValueError(f"field {unknown} is declared with init=False, it cannot be specified with replace()")
        raise TypeError(f"{cls.__name__}.__init__() got an unexpected keyword argument {unknown!r}")
    new: Frozen = object.__new__(cls)
    put = object.__setattr__
    for name in names:
        put(new, name, changes[name] if name in changes else getattr(instance, name))
    for name, default in others:
        put(new, name, default)
    post_init = getattr(new, "__post_init__", None)
    if post_init is not None:
        post_init()
    return new
