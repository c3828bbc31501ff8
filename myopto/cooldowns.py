"""Cooldowns: which of a role's deployments are resting after failures, and how many calls each
has in flight.

A deployment that fails `allowed_fails` times within `FAILURE_WINDOW` seconds (a minute) rests
for the role's `cooldown` seconds: routing skips it, and a call on it stops retrying there and
moves on. A 429 with Retry-After rests it for that long. A deployment is named by its key (a hash
of backend, endpoint, model and credential; see `myopto.routing.Deployment`), so two roles that
share a deployment share its rest.

`LocalCooldowns` keeps this state in the process. `RedisCooldowns` keeps it on a Redis server
(the role's limits URL), so every worker of a fleet skips a deployment that one of them saw
failing, for the time that is left: a rest is a key that expires when it ends (`PX`), read back
with `PTTL`, so the remaining time is the server's, whatever the workers' clocks. Failures are
counted on the server too (a counter that expires with its window), so the fleet together trips
the cooldown after `allowed_fails` failures. Calls in flight (least-busy routing) are a sorted set
of call tokens per deployment, scored by when they began; a token older than the stale bound
(a call whose process died) no longer counts. Keys: `<ns>:deployments:{deployments}:<key>:rest`,
`...:fails`, `...:busy` (one hash slot, so one script reads them all on a cluster too).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

from myopto.redis_connection import NOTHING_SENT, RedisConnection, redis_connection

FAILURE_WINDOW = 60.0  # seconds in which `allowed_fails` failures put a deployment to rest
STALE_SECONDS = 360.0  # a call in flight longer than this (past any deadline: its process died) no longer counts


class LocalCooldowns:
    """Rests, failure counts and calls in flight of this process (shared by its roles and threads)."""

    blocking = False  # no I/O: the async path calls it on the event loop
    location = "this process"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._fails: dict[str, tuple[int, float]] = {}  # key -> (failures, end of their window)
        self._busy: dict[str, int] = {}

    def remaining(self, keys: Sequence[str]) -> list[float]:
        """Seconds each deployment still rests (0 for one that does not)."""
        until = self._until
        if not until:
            return [0.0] * len(keys)
        now = time.monotonic()
        return [max(0.0, until.get(key, 0.0) - now) for key in keys]

    def failed(self, key: str, allowed_fails: int, cooldown: float) -> tuple[float, bool]:
        """Count a failure: (the seconds the deployment now rests, 0 when it does not; whether this
        failure began the rest). A deployment already resting counts no more failures."""
        with self._lock:
            now = time.monotonic()
            left = self._until.get(key, 0.0) - now
            if left > 0:
                return left, False
            count, end = self._fails.get(key, (0, 0.0))
            if now >= end:
                count, end = 0, now + FAILURE_WINDOW
            count += 1
            if count >= allowed_fails:
                self._until[key] = now + cooldown
                self._fails.pop(key, None)
                return cooldown, True
            self._fails[key] = (count, end)
            return 0.0, False

    def rest(self, key: str, seconds: float) -> None:
        """Rest the deployment for `seconds` from now (or longer, if it already rests longer)."""
        with self._lock:
            self._until[key] = max(self._until.get(key, 0.0), time.monotonic() + seconds)

    def take_least_busy(self, keys: Sequence[str], first: int = 0, stale: float = STALE_SECONDS) -> tuple[int, str]:
        """Choose the deployment with the fewest calls in flight (ties: the first from position
        `first` on) and count the call on it: (its index, the call's token). A call older than
        `stale` seconds no longer counts (in Redis, where its process may have died)."""
        with self._lock:
            busy = self._busy
            best, fewest = 0, -1
            count = len(keys)
            for step in range(count):
                index = (first + step) % count
                calls = busy.get(keys[index], 0)
                if fewest < 0 or calls < fewest:
                    best, fewest = index, calls
            busy[keys[best]] = fewest + 1
            return best, ""

    def enter(self, key: str, stale: float = STALE_SECONDS) -> str:
        """Count a call in flight on the deployment; its token, for `leave`."""
        with self._lock:
            self._busy[key] = self._busy.get(key, 0) + 1
        return ""

    def leave(self, key: str, token: str) -> None:
        with self._lock:
            calls = self._busy.get(key, 0) - 1
            if calls > 0:
                self._busy[key] = calls
            else:
                self._busy.pop(key, None)

    def busy(self, keys: Sequence[str]) -> list[int]:
        """Calls in flight on each deployment."""
        return [self._busy.get(key, 0) for key in keys]

    def reset(self) -> None:
        """Forget every rest, failure and call in flight (a new experiment in the same process)."""
        with self._lock:
            self._until.clear()
            self._fails.clear()
            self._busy.clear()


# KEYS: the rests. Returns each one's milliseconds left (PTTL: -2 for none).
_REMAINING = """
local left = {}
for index, key in ipairs(KEYS) do left[index] = redis.call('PTTL', key) end
return left
"""
# KEYS: fails counter, rest. ARGV: allowed_fails, cooldown ms, window ms. Returns {the ms the
# deployment now rests (0: not), 1 when this failure began the rest}.
_FAILED = """
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return {left, 0} end
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if count >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('DEL', KEYS[1])
  return {tonumber(ARGV[2]), 1}
end
return {0, 0}
"""
# KEYS: rest. ARGV: ms (>= 1). Never shortens a longer rest.
_REST = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
"""
# KEYS: the busy sets, in the caller's order of preference. ARGV: token, stale seconds, stale ms.
# Drops stale tokens, picks the set with the fewest (the first of equals), adds the token.
_TAKE_LEAST_BUSY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local best, fewest = 1, -1
for index, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - tonumber(ARGV[2]))
  local calls = redis.call('ZCARD', key)
  if fewest < 0 or calls < fewest then best, fewest = index, calls end
