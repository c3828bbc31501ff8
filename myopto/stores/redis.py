"""`RedisStore`: cached answers on a Redis server, shared by every worker of an experiment.

The same keys and the same JSON records as `DiskStore`, with the same memory LRU in front.
Keys live under a namespace (`myopto` unless `MYOPTO_CACHE_NAMESPACE` says otherwise):
`<ns>:cache:{<key>}` holds a record, `<ns>:lease:{<key>}` the single-flight lease of a request
in flight and `<ns>:done:{<key>}` the signal that its flight ended. The braces are a Redis
Cluster hash tag: the three live in one slot, so the scripts that touch them work on a cluster
too; every other command touches one key. Nothing expires and nothing is evicted by us;
`stats()` warns when the server's own `maxmemory-policy` could evict entries.

A namespace is data, never a pattern: listing, counting, clearing and `stats()` see this
namespace's records only (its glob characters `*?[]\\` are escaped in the SCAN pattern, and keys
of a namespace that merely begins like this one are left out), so `lab[1]` never touches `lab1`.
A record that cannot be read back (not JSON, not the shape myopto writes: `decode_record`)
raises `DamagedCacheEntry`, from `get`, `claim` and `items` alike.

Single flight across processes and machines: the first caller of a request takes the lease
(`SET NX PX` with a random token), renewed every third of its life while the call runs; the
others block on the flight's done signal (`BRPOPLPUSH` of the done list onto itself, so one
signal wakes every waiter, at most a second at a time) and then read the answer. An owner that
dies stops renewing, its lease runs out, and one waiter takes over; an owner that fails releases
the lease at once (errors are never cached), so a waiter tries itself.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from operator import methodcaller
from typing import Any

from myopto.errors import CacheUnavailable, DamagedCacheEntry
from myopto.redis_connection import NOTHING_SENT, RedisConnection, escape_glob, redis_connection
from myopto.stores.memory import MemoryFronted, MemoryLRU, decode_record

_log = logging.getLogger("myopto.cache")

# One round trip: the answer if it has landed, else the lease if it is free (clearing the done
# signal of an earlier flight), else how long the current lease has left (ms). KEYS: record,
# lease, done; one hash slot (see the module doc).
_CLAIM = """
local record = redis.call('GET', KEYS[1])
if record then return {1, record} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[3])
  return {2, ''}
end
return {0, tostring(redis.call('PTTL', KEYS[2]))}
"""
# Renew or release a lease only while it is still ours (its token), never another owner's.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# Release: drop the lease and raise the done signal (kept a minute for late waiters).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], 60000)
  return 1
end
return 0
"""
_EVICTING_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")
# What a failed command means for the call: reads and leases come before the request is sent;
# a write comes after its answer (the cache middleware reports it and returns the answer).
_BEFORE_SENDING = f"{NOTHING_SENT}, since its answer could not be recorded"
_NOT_STORED = "the answer was not stored in the cache"


class Lease:
    """This process's right to make one request's backend call; `release()` when done."""

    def __init__(self, store: RedisStore, key: str, token: str) -> None:
        self.store, self.key, self.token = store, key, token

    def release(self) -> None:
        self.store._release(self)


