"""Sharing an experiment's cache: export to JSON lines and import them elsewhere.

An export goes on past damaged entries (they are handed to `on_damaged` and left out) and is
written to a temporary file renamed into place at the end, so a file named as an export is a
whole one. An imported file is data, never authority: each line must be a record of the shape
the cache writes whose key is the key of the request it records (`key_of(record["request"])`),
so a line can neither plant an answer under another request's key nor crash a later call. A
line never replaces a different answer already cached (a conflict: the cached one is kept); an
identical one changes nothing. Lines that fail are reported with their numbers; the rest are
imported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from myopto.errors import CacheUnavailable, DamagedCacheEntry, InvalidRequest
from myopto.stores import CacheStore
from myopto.stores.memory import READABLE_VERSIONS, record_problem


def export_records(
    store: CacheStore,
    out: TextIO,
    *,
    run: str | None = None,
    on_damaged: Callable[[DamagedCacheEntry], None] | None = None,
) -> int:
    """Write one JSON object per cached answer (`{"key": ..., **record}`); returns how many.

    A damaged entry raises `DamagedCacheEntry`, or, with `on_damaged`, is handed to it and left out.
    """
    count = 0
    # a store of someone else's without `on_damaged` is asked the plain way
    entries = store.items() if on_damaged is None else store.items(on_damaged=on_damaged)
    for key, record in entries:
        if run is not None and record.get("run") != run:
            continue
        out.write(json.dumps({"key": key, **record}, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


def export_file(store: CacheStore, path: str | Path, *, run: str | None = None) -> tuple[int, list[DamagedCacheEntry]]:
    """Export into `path` (replaced only once the export is complete): (entries written, the
    damaged entries left out)."""
    path = Path(path)
    damaged: list[DamagedCacheEntry] = []
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(temporary, "x", encoding="utf-8") as out:
            count = export_records(store, out, run=run, on_damaged=damaged.append)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count, damaged


@dataclasses.dataclass
class ImportReport:
    """What `import_records` did: entries written, entries already there (identical), and the
    refused lines as (line number, what is wrong); a conflict is a refused line too."""

    imported: int = 0
    unchanged: int = 0
    replaced_damaged: int = 0
    conflicts: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    problems: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    @property
    def refused(self) -> int:
        return len(self.conflicts) + len(self.problems)


def import_records(store: CacheStore, path: str | Path) -> ImportReport:
    """Read an export into the store: every line is checked (see the module doc); the good ones
    are written, the others reported. `CacheUnavailable` when the store cannot be written."""
    if getattr(store, "writable", True) is False:
        raise CacheUnavailable(
            f"the cache at {store.location} is read-only here; nothing was imported. Import into a writable "
            "directory (--dir) or Redis URL (--url)",
            location=store.location,
        )
    report = ImportReport()
    good: list[tuple[int, str, dict[str, Any]]] = []
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                key, record = read_line(line)
            except InvalidRequest as problem:
                report.problems.append((number, str(problem)))
                continue
            good.append((number, key, record))
    for number, key, record in good:
        _import_one(store, report, number, key, record)
    return report


def _import_one(store: CacheStore, report: ImportReport, number: int, key: str, record: dict[str, Any]) -> None:
    try:
        existing = store.get(key)
    except DamagedCacheEntry:  # unreadable anyway: the imported answer replaces it
        existing = None
        report.replaced_damaged += 1
    if existing is not None:
        if _canonical(existing) == _canonical(record):
            report.unchanged += 1
        else:
            report.conflicts.append(
                (
                    number,
                    (
                        f"key {key[:16]}...: a different answer to this request is already cached; kept it "
                        "(to take the imported one, import into an empty cache, or call the request with "
                        "cache='refresh')"
                    ),
                )
            )
        return
    store.set(key, record)
    report.imported += 1


def read_line(line: bytes | str) -> tuple[str, dict[str, Any]]:
    """One exported line as (key, record), or `InvalidRequest` saying what is wrong with it."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        entry = json.loads(text)
    except ValueError as error:
        raise InvalidRequest(f"not a JSON line ({error})") from None
    except RecursionError:  # valid JSON nested deeper than Python's stack
        raise InvalidRequest("JSON nested too deep to read") from None
    if not isinstance(entry, dict):
        raise InvalidRequest("not a myopto cache record (needs 'key', 'request' and 'response.text')")
    key = entry.pop("key", None)
    try:
        problem = import_problem(key, entry)
    except RecursionError:  # parsed, but too deep to check, key or serve
        problem = "JSON nested too deep to read"
    if problem is not None:
        raise InvalidRequest(problem)
    return key, entry


def import_problem(key: Any, record: dict[str, Any]) -> str | None:
    """What keeps an imported record from being cached under `key`, or None.

    More than a read asks (`record_problem`): the record must say its version, record its
    request, and `key` must be that request's key.
    """
    from myopto.request import key_of

    if not isinstance(key, str) or "response" not in record or "request" not in record:
        return "not a myopto cache record (needs 'key', 'request' and 'response.text')"
    problem = record_problem(record)
    if problem is not None:
        return problem
    if "version" not in record:
        return f"no record 'version' (this myopto writes {READABLE_VERSIONS[-1]})"
    for name in ("created",):
        value = record.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            return f"'{name}' is {value!r}, not a time"
    for name in ("run", "role"):
        if record.get(name) is not None and not isinstance(record[name], str):
            return f"'{name}' is {record[name]!r}, not a string"
    try:
        expected = key_of(record["request"])
    except (InvalidRequest, TypeError, ValueError) as error:
        return f"its 'request' has no key ({error})"
    if key != expected:
        return (
            f"its key {key[:16]}... is not the key of the request it records ({expected[:16]}...): "
            "the line was edited or is not from a myopto export"
        )
    return None


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)
