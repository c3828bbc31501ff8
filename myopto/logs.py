"""Structured call logs: where they go, how they are written, and how they are read back.

One JSON object per call, one line each, written through a structlog logger of our own
(`structlog.wrap_logger`): the host application's structlog and logging configuration are never
touched. API keys never reach the file: keys that name credentials are dropped and every known
secret value is masked wherever it appears. Known secrets are the values registered here
(`register_secrets_in` finds them in a role's options: `api_key`, credential-named options and
headers in `extra_headers` or LiteLLM's `extra`, `Bearer`/`Basic`/`Token` header values, a URL's
password and credential-named query parameters) and the `*_API_KEY`/`*_TOKEN`/`*_KEY`/`*SECRET*`
variables. The same masking serves spans, exception events and reprs (`redact`, `redact_options`).

A log location that cannot work is refused before anything is sent (`ConfigError` when the log
is set up); a line that cannot be written later does not take an answer from its caller (the
`Logging` middleware reports it through `myopto.recording`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

from myopto.errors import ConfigError
from myopto.parsing import content_text
from myopto.settings import log_settings, secret_values

# Names dropped from a log record whatever their value (a record never carries credentials).
_SECRET_KEYS = frozenset({"api_key", "apikey", "api-key", "x-api-key", "authorization", "password", "secret"})
_MASK = "***"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# (registered secrets, environment secrets) -> every secret, longest first; rebuilt when either changes
_sorted: tuple[frozenset[str], tuple[str, ...], list[str]] = (frozenset(), (), [])


def register_secret(value: str | bytes | None) -> None:
    """Mask this value in every log line, span and repr from now on (role keys are registered for you)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value.strip()) >= 4:
        with _secrets_lock:
            _secrets.update({value, value.strip()})