class RedisStore(MemoryFronted):
    """Cached answers on a Redis server, with an in-memory LRU in front. See the module doc."""

    def __init__(
        self,
        url: str | RedisConnection,
        *,
        namespace: str = "myopto",
        lease_seconds: float = 10.0,
        memory_entries: int = 4096,
    ) -> None:
        self.connection = url if isinstance(url, RedisConnection) else redis_connection(url)
        self.location = self.connection.where
        self.namespace = namespace
        self.lease_ms = max(int(lease_seconds * 1000), 100)
        self.memory = MemoryLRU(memory_entries)
        self._scripts: dict[str, Any] = {}
        self._held: dict[str, Lease] = {}
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._wake = threading.Event()

    # -- keys ------------------------------------------------------------------------------
    def _record_key(self, key: str) -> str:
        return f"{self.namespace}:cache:{{{key}}}"

    def _lease_key(self, key: str) -> str:
        return f"{self.namespace}:lease:{{{key}}}"

    def _done_key(self, key: str) -> str:
        return f"{self.namespace}:done:{{{key}}}"

    def _script(self, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.connection.run(lambda client: client.register_script(source))
        return script

    # -- the store interface ---------------------------------------------------------------
    def _read(self, key: str) -> str | None:
        text: str | None = self.connection.run(  # the connection decodes responses to str
            lambda client: client.get(self._record_key(key)), consequence=_BEFORE_SENDING
        )
        return text

    def _write(self, key: str, text: str) -> None:
        self.connection.run(lambda client: client.set(self._record_key(key), text), consequence=_NOT_STORED)

    def _keys(self) -> list[str]:
        """The cache keys of this namespace's records, and of no other namespace's."""
        prefix = f"{self.namespace}:cache:{{"
        pattern = escape_glob(prefix) + "*}"
        found = self.connection.run(lambda client: list(client.scan_iter(match=pattern, count=1000)))
        # `lab` must not list `lab:cache:{x}:more:cache:{key}` (the namespace `lab:cache:{x}:more`),
        # which its pattern also matches: a key of ours holds no brace
        keys = (redis_key[len(prefix) : -1] for redis_key in found if redis_key.startswith(prefix))
        return [key for key in keys if "{" not in key and "}" not in key]

    def items(
        self, *, on_damaged: Callable[[DamagedCacheEntry], None] | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (key, record) of this namespace. A damaged record raises `DamagedCacheEntry`, or,
        with `on_damaged`, is handed to it and skipped (an export goes on past it)."""
        for key in self._keys():
            text = self.connection.run(methodcaller("get", self._record_key(key)))
            if text is None:  # cleared meanwhile
                continue
            try:
                record = decode_record(text, key=key, location=self.location)
            except DamagedCacheEntry as damage:
                if on_damaged is None:
                    raise
                on_damaged(damage)
                continue
            yield key, record

    def __len__(self) -> int:
        return len(self._keys())

    def stats(self) -> dict[str, Any]:
        """Entries under this namespace, the server's memory use and its eviction policy (on a
        cluster: every primary's memory summed, and the most dangerous policy among them)."""
        nodes = self.connection.run(_memory_by_node)
        policies = sorted({str(info.get("maxmemory_policy", "unknown")) for info in nodes})
        policy = next((p for p in policies if p in _EVICTING_POLICIES), policies[0] if policies else "unknown")
        stats: dict[str, Any] = {
            "url": self.location,
            "namespace": self.namespace,
            "entries": len(self),
            "used_memory_bytes": sum(int(info.get("used_memory") or 0) for info in nodes),
            "maxmemory_bytes": sum(int(info.get("maxmemory") or 0) for info in nodes),
            "maxmemory_policy": policy,
            "memory_hits": self.memory.hits,
        }
        if len(nodes) > 1:
            stats["nodes"] = len(nodes)
        if policy in _EVICTING_POLICIES:
            stats["warning"] = (
                f"maxmemory-policy is {policy}: when the server fills up it will evict cached answers "
                "and a replay will miss them. Set `maxmemory-policy noeviction` (and AOF for durability)"
            )
        return stats

    def clear(self) -> int:
        """Delete this namespace's records (and no other namespace's); returns how many."""
        self.memory.clear()
        removed = 0
        for key in self._keys():
            removed += int(self.connection.run(methodcaller("delete", self._record_key(key))))
        return removed

    def close(self) -> None:
        self._wake.set()

    # -- single flight across processes ----------------------------------------------------
    def claim(self, key: str) -> tuple[dict[str, Any] | None, Lease | None, float]:
        """One poll: (the record, None, 0) when the answer is there; (None, a lease, 0) when this
        caller now owns the call; (None, None, seconds the current owner's lease has left)."""
        token = secrets.token_hex(16)
        keys = [self._record_key(key), self._lease_key(key), self._done_key(key)]
        kind, value = self.connection.run(
            lambda client: self._script(_CLAIM)(keys=keys, args=[token, self.lease_ms]), consequence=_BEFORE_SENDING
        )
        if int(kind) == 1:
            return self._remember(key, value), None, 0.0
        if int(kind) == 2:
            lease = Lease(self, key, token)
            with self._held_lock:
                self._held[token] = lease
            self._start_renewer()
            return None, lease, 0.0
        return None, None, max(int(value), 0) / 1000

    def wait(self, key: str, seconds: float) -> None:
        """Block until the flight of `key` ends (its owner released the lease) or `seconds` pass."""
        done = self._done_key(key)
        self.connection.run(
            lambda client: client.brpoplpush(done, done, timeout=max(seconds, 0.01)), consequence=_BEFORE_SENDING
        )

    def _release(self, lease: Lease) -> None:
        with self._held_lock:
            self._held.pop(lease.token, None)
        keys = [self._lease_key(lease.key), self._done_key(lease.key)]
        try:
            self.connection.run(lambda client: self._script(_RELEASE)(keys=keys, args=[lease.token]))
        except CacheUnavailable as error:
            # the lease runs out on its own; the call's outcome (answer or error) matters more
            _log.warning(
                "could not release a single-flight lease on %s (it expires by itself): %s", self.location, error
            )

    def _start_renewer(self) -> None:
        with self._held_lock:
            if self._renewer is not None and self._renewer.is_alive():
                return
            self._renewer = threading.Thread(target=self._renew_forever, name="myopto-lease-renewer", daemon=True)
            self._renewer.start()

    def _renew(self, lease: Lease) -> Any:
        """Extend `lease` by a full life while it is still ours (falsy when it is not)."""
        return self.connection.run(
            lambda client: self._script(_RENEW)(keys=[self._lease_key(lease.key)], args=[lease.token, self.lease_ms])
        )

    def _renew_forever(self) -> None:
        """Every third of a lease's life, extend every lease this process holds."""
        while not self._wake.wait(self.lease_ms / 3000):
            with self._held_lock:
                held = list(self._held.values())
            for lease in held:
                try:
                    kept = self._renew(lease)
                except Exception as error:  # noqa: BLE001 - the renewer outlives any failed renewal (a save reports it)
                    _log.warning("could not renew a single-flight lease on %s: %s", self.location, error)
                    continue
                if not kept and lease.token in self._held:
                    _log.warning(
                        "lost the single-flight lease of %s... on %s; another worker may call too",
                        lease.key[:16],
                        self.location,
                    )


_stores: dict[tuple[str, str], RedisStore] = {}
_stores_lock = threading.Lock()


def redis_store(url: str, *, namespace: str = "myopto", lease_seconds: float = 10.0) -> RedisStore:
    """The process-wide store of a Redis URL and namespace (roles sharing them share its memory)."""
    with _stores_lock:
        store = _stores.get((url, namespace))
        if store is None:
            store = _stores[(url, namespace)] = RedisStore(url, namespace=namespace, lease_seconds=lease_seconds)
        return store


def _memory_by_node(client: Any) -> list[dict[str, Any]]:
    """`INFO memory` of the server, or of every primary of a cluster."""
    import redis

    if isinstance(client, redis.RedisCluster):
        return list(client.info("memory", target_nodes=redis.RedisCluster.PRIMARIES).values())
    return [client.info("memory")]