end
redis.call('ZADD', KEYS[best], string.format('%.6f', now), ARGV[1])
redis.call('PEXPIRE', KEYS[best], ARGV[3])
return best
"""
# KEYS: busy set. ARGV: token, stale ms.
_ENTER = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_BEFORE_SENDING = f"{NOTHING_SENT}, since the deployments' cooldowns could not be read"


class RedisCooldowns:
    """Rests, failure counts and calls in flight shared by every process on the same Redis URL and
    namespace (see the module doc). Each operation is one script on keys of one hash slot."""

    blocking = True  # network I/O: the async path runs it in a worker thread

    def __init__(self, url: str | RedisConnection, *, namespace: str = "myopto") -> None:
        self.connection = url if isinstance(url, RedisConnection) else redis_connection(url)
        self.location = self.connection.where
        self.namespace = namespace
        self._scripts: dict[str, Any] = {}

    def _key(self, key: str, kind: str) -> str:
        return f"{self.namespace}:deployments:{{deployments}}:{key}:{kind}"

    def _run(self, source: str, keys: list[str], args: list[Any], consequence: str) -> Any:
        def call(client: Any) -> Any:
            script = self._scripts.get(source)
            if script is None:
                script = self._scripts[source] = client.register_script(source)
            return script(keys=keys, args=args)

        return self.connection.run(call, consequence=consequence)

    def remaining(self, keys: Sequence[str]) -> list[float]:
        left = self._run(_REMAINING, [self._key(key, "rest") for key in keys], [], _BEFORE_SENDING)
        return [max(0, int(milliseconds)) / 1000 for milliseconds in left]

    def failed(self, key: str, allowed_fails: int, cooldown: float) -> tuple[float, bool]:
        left, began = self._run(
            _FAILED,
            [self._key(key, "fails"), self._key(key, "rest")],
            [allowed_fails, _milliseconds(cooldown), _milliseconds(FAILURE_WINDOW)],
            "the failure was not counted, so the other workers do not know of it",
        )
        return max(0, int(left)) / 1000, bool(int(began))

    def rest(self, key: str, seconds: float) -> None:
        self._run(
            _REST,
            [self._key(key, "rest")],
            [_milliseconds(seconds)],
            "the rest was not recorded, so the other workers do not know of it",
        )

    def take_least_busy(self, keys: Sequence[str], first: int = 0, stale: float = STALE_SECONDS) -> tuple[int, str]:
        token = uuid.uuid4().hex
        count = len(keys)
        order = [(first + step) % count for step in range(count)]
        chosen = self._run(
            _TAKE_LEAST_BUSY,
            [self._key(keys[index], "busy") for index in order],
            [token, repr(stale), _milliseconds(stale)],
            _BEFORE_SENDING,
        )
        return order[int(chosen) - 1], token

    def enter(self, key: str, stale: float = STALE_SECONDS) -> str:
        token = uuid.uuid4().hex
        self._run(_ENTER, [self._key(key, "busy")], [token, _milliseconds(stale)], _BEFORE_SENDING)
        return token

    def leave(self, key: str, token: str) -> None:
        busy = self._key(key, "busy")
        self.connection.run(
            lambda client: client.zrem(busy, token),
            consequence="the call still counts as in flight until it is stale",
        )

    def busy(self, keys: Sequence[str]) -> list[int]:
        sets = [self._key(key, "busy") for key in keys]

        def count(client: Any) -> list[int]:
            return [int(client.zcard(busy)) for busy in sets]

        return self.connection.run(count)


def _milliseconds(seconds: float) -> int:
    """A Redis expiry: a whole number of milliseconds, at least 1."""
    return max(1, int(seconds * 1000 + 0.5))


CooldownState: TypeAlias = LocalCooldowns | RedisCooldowns  # where a role's cooldowns live
LOCAL = LocalCooldowns()
_shared: dict[tuple[str, str], RedisCooldowns] = {}
_shared_lock = threading.Lock()


def cooldowns_for(url: str | None, namespace: str = "myopto") -> CooldownState:
    """The process's cooldowns: shared through Redis when `url` (the role's limits URL) is given."""
    if not url:
        return LOCAL
    with _shared_lock:
        shared = _shared.get((url, namespace))
        if shared is None:
            shared = _shared[(url, namespace)] = RedisCooldowns(url, namespace=namespace)
        return shared
