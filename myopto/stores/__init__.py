"""Where cached answers live: the small interface the cache middleware asks, and its stores.

- `DiskStore` (`stores/disk.py`): a diskcache directory; one machine's default (its parts:
  `safe_disk.py`, `cache_db.py`, `disk_database.py`).
- `RedisStore` (`stores/redis.py`): a Redis server shared by many workers and machines; it also
  offers single flight across processes (`claim`).

Both keep the same keys and the same JSON records, with a `MemoryLRU` in front, so an export of
one imports into the other. Every record read back goes through `memory.decode_record`: a store
hands back a record of the shape the cache writes, or raises `DamagedCacheEntry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from myopto.errors import DamagedCacheEntry
from myopto.redis_connection import is_redis_url


class CacheStore(Protocol):
    """What the cache middleware needs from a store.

    A store that can coordinate processes also has `claim(key)` and `wait(key, seconds)` (a
    `CoordinatingStore`, such as `RedisStore`).
    `location` names it in messages (a path, or a URL with its password masked). A store that
    cannot be written (a read-only directory) has `writable = False`: it serves what it holds,
    and `set` raises `CacheUnavailable`.
    """

    location: str

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of `key`, None when there is none; `DamagedCacheEntry` when it is unreadable."""
        ...

    def in_memory(self, key: str) -> bool:
        """True when `get(key)` answers without I/O (async callers then skip the worker thread)."""
        ...

    def set(self, key: str, record: dict[str, Any]) -> None: ...

    def items(
        self, *, on_damaged: Callable[[DamagedCacheEntry], None] | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (key, record); a damaged one raises, or with `on_damaged` is handed to it and skipped."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def clear(self) -> int: ...


class CoordinatingStore(CacheStore, Protocol):
    """A store that also coordinates processes (`RedisStore`): single flight across them."""

    def claim(self, key: str) -> tuple[dict[str, Any] | None, Any, float]:
        """(the record, None, 0) when the answer is there; (None, a lease, 0) when this caller now
        owns the call (`lease.release()` when done); (None, None, seconds the owner's lease has left)."""
        ...

    def wait(self, key: str, seconds: float) -> None:
        """Block until the flight of `key` ends or `seconds` pass."""
        ...


def open_store(location: str, *, namespace: str = "myopto", lease_seconds: float = 10.0) -> CacheStore:
    """The process-wide store for a Redis URL or a cache directory."""
    if is_redis_url(location):
        from myopto.stores.redis import redis_store

        return redis_store(location, namespace=namespace, lease_seconds=lease_seconds)
    from myopto.stores.disk import disk_store

    return disk_store(location)
