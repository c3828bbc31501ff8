"""`DiskStore`: cached answers in a diskcache directory, one machine's default store.

Values are JSON text, never pickle: `SafeDisk` refuses to unpickle anything it finds, so a cache
directory from someone else cannot run code. Nothing is evicted unless a size limit is set.
A directory whose database is damaged is reported with its path and never deleted.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from myopto.errors import CacheUnavailable, MyoptoError
from myopto.stores.memory import MemoryFronted, MemoryLRU


class UnsafeCacheEntry(MyoptoError):
    """A cache entry is stored as pickle; myopto never unpickles (it could run code)."""


def _safe_disk() -> type:
    import diskcache

    class SafeDisk(diskcache.Disk):
        """diskcache's Disk with pickle refused on the way out (we only ever write text)."""

        def get(self, key: Any, raw: bool) -> Any:
            if not raw:
                raise UnsafeCacheEntry("refusing to unpickle a cache key; this directory was not written by myopto")
            return super().get(key, raw)

        def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
            if mode == diskcache.core.MODE_PICKLE:
                raise UnsafeCacheEntry("refusing to unpickle a cache value; this directory was not written by myopto")
            return super().fetch(mode, filename, value, read)

    return SafeDisk


class DiskStore(MemoryFronted):
    """A diskcache directory holding one JSON record per key, with an in-memory LRU in front.

    Safe for many threads and many processes writing one directory (SQLite transactions).
    `size_limit` (bytes) turns on least-recently-stored eviction; by default nothing is evicted.
    """

    def __init__(self, directory: str | Path, *, size_limit: int | None = None, memory_entries: int = 4096) -> None:
        import diskcache

        self.directory = Path(directory).expanduser()
        self.location = str(self.directory)
        settings: dict[str, Any] = {"eviction_policy": "none", "size_limit": 2**62}
        if size_limit is not None:
            settings = {"eviction_policy": "least-recently-stored", "size_limit": int(size_limit)}
        try:
            self._cache = diskcache.Cache(str(self.directory), disk=_safe_disk(), statistics=False, **settings)
        except sqlite3.DatabaseError as error:
            raise CacheUnavailable(
                f"the cache directory {self.directory} holds a {self.directory / 'cache.db'} that is not a "
                f"usable SQLite database ({error}). Nothing was deleted: move that directory aside (or "
                "delete it if it holds nothing you need), or point MYOPTO_CACHE_DIR / cache_dir= elsewhere",
                location=str(self.directory),
            ) from error
        self.memory = MemoryLRU(memory_entries)
        self._lock = threading.Lock()
        self.disk_hits = 0
        self.misses = 0

    def _read(self, key: str) -> str | None:
        text = self._cache.get(key)
        with self._lock:
            if text is None:
                self.misses += 1
            else:
                self.disk_hits += 1
        return text

    def _write(self, key: str, text: str) -> None:
        self._cache.set(key, text)

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key in self._cache.iterkeys():
            text = self._cache.get(key)
            if text is not None:
                yield key, json.loads(text)

    def __len__(self) -> int:
        return len(self._cache)

    def stats(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "entries": len(self._cache),
            "size_bytes": self._cache.volume(),
            "memory_hits": self.memory.hits,
            "disk_hits": self.disk_hits,
            "misses": self.misses,
        }

    def clear(self) -> int:
        self.memory.clear()
        return self._cache.clear()

    def close(self) -> None:
        self._cache.close()


_stores: dict[str, DiskStore] = {}
_stores_lock = threading.Lock()


def disk_store(directory: str | Path, size_limit: int | None = None) -> DiskStore:
    """The process-wide store of a directory (roles sharing a directory share its memory and flights)."""
    path = str(Path(directory).expanduser().resolve())
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = DiskStore(path, size_limit=size_limit)
        return store
