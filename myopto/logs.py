"""Structured call logs: where they go and how a line is written.

One JSON object per call, one line each, written through a structlog logger of our own
(`structlog.wrap_logger`): the host application's structlog and logging configuration are never
touched. API keys never reach the file: every record passes through `myopto.redaction.redact`
(credential keys dropped, known secrets masked). Reading a log back (`read_log`, the summaries
`myopto logs` prints) is `myopto.log_reader`.

A log location that cannot work is refused before anything is sent (`ConfigError` when the log
is set up); a line that cannot be written later does not take an answer from its caller (the
`Logging` middleware reports it through `myopto.recording`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from myopto.errors import ConfigError

# Imported from here by `middleware/`, `backends/`, the router and the tests, from before
# redaction and reading had modules of their own.
from myopto.log_reader import read_log as read_log
from myopto.redaction import is_secret_name as is_secret_name
from myopto.redaction import redact as redact
from myopto.redaction import redact_options as redact_options
from myopto.redaction import register_secret as register_secret
from myopto.redaction import register_secrets_in as register_secrets_in
from myopto.redaction import secrets_in_url as secrets_in_url
from myopto.settings import log_settings


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


def _redact_processor(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    redacted: dict[str, Any] = redact(event)  # a mapping comes back a dict
    return redacted


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
