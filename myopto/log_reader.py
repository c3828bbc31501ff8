"""Call logs read back: the records of a log file, filtered, summarised, and written out as
`myopto logs` prints them (a table of runs, roles and models; one call at a time; a tail).

A line that is not a JSON object (a line torn by a full disk, say) is skipped, never fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from myopto.parsing import content_text


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every call record of a log file, in order (lines that are not JSON objects are skipped)."""
    return list(iter_log(path))


def iter_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """The call records of a log file one at a time, in order (lines that are not JSON objects are skipped)."""
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def select(
    records: Iterable[dict[str, Any]],
    *,
    run: str | None = None,
    role: str | None = None,
    errors: bool = False,
    grep: str | None = None,
    last: int | None = None,
) -> list[dict[str, Any]]:
    """The records matching every filter given; `grep` searches the whole record as text."""
    chosen = [
        r
        for r in records
        if (run is None or r.get("run") == run)
        and (role is None or r.get("role") == role)
        and (not errors or r.get("status") == "error")
        and (grep is None or grep.lower() in json.dumps(r, ensure_ascii=False).lower())
    ]
    return chosen[-last:] if last else chosen


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarize(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run, role, model): calls, cache hit rate, tokens (and the prompt tokens the
    provider served from its prompt cache), cost, p50/p95 latency, errors."""
    groups: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record.get("run"), record.get("role"), record.get("model")), []).append(record)
    rows = []
    for (run, role, model), calls in groups.items():
        ok = [c for c in calls if c.get("status") == "ok"]
        latencies = [c["latency_s"] for c in calls if isinstance(c.get("latency_s"), (int, float))]
        costs = [c.get("cost") for c in ok if not c.get("cached")]
        rows.append(
            {
                "run": run,
                "role": role,
                "model": model,
                "calls": len(calls),
                "cache_hits": sum(1 for c in ok if c.get("cached")),
                "cache_hit_rate": (sum(1 for c in ok if c.get("cached")) / len(calls)) if calls else 0.0,
                "prompt_tokens": sum(c.get("prompt_tokens") or 0 for c in ok),
                "completion_tokens": sum(c.get("completion_tokens") or 0 for c in ok),
                "cached_tokens": sum(c.get("cached_tokens") or 0 for c in ok),  # absent from older lines: 0
                "cost": sum(c for c in costs if c is not None),
                "cost_unknown_calls": sum(1 for c in costs if c is None),
                "p50_latency_s": _percentile(latencies, 0.5),
                "p95_latency_s": _percentile(latencies, 0.95),
                "errors": len(calls) - len(ok),
            }
        )
    return rows


# "cache": the share of calls myopto's cache answered; "cache-read": prompt tokens the provider
# served from its own prompt cache (billed at its cache-read price), as in `print_usage_summary`
SUMMARY_HEADERS = [
    "run",
    "role",
    "model",
    "calls",
    "cache",
    "tokens",
    "cache-read",
    "cost USD",
    "p50 s",
    "p95 s",
    "errors",
]


def summary_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The summary rows as table cells, under `SUMMARY_HEADERS`."""
    table = []
    for row in rows:
        cost = f"{row['cost']:.6f}" + ("+?" if row["cost_unknown_calls"] else "")
        if row["cost_unknown_calls"] and row["cost"] == 0:
            cost = "unknown"
        table.append(
            [
                str(row["run"] or "-"),
                str(row["role"]),
                str(row["model"]),
                str(row["calls"]),
                f"{row['cache_hit_rate']:.0%}",
                str(row["prompt_tokens"] + row["completion_tokens"]),
                str(row.get("cached_tokens", 0)),
                cost,
                _seconds(row["p50_latency_s"]),
                _seconds(row["p95_latency_s"]),
                str(row["errors"]),
            ]
        )
    return table


def format_summary(rows: list[dict[str, Any]]) -> str:
    """The summary rows as a plain-text table."""
    headers = SUMMARY_HEADERS
    table = [headers, *summary_cells(rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    numeric = set(range(3, len(headers)))
    lines = []
    for index, line in enumerate(table):
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_call(record: dict[str, Any]) -> str:
    """One call, readably: header line, then messages and answer when the log has them."""
    status = record.get("status", "?")
    head = (
        f"{record.get('ts', '')}  run={record.get('run') or '-'}  role={record.get('role')}  "
        f"model={record.get('model')}  {'CACHED' if record.get('cached') else status.upper()}"
    )
    classes = [
        f"{label} {record[name]}"
        for name, label in (("cached_tokens", "cache-read"), ("reasoning_tokens", "reasoning"))
        if record.get(name)
    ]
    details = (
        f"  tokens {record.get('prompt_tokens', 0)}+{record.get('completion_tokens', 0)}"
        + (f" ({', '.join(classes)})" if classes else "")
        + f"  cost {record.get('cost') if record.get('cost') is not None else 'unknown'}"
        f"  latency {_seconds(record.get('latency_s'))} s  attempts {record.get('attempts', '-')}"
        + (f"  choices {record['choices']}" if (record.get("choices") or 1) > 1 else "")
    )
    lines = [head, details]
    if status == "error":
        lines.append(f"  error: {record.get('error_type')}: {record.get('error')}")
    if record.get("tool_calls"):
        lines.append("  tool calls: " + ", ".join(map(str, record["tool_calls"])))
    for message in record.get("messages") or []:
        content = content_text(message.get("content"))
        lines.append(f"  [{message.get('role')}] " + content.replace("\n", "\n    "))
    if "answers" in record:  # several choices: each one's text
        for index, answer in enumerate(record["answers"] or []):
            text = "(no text)" if answer is None else str(answer)  # a choice made only of tool calls
            lines.append(f"  [answer {index}] " + text.replace("\n", "\n    "))
    elif "answer" in record:
        lines.append("  [answer] " + str(record["answer"]).replace("\n", "\n    "))
    for call in record.get("tool_arguments") or []:
        if isinstance(call, dict):
            lines.append(f"  [tool call {call.get('name')}] " + str(call.get("arguments")).replace("\n", "\n    "))
    return "\n".join(lines)


def follow(
    path: str | Path, *, lines: int = 10, seconds: float | None = None, poll: float = 0.2
) -> Iterator[dict[str, Any]]:
    """The last `lines` records, then new ones as they are written (for `seconds`, or forever)."""
    import time

    yield from read_log(path)[-lines:] if lines else []
    end = None if seconds is None else time.monotonic() + seconds
    with open(path, encoding="utf-8") as handle:
        handle.seek(0, os.SEEK_END)
        buffer = ""
        while end is None or time.monotonic() < end:
            chunk = handle.readline()
            if not chunk:
                time.sleep(poll)
                continue
            buffer += chunk
            if not buffer.endswith("\n"):
                continue
            try:
                record = json.loads(buffer)
            except ValueError:
                record = None
            buffer = ""
            if isinstance(record, dict):
                yield record
