"""Where cached answers live: the small interface the cache middleware asks, and its stores.

- `DiskStore` (`stores/disk.py`): a diskcache directory; one machine's default.
- `RedisStore` (`stores/redis.py`): a Redis server shared by many workers and machines; it also
  offers single flight across processes (`claim`).

Both keep the same keys and the same JSON records, with a `MemoryLRU` in front, so an export of
one imports into the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from myopto.redis_connection import is_redis_url


class CacheStore(Protocol):
    """What the cache middleware needs from a store.

    A store that can coordinate processes also has `claim(key)` and `wait(key, seconds)` (see
    `RedisStore`).
    `location` names it in messages (a path, or a URL with its password masked).
    """

    location: str

    def get(self, key: str) -> dict[str, Any] | None: ...

    def in_memory(self, key: str) -> bool:
        """True when `get(key)` answers without I/O (async callers then skip the worker thread)."""
        ...

    def set(self, key: str, record: dict[str, Any]) -> None: ...

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]: ...

    def stats(self) -> dict[str, Any]: ...

    def clear(self) -> int: ...


def open_store(location: str, *, namespace: str = "myopto", lease_seconds: float = 10.0) -> CacheStore:
    """The process-wide store for a Redis URL or a cache directory."""
    if is_redis_url(location):
        from myopto.stores.redis import redis_store

        return redis_store(location, namespace=namespace, lease_seconds=lease_seconds)
    from myopto.stores.disk import disk_store

    return disk_store(location)
