"""Runs: `with myopto.run("exp-42", lr=0.1):` tags every call, log line, usage record and cache
entry made inside it; `max_cost_usd=` gives it a budget (see `myopto.middleware.limits`). Held
in a contextvar, so threads started with `contextvars.copy_context()`, `asyncio` tasks, and
`llm.batch` inherit it."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from myopto.errors import InvalidRequest


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """The run calls are tagged with: a name and string tags."""

    name: str
    tags: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    # (run name, USD) of this run and every enclosing run that set max_cost_usd
    budgets: tuple[tuple[str, float], ...] = ()


_current: contextvars.ContextVar[RunInfo | None] = contextvars.ContextVar("myopto_run", default=None)


def current_run() -> RunInfo | None:
    """The run the calling code is inside, or None."""
    return _current.get()


class run(contextlib.ContextDecorator):
    """Tag every call made inside with a run name and tags (a context manager or a decorator).

    Runs nest: an inner run's name wins and the tags of both are merged. `max_cost_usd` stops
    the run's calls with `BudgetExceeded` once it has spent that much; an inner run's calls count
    against every enclosing budget too. With a Redis limiter (`MYOPTO_LIMITS_URL`) every worker
    using the same run name shares the budget, and what was spent stays recorded under that name.
    """

    def __init__(self, name: str, *, max_cost_usd: float | None = None, **tags: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest(f"a run needs a non-empty name, got {name!r}")
        if max_cost_usd is not None and (
            isinstance(max_cost_usd, bool) or not isinstance(max_cost_usd, (int, float)) or max_cost_usd <= 0
        ):
            raise InvalidRequest(f"max_cost_usd must be a number of US dollars > 0, got {max_cost_usd!r}")
        self.name = name
        self.max_cost_usd = max_cost_usd
        self.tags = tags
        self._tokens: list[contextvars.Token[RunInfo | None]] = []

    def __enter__(self) -> RunInfo:
        outer = _current.get()
        tags = {**(outer.tags if outer else {}), **self.tags}
        budgets = outer.budgets if outer else ()
        if self.max_cost_usd is not None:
            budgets = (*budgets, (self.name, float(self.max_cost_usd)))
        info = RunInfo(self.name, MappingProxyType(tags), budgets)
        self._tokens.append(_current.set(info))
        return info

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())
