"""Sharing an experiment's cache: export to JSON lines and import them elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from myopto.stores import CacheStore
from myopto.errors import InvalidRequest


def export_records(store: CacheStore, out: TextIO, *, run: str | None = None) -> int:
    """Write one JSON object per cached answer (`{"key": ..., **record}`); returns how many."""
    count = 0
    for key, record in store.items():
        if run is not None and record.get("run") != run:
            continue
        out.write(json.dumps({"key": key, **record}, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


def import_records(store: CacheStore, path: str | Path) -> int:
    """Read an export into the store; every line is checked before anything is written."""
    records: list[tuple[str, dict[str, Any]]] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as error:
                raise InvalidRequest(f"{path}:{number}: not a JSON line ({error})") from error
            key = entry.pop("key", None) if isinstance(entry, dict) else None
            if not isinstance(key, str) or not isinstance(entry.get("response"), dict) or "text" not in entry["response"]:
                raise InvalidRequest(f"{path}:{number}: not a myopto cache record (needs 'key' and 'response.text')")
            records.append((key, entry))
    for key, record in records:
        store.set(key, record)
    return len(records)
