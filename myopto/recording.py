"""Answers that were paid for but could not be recorded: reported loudly, counted, never lost.

When a request has already been sent and answered, a failure to record the answer (the cache
write, a shared spending counter, a log line) must not take the answer from the caller: the
answer is returned, and the failure goes here. `report_unrecorded` logs it at ERROR level on the
`myopto` logger (secrets masked) and counts it; `unrecorded_counts()` tells how many of each kind
a process had, so a run can check at the end that everything it paid for was recorded.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

_log = logging.getLogger("myopto")
_counts: Counter[str] = Counter()
_lock = threading.Lock()


def report_unrecorded(
    what: str, error: BaseException, *, role: str | None = None, model: str | None = None, key: str | None = None
) -> None:
    """Say loudly that an answer the caller gets could not be recorded in `what` (e.g. "cache").

    `error` is why; the caller's call goes on. Counted under `what`.
    """
    from myopto.redaction import redact

    with _lock:
        _counts[what] += 1
    where = ", ".join(
        part
        for part in (
            f"role {role}" if role else "",
            f"model {model}" if model else "",
            f"key {key[:16]}..." if key else "",
        )
        if part
    )
    _log.error(
        redact(
            f"an answer was paid for and returned, but could not be recorded in the {what}"
            f"{f' ({where})' if where else ''}: {type(error).__name__}: {error}"
        )
    )


def unrecorded_counts() -> dict[str, int]:
    """How many answers this process returned without recording them, by where recording failed."""
    with _lock:
        return dict(_counts)


def reset_unrecorded() -> None:
    """Forget the counts (a new experiment in the same process)."""
    with _lock:
        _counts.clear()
