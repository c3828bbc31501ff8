"""Timing helpers and the results table shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

# The one prompt the in-process workloads send.
MESSAGES: list[Any] = [{"role": "user", "content": "hello benchmark"}]


@dataclasses.dataclass
class Row:
    """One figure: its median and spread over repeats, and its ratio to an anchor measured in the same run."""

    workload: str
    name: str
    samples: list[float]
    unit: str
    anchor: str | None = None
    ratio: float | None = None
    goal: str = ""
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> str:
        if len(self.samples) < 2:
            return "-"
        ordered = sorted(self.samples)
        return f"{_fmt(ordered[0])}..{_fmt(ordered[-1])}"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def per_call_us(function: Callable[[], object], calls: int) -> float:
    """Microseconds per call of `function`, over `calls` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


def rounds(function: Callable[[], float], repeats: int) -> list[float]:
    return [function() for _ in range(repeats)]


def ratio_to(row: Row, anchor: Row) -> Row:
    """Set `row.ratio` to row / anchor (both medians of this run)."""
    row.anchor = anchor.name
    row.ratio = row.median / anchor.median
    return row


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    import os

    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}){memory}, "
        f"Python {platform.python_version()}"
    )


def versions(names: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    return ", ".join(found)


def table(rows: list[Row]) -> str:
    lines = [
        "| workload | figure | median | spread (min..max) | unit | anchor | ratio | goal |",
        "|---|---|---:|---|---|---|---:|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        lines.append(
            f"| {row.workload} | {row.name} | {_fmt(row.median)} | {row.spread} | {row.unit} | "
            f"{row.anchor or ''} | {ratio} | {row.goal} |"
        )
    return "\n".join(lines)


def run_python(code: str, env: dict[str, str] | None = None) -> float:
    """Seconds to run `python -c code` in a fresh interpreter (a cold import)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - start
