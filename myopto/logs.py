"""Structured call logs: where they go, how they are written, and how they are read back.

One JSON object per call, one line each, written through a structlog logger of our own
(`structlog.wrap_logger`): the host application's structlog and logging configuration are never
touched. API keys never reach the file: keys that name credentials are dropped and every known
secret value (role API keys, `*_API_KEY` variables) is masked wherever it appears.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from myopto.parsing import content_text
from myopto.settings import log_settings, secret_values

_SECRET_KEYS = frozenset({"api_key", "apikey", "api-key", "x-api-key", "authorization", "password", "secret"})
_MASK = "***"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask this value in every log line from now on (role API keys are registered for you)."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


# Option and header names whose values are credentials, wherever they sit in a role's options
# (`extra_headers`, LiteLLM's `extra`, a URL's query string).
_SECRET_NAME_PARTS = ("key", "apikey", "token", "secret", "password", "authorization", "credential", "credentials",
                      "signature", "sig")


def is_secret_name(name: Any) -> bool:
    """True when an option, header or query parameter of this name holds a credential."""
    lowered = str(name).lower().replace("-", "_")
    return lowered in _SECRET_KEYS or any(part in _SECRET_NAME_PARTS for part in lowered.split("_"))


def register_secrets_in(value: Any, *, name: Any = None) -> None:
    """Register every credential found in `value` (a role's options, at any depth) for masking.

    A credential is the value under a secret-looking name (`api_key`, `Authorization`,
    `x-api-key`, `token`, ...), the token after `Bearer `/`Basic `, a URL's password, and the
    values of secret-looking query parameters of a URL.
    """
    from urllib.parse import parse_qsl, urlsplit

    if isinstance(value, Mapping):
        for key, item in value.items():
            register_secrets_in(item, name=key)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            register_secrets_in(item, name=name)
        return
    if not isinstance(value, str):
        return
    # a value found by its name is masked only when long enough to be a credential, so a short
    # word under an odd name (`key="name"`) is not masked in every log line
    if name is not None and is_secret_name(name) and len(value) >= 8:
        register_secret(value)
        for scheme in ("Bearer ", "Basic ", "Token "):
            if value.startswith(scheme):
                register_secret(value[len(scheme):].strip())
    if "://" in value:
        try:
            parts = urlsplit(value)
        except ValueError:
            return
        if parts.password:
            register_secret(parts.password)
        for key, item in parse_qsl(parts.query, keep_blank_values=False):
            if is_secret_name(key) and len(item) >= 8:
                register_secret(item)


def redact(value: Any) -> Any:
    """`value` with credential keys dropped and known secret strings masked, at any depth."""
    secrets = sorted({*_secrets, *secret_values()}, key=len, reverse=True)
    return _redact(value, secrets)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, _MASK)
        return value
    if isinstance(value, Mapping):
        return {k: _redact(v, secrets) for k, v in value.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(value, (list, tuple)):
        return [_redact(item, secrets) for item in value]
    return value


class _LineWriter:
    """The end of our structlog chain: appends one rendered line to a file, one writer at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def info(self, line: str) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(line + "\n")

    msg = info


def _redact_processor(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    return redact(event)


class CallLog:
    """A log file of calls; `write(**fields)` appends one JSON line (timestamped, redacted)."""

    def __init__(self, path: str | Path, *, messages: bool = False) -> None:
        import structlog

        self.path = Path(path).expanduser()
        self.messages = messages
        self._logger = structlog.wrap_logger(
            _LineWriter(self.path),
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                _redact_processor,
                structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
            ],
            wrapper_class=structlog.BoundLogger,
            cache_logger_on_first_use=True,
        )

    def write(self, **fields: Any) -> None:
        self._logger.info("llm_call", **fields)


_configured: tuple[CallLog | None] | None = None  # None: not configured, use MYOPTO_LOG_FILE
_logs: dict[tuple[str, bool], CallLog] = {}
_logs_lock = threading.Lock()


def _log_for(path: str | Path, messages: bool) -> CallLog:
    key = (str(Path(path).expanduser().resolve()), messages)
    with _logs_lock:
        log = _logs.get(key)
        if log is None:
            log = _logs[key] = CallLog(path, messages=messages)
        return log


def configure_logging(path: str | Path | None = None, *, messages: bool = False, enabled: bool = True) -> None:
    """Log every call to `path` (JSON lines); `messages=True` adds the messages and the answer.

    `enabled=False` turns logging off even when `MYOPTO_LOG_FILE` is set; `configure_logging()`
    with no path goes back to following `MYOPTO_LOG_FILE` / `MYOPTO_LOG_MESSAGES`.
    """
    global _configured
    if not enabled:
        _configured = (None,)
    elif path is None:
        _configured = None
    else:
        _configured = (_log_for(path, messages),)


def active_log() -> CallLog | None:
    """Where calls are logged right now, or None."""
    if _configured is not None:
        return _configured[0]
    path, messages = log_settings()
    return _log_for(path, messages) if path else None


# -- reading -----------------------------------------------------------------------------------
def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every call record of a log file, in order (lines that are not JSON objects are skipped)."""
    return list(iter_log(path))


def iter_log(path: str | Path) -> Iterator[dict[str, Any]]:
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


def select(records: Iterable[dict[str, Any]], *, run: str | None = None, role: str | None = None,
           errors: bool = False, grep: str | None = None, last: int | None = None) -> list[dict[str, Any]]:
    """The records matching every filter given; `grep` searches the whole record as text."""
    chosen = [
        r for r in records
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
    """One row per (run, role, model): calls, cache hit rate, tokens, cost, p50/p95 latency, errors."""
    groups: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record.get("run"), record.get("role"), record.get("model")), []).append(record)
    rows = []
    for (run, role, model), calls in groups.items():
        ok = [c for c in calls if c.get("status") == "ok"]
        latencies = [c["latency_s"] for c in calls if isinstance(c.get("latency_s"), (int, float))]
        costs = [c.get("cost") for c in ok if not c.get("cached")]
        rows.append({
            "run": run,
            "role": role,
            "model": model,
            "calls": len(calls),
            "cache_hits": sum(1 for c in ok if c.get("cached")),
            "cache_hit_rate": (sum(1 for c in ok if c.get("cached")) / len(calls)) if calls else 0.0,
            "prompt_tokens": sum(c.get("prompt_tokens") or 0 for c in ok),
            "completion_tokens": sum(c.get("completion_tokens") or 0 for c in ok),
            "cost": sum(c for c in costs if c is not None),
            "cost_unknown_calls": sum(1 for c in costs if c is None),
            "p50_latency_s": _percentile(latencies, 0.5),
            "p95_latency_s": _percentile(latencies, 0.95),
            "errors": len(calls) - len(ok),
        })
    return rows


SUMMARY_HEADERS = ["run", "role", "model", "calls", "cache", "tokens", "cost USD", "p50 s", "p95 s", "errors"]


def summary_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The summary rows as table cells, under `SUMMARY_HEADERS`."""
    table = []
    for row in rows:
        cost = f"{row['cost']:.6f}" + ("+?" if row["cost_unknown_calls"] else "")
        if row["cost_unknown_calls"] and row["cost"] == 0:
            cost = "unknown"
        table.append([
            str(row["run"] or "-"), str(row["role"]), str(row["model"]), str(row["calls"]),
            f"{row['cache_hit_rate']:.0%}", str(row["prompt_tokens"] + row["completion_tokens"]), cost,
            _seconds(row["p50_latency_s"]), _seconds(row["p95_latency_s"]), str(row["errors"]),
        ])
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
    details = (
        f"  tokens {record.get('prompt_tokens', 0)}+{record.get('completion_tokens', 0)}"
        f"  cost {record.get('cost') if record.get('cost') is not None else 'unknown'}"
        f"  latency {_seconds(record.get('latency_s'))} s  attempts {record.get('attempts', '-')}"
    )
    lines = [head, details]
    if status == "error":
        lines.append(f"  error: {record.get('error_type')}: {record.get('error')}")
    for message in record.get("messages") or []:
        content = content_text(message.get("content"))
        lines.append(f"  [{message.get('role')}] " + content.replace("\n", "\n    "))
    if "answer" in record:
        lines.append("  [answer] " + str(record["answer"]).replace("\n", "\n    "))
    return "\n".join(lines)


def follow(path: str | Path, *, lines: int = 10, seconds: float | None = None, poll: float = 0.2) -> Iterator[dict[str, Any]]:
    """The last `lines` records, then new ones as they are written (for `seconds`, or forever)."""
    import time

    for record in read_log(path)[-lines:] if lines else []:
        yield record
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
