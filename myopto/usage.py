"""Usage and cost accounting: a process-wide ledger, filled by the `Usage` middleware.

Thread-safe and async-safe (one lock, no awaits inside). Costs are USD. A call whose cost is
unknown (a model with no known price) is counted in `unknown_cost_calls`, never silently as 0.
A cached call (also one answered by an identical call already in flight, which the cache shares)
counts as a call and a cache hit, costs 0, and adds its original cost to `saved_cost`.
`cached_tokens` counts the prompt tokens the provider served from its own prompt cache (part of
`prompt_tokens`, billed at its cache-read price), `reasoning_tokens` the completion tokens a
model spent reasoning (part of `completion_tokens`).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, TextIO


@dataclasses.dataclass
class Tally:
    """Running totals for one role or one model."""

    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float = 0.0
    saved_cost: float = 0.0
    unknown_cost_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "total_tokens": self.total_tokens}


class UsageLedger:
    """Totals of every call made through myopto in this process, by run, role and model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.enabled = True
        self._tallies: dict[tuple[str | None, str, str], Tally] = {}

    def record(
        self, role: str, model: str, response: Any = None, *, error: bool = False, run: str | None = None
    ) -> None:
        """Add one finished call (a `Response`) or one failed call (`error=True`)."""
        if not self.enabled:
            return
        with self._lock:
            key = (run, role, model)
            tally = self._tallies.get(key)
            if tally is None:
                tally = self._tallies[key] = Tally()
            tally.calls += 1
            if error or response is None:
                tally.errors += 1
                return
            usage = response.usage
            tally.prompt_tokens += usage.prompt_tokens
            tally.completion_tokens += usage.completion_tokens
            tally.cached_tokens += getattr(usage, "cached_tokens", 0)
            tally.reasoning_tokens += getattr(usage, "reasoning_tokens", 0)
            if response.cached:
                tally.cache_hits += 1
                tally.saved_cost += response.cost or 0.0
            elif response.cost is None:
                tally.unknown_cost_calls += 1
            else:
                tally.cost += response.cost

    def reset(self) -> None:
        with self._lock:
            self._tallies.clear()

    def _grouped(self, index: int, run: str | None = None, all_runs: bool = True) -> dict[Any, Tally]:
        with self._lock:
            items = [(key, dataclasses.replace(value)) for key, value in self._tallies.items()]
        grouped: dict[Any, Tally] = {}
        for key, tally in items:
            if not all_runs and key[0] != run:
                continue
            total = grouped.setdefault(key[index], Tally())
            _add(total, tally)
        return grouped

    def by_role(self, run: str | None = None, *, all_runs: bool = True) -> dict[str, Tally]:
        return self._grouped(1, run, all_runs)

    def by_model(self, run: str | None = None, *, all_runs: bool = True) -> dict[str, Tally]:
        return self._grouped(2, run, all_runs)

    def by_run(self) -> dict[str | None, Tally]:
        return self._grouped(0)


def _add(total: Tally, tally: Tally) -> None:
    for field in dataclasses.fields(Tally):
        setattr(total, field.name, getattr(total, field.name) + getattr(tally, field.name))


LEDGER = UsageLedger()


def configure_usage(enabled: bool = True) -> None:
    """Turn usage tracking on or off for this process (on by default)."""
    LEDGER.enabled = bool(enabled)


def reset_usage() -> None:
    """Forget every recorded call."""
    LEDGER.reset()


def get_total_cost() -> float:
    """USD spent by every role so far (calls with an unknown price are not included; see the summary)."""
    return sum(tally.cost for tally in LEDGER.by_role().values())


def get_cost_by_role() -> dict[str, float]:
    """USD spent per role."""
    return {role: tally.cost for role, tally in LEDGER.by_role().items()}


def get_tokens_by_role() -> dict[str, dict[str, int]]:
    """Prompt, completion and total tokens per role."""
    return {
        role: {
            "prompt_tokens": tally.prompt_tokens,
            "completion_tokens": tally.completion_tokens,
            "total_tokens": tally.total_tokens,
        }
        for role, tally in LEDGER.by_role().items()
    }


def get_usage_summary(run: str | None = None) -> dict[str, Any]:
    """Everything recorded: totals, and the same figures by role, by model and by run.

    With `run`, only the calls made inside `myopto.run(run)`.
    """
    all_runs = run is None
    by_role = LEDGER.by_role(run, all_runs=all_runs)
    total = Tally()
    for tally in by_role.values():
        _add(total, tally)
    summary = {
        "enabled": LEDGER.enabled,
        "total": total.as_dict(),
        "total_cost": total.cost,
        "cost_known": total.unknown_cost_calls == 0,
        "by_role": {role: tally.as_dict() for role, tally in by_role.items()},
        "by_model": {model: tally.as_dict() for model, tally in LEDGER.by_model(run, all_runs=all_runs).items()},
    }
    if all_runs:
        summary["by_run"] = {name: tally.as_dict() for name, tally in LEDGER.by_run().items() if name is not None}
    else:
        summary["run"] = run
    return summary


def _cost_cell(row: dict[str, Any]) -> str:
    if row["unknown_cost_calls"] and row["unknown_cost_calls"] == row["calls"] - row["cache_hits"] - row["errors"]:
        return "unknown"
    return f"{row['cost']:.6f}" + ("+?" if row["unknown_cost_calls"] else "")


def print_usage_summary(file: TextIO | None = None, *, run: str | None = None) -> None:
    """Print the usage summary as a table (to stdout unless `file` is given; one run with `run`)."""
    import sys

    out = file or sys.stdout
    summary = get_usage_summary(run)
    labels = [f"{kind} {n}" for kind in ("role", "model", "run") for n in summary.get(f"by_{kind}", {})]
    width = max([22, *(len(label) + 2 for label in labels)])
    # "cached": calls served by myopto's cache; "cache-read": prompt tokens the provider served
    # from its own prompt cache (billed at its cheaper cache-read price)
    header = (
        f"{'':<{width}}{'calls':>7}{'cached':>8}{'errors':>8}{'prompt':>10}{'cache-read':>12}"
        f"{'completion':>12}{'cost USD':>12}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for title, rows in (
        ("role", summary["by_role"]),
        ("model", summary["by_model"]),
        ("run", summary.get("by_run", {})),
    ):
        for name, row in rows.items():
            cost = _cost_cell(row)
            print(
                f"{title + ' ' + name:<{width}}{row['calls']:>7}{row['cache_hits']:>8}{row['errors']:>8}"
                f"{row['prompt_tokens']:>10}{row['cached_tokens']:>12}{row['completion_tokens']:>12}{cost:>12}",
                file=out,
            )
    total = summary["total"]
    print("-" * len(header), file=out)
    unknown = f" ({total['unknown_cost_calls']} calls of unknown price)" if total["unknown_cost_calls"] else ""
    cache_read = (
        f" ({total['cached_tokens']} prompt tokens read from the providers' prompt caches)"
        if total["cached_tokens"]
        else ""
    )
    print(
        f"total: {total['calls']} calls, {total['total_tokens']} tokens{cache_read}, "
        f"${total['cost']:.6f}{unknown}, ${total['saved_cost']:.6f} saved by the cache",
        file=out,
    )