# Option, header and query-parameter names whose values are credentials, wherever they sit in a
# role's options (`extra_headers`, LiteLLM's `extra`, a URL's query string): a name is secret when
# one of its words (split on `_`, `-`, `.`, spaces and camelCase) is one of these.
_SECRET_NAME_PARTS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "signature",
        "sig",
        "cookie",
    }
)
# `<scheme> <credential>`, as in an Authorization header; under any name for these schemes
_AUTH_VALUE = re.compile(r"\s*([A-Za-z][\w-]*)\s+(\S+)\s*")
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token"})


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    words = re.split(r"[_.\-\s]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    return name.lower() in _SECRET_KEYS or not _SECRET_NAME_PARTS.isdisjoint(words)


def is_secret_name(name: Any) -> bool:
    """True when an option, header or query parameter of this name holds a credential."""
    return _is_secret_name(str(name))


def secrets_in_url(url: str) -> list[str]:
    """The credentials a URL carries: its password and the values of credential-named query
    parameters, each as written and as decoded (either spelling may reach a message). Cheap to
    ask again for the same URL (an environment variable read for every log line)."""
    return list(_secrets_in_url(url)) if "://" in url else []


@functools.lru_cache(maxsize=256)
def _secrets_in_url(url: str) -> tuple[str, ...]:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ()
    found: list[str] = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    for pair in re.split(r"[&;]", parts.query):
        name, equals, value = pair.partition("=")
        if equals and len(value) >= 8 and is_secret_name(unquote_plus(name)):
            found += [value, unquote(value), unquote_plus(value)]
    return tuple(secret for secret in dict.fromkeys(found) if len(secret) >= 4)


def _secrets_in_text(value: str, name: Any) -> list[str]:
    """The credentials a single option value carries, given the name it sits under."""
    found = secrets_in_url(value)
    scheme = _AUTH_VALUE.fullmatch(value)
    if scheme is not None and (scheme.group(1).lower() in _AUTH_SCHEMES or (name is not None and is_secret_name(name))):
        token = scheme.group(2)
        found.append(token)
        if scheme.group(1).lower() == "basic":
            try:  # `Basic base64(user:password)`: the password may show up in clear elsewhere
                found.append(base64.b64decode(token, validate=True).decode("utf-8").partition(":")[2])
            except (binascii.Error, UnicodeDecodeError):
                pass
    # a value found by its name is masked only when long enough to be a credential, so a short
    # word under an odd name (`key="name"`) is not masked in every log line
    if name is not None and is_secret_name(name) and len(value.strip()) >= 8:
        found.append(value)
    return found


def register_secrets_in(value: Any, *, name: Any = None) -> None:
    """Register every credential found in `value` (a role's options, at any depth) for masking.

    A credential is the value under a secret-looking name (`api_key`, `Authorization`,
    `x-api-key`, `token`, ...), the credential after an authorization scheme (`Bearer `,
    `Basic `, `Token `) under any name, a URL's password, and the values of secret-looking query
    parameters of a URL (as written and percent-decoded).
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            register_secrets_in(item, name=key)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            register_secrets_in(item, name=name)
    elif isinstance(value, (str, bytes)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for secret in _secrets_in_text(text, name):
            register_secret(secret)


def _all_secrets() -> list[str]:
    """Every secret to mask, longest first (so a secret that contains another is masked whole)."""
    global _sorted
    registered, environment, ordered = _sorted
    current_environment = tuple(secret_values())
    if len(_secrets) != len(registered) or current_environment != environment:
        with _secrets_lock:
            registered = frozenset(_secrets)
        ordered = sorted({*registered, *current_environment}, key=len, reverse=True)
        _sorted = (registered, current_environment, ordered)
    return ordered


def redact(value: Any) -> Any:
    """`value` with credential keys dropped and known secret strings masked, at any depth."""
    return _redact(value, _all_secrets())


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _mask(value, secrets)
    if isinstance(value, Mapping):
        return {k: _redact(v, secrets) for k, v in value.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(value, (list, tuple)):
        return [_redact(item, secrets) for item in value]
    return value


def redact_options(value: Any) -> Any:
    """A configuration (options, headers, LiteLLM's `extra`) fit to show: every value under a
    secret-looking name is `***`, credentials in URLs and authorization headers are masked, and
    so is every known secret, whether or not the configuration was registered."""
    return _redact_options(value, None, _all_secrets())


def _redact_options(value: Any, name: Any, secrets: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {key: _redact_options(item, key, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_options(item, name, secrets) for item in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return value
    if name is not None and is_secret_name(name):
        return _MASK
    found = sorted(_secrets_in_text(value, name), key=len, reverse=True)
    return _mask(_mask(value, found), secrets)


class _LineWriter:
    """The end of our structlog chain: appends one rendered line to a file, one writer at a time.

    Each line leaves in one `write` on a file opened for appending, so lines from threads and
    processes never interleave, and the file is opened per line, so a log moved or removed
    mid-run is started again. A write that failed part-way (a full disk) leaves a torn line;
    the next line starts on a line of its own, so readers skip only the torn one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._torn = False

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except FileNotFoundError:  # its folder is missing (first use, or removed mid-run)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def check(self) -> None:
        """Raise OSError unless the file can be opened for appending (created, with its folder)."""
        if self.path.is_dir():  # opening a directory for writing says EISDIR on Linux, not everywhere
            raise IsADirectoryError(21, "Is a directory", str(self.path))
        os.close(self._open())

    def info(self, line: str) -> None:
        # a lone surrogate (text decoded with `surrogateescape`) becomes a JSON escape: the line
        # stays valid UTF-8 and reads back as the same string
        data = (line + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            if self._torn:
                data = b"\n" + data
            written = 0
            descriptor = self._open()
            try:
                while written < len(data):
                    written += os.write(descriptor, data[written:])
            except OSError:
                self._torn = self._torn or written > 0
                raise
            finally:
                os.close(descriptor)
            self._torn = False

    msg = info


def _redact_processor(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    return redact(event)


class CallLog:
    """A log file of calls; `write(**fields)` appends one JSON line (timestamped, redacted).

    Refuses (`ConfigError`) a path that cannot be opened for appending, when it is created,
    so a log that cannot work stops a run before its first call is sent. `source` names where
    the path came from (`MYOPTO_LOG_FILE`), for that message.
    """

    def __init__(self, path: str | Path, *, messages: bool = False, source: str | None = None) -> None:
        import structlog

        self.path = Path(path).expanduser()
        self.messages = messages
        writer = _LineWriter(self.path)
        try:
            writer.check()
        except OSError as error:
            where = f" (from {source})" if source else ""
            reason = error.strerror or str(error)
            if error.filename is not None and str(error.filename) != str(self.path):
                reason += f": {error.filename}"  # a folder on the way is the problem
            fix = (
                f"set {source} to a file you can write, or unset it"
                if source == "MYOPTO_LOG_FILE"
                else "give a file you can write"
            )
            raise ConfigError(f"cannot write the call log {self.path}{where}: {reason}; {fix}") from error
        self._logger = structlog.wrap_logger(
            writer,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                _redact_processor,
                structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
            ],
            wrapper_class=structlog.BoundLogger,
            cache_logger_on_first_use=True,
        )

    def write(self, **fields: Any) -> None:
        """Append one record; raises OSError when the line cannot be written."""
        self._logger.info("llm_call", **fields)


_configured: tuple[CallLog | None] | None = None  # None: not configured, use MYOPTO_LOG_FILE
_logs: dict[tuple[str, bool], CallLog] = {}
_from_setting: dict[tuple[str, bool], CallLog] = {}  # MYOPTO_LOG_FILE as written -> its log
_logs_lock = threading.Lock()


def _log_for(path: str | Path, messages: bool, source: str) -> CallLog:
    key = (str(Path(path).expanduser().resolve()), messages)
    with _logs_lock:
        log = _logs.get(key)
        if log is None:
            log = _logs[key] = CallLog(path, messages=messages, source=source)
        return log


def configure_logging(path: str | Path | None = None, *, messages: bool = False, enabled: bool = True) -> None:
    """Log every call to `path` (JSON lines); `messages=True` adds the messages and the answer.

    `enabled=False` turns logging off even when `MYOPTO_LOG_FILE` is set; `configure_logging()`
    with no path goes back to following `MYOPTO_LOG_FILE` / `MYOPTO_LOG_MESSAGES`. Raises
    `ConfigError` when `path` cannot be opened for appending.
    """
    global _configured
    if not enabled:
        _configured = (None,)
    elif path is None:
        _configured = None
    else:
        _configured = (_log_for(path, messages, "configure_logging"),)


def active_log() -> CallLog | None:
    """Where calls are logged right now, or None. Raises `ConfigError` when `MYOPTO_LOG_FILE`
    names a file that cannot be opened for appending (checked until it can)."""
    if _configured is not None:
        return _configured[0]
    path, messages = log_settings()
    if not path:
        return None
    log = _from_setting.get((path, messages))
    if log is None:  # first use of this setting: resolved and checked once, not on every call
        log = _from_setting[(path, messages)] = _log_for(path, messages, "MYOPTO_LOG_FILE")
    return log


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
