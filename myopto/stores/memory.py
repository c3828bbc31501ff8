"""`MemoryLRU`: the in-process layer in front of every store, so a repeated request costs no I/O.

Besides the record it keeps, per key, the `Response` a hit is served as (immutable, so one
object serves every later hit in the process without building it again)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any


class MemoryLRU:
    """A thread-safe least-recently-used map of cache key -> record, holding at most `entries`.

    Records are immutable once written (a key always names the same request), so a copy kept
    here never goes stale; `clear()` empties it when the store behind it is cleared.
    """

    def __init__(self, entries: int = 4096) -> None:
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._responses: dict[str, Any] = {}
        self._entries = entries
        self._lock = threading.Lock()
        self.hits = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._items.get(key)
            if record is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._items[key] = record
            self._responses.pop(key, None)  # a new record: its hit is built anew
            self._items.move_to_end(key)
            while len(self._items) > self._entries:
                old, _ = self._items.popitem(last=False)
                self._responses.pop(old, None)

    def hit(self, key: str) -> Any:
        """The `Response` kept for a hit on `key`, or None (no lock: a dict read is atomic)."""
        response = self._responses.get(key)
        if response is not None:
            self.hits += 1
        return response

    def keep_hit(self, key: str, response: Any) -> None:
        """Keep the `Response` served for `key` while its record is in memory."""
        with self._lock:
            if key in self._items:
                self._responses[key] = response

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._responses.clear()


class MemoryFronted:
    """What every store shares: JSON-text records behind a `MemoryLRU` (`self.memory`).

    A store supplies `_read(key) -> str | None` and `_write(key, text)`; reads go to memory
    first, and whatever is read or written is remembered there.
    """

    memory: MemoryLRU

    def _read(self, key: str) -> str | None:
        raise NotImplementedError

    def _write(self, key: str, text: str) -> None:
        raise NotImplementedError

    def in_memory(self, key: str) -> bool:
        return key in self.memory

    def get(self, key: str) -> dict[str, Any] | None:
        record = self.memory.get(key)
        if record is not None:
            return record
        text = self._read(key)
        return None if text is None else self._remember(key, text)

    def set(self, key: str, record: dict[str, Any]) -> None:
        self._write(key, json.dumps(record, ensure_ascii=False, sort_keys=True))
        self.memory.put(key, record)

    def _remember(self, key: str, text: str) -> dict[str, Any]:
        record = json.loads(text)
        self.memory.put(key, record)
        return record
