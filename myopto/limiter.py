"""The state behind the `Limits` middleware: request and token rates per model, pauses after a
429, and money spent against budgets. `LocalLimiter` keeps it in this process; `RedisLimiter`
keeps it on a Redis server, so a fleet of workers shares one rate and one budget.

Rates follow GCRA (the generic cell rate algorithm, a token bucket written as one timestamp):
a model at `rpm` gets a request every 60/rpm seconds, with a burst of about one second's worth
(providers enforce limits on sub-minute windows, so a minute's worth at once would be refused).
A caller reserves its slot and sleeps until it, one operation per request, so callers are spread
evenly without polling. Tokens work the same with the request's estimated tokens as its cost;
the estimate is corrected with the real usage afterwards.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from myopto.redis_connection import RedisConnection, redis_connection


def _slot(tat: float, start: float, cost: float, rate: float) -> tuple[float, float]:
    """GCRA for one limit: (seconds to wait past `start`, the new theoretical arrival time).

    `rate` is units per second; the tolerance lets about one second's worth through at once.
    The Redis script below does the same arithmetic.
    """
    interval = cost / rate
    tolerance = max(0.0, 1.0 - interval)
    tat = max(tat, start)
    return max(0.0, tat - tolerance - start), tat + interval


class LocalLimiter:
    """Rates, pauses and spending of this process only (shared by its roles and threads)."""

    blocking = False  # no I/O: the async path calls it on the event loop

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat: dict[tuple[str, str], float] = {}
        self._paused: dict[str, float] = {}
        self._spent: dict[str, float] = {}
        self.location = "this process"

    def reserve(self, model: str, rpm: float | None, tpm: float | None, tokens: int) -> float:
        """Take the next slot for one request of about `tokens` tokens; returns seconds to wait."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._paused.get(model, 0.0))
            wait = 0.0
            for unit, per_minute, cost in (("requests", rpm, 1), ("tokens", tpm, tokens)):
                if per_minute:
                    slot_wait, self._tat[model, unit] = _slot(self._tat.get((model, unit), 0.0), start, cost, per_minute / 60)
                    wait = max(wait, slot_wait)
            return start - now + wait

    def adjust(self, model: str, tpm: float, tokens: int) -> None:
        """Correct a reservation by `tokens` (real usage minus the estimate; may be negative)."""
        with self._lock:
            key = (model, "tokens")
            if key in self._tat:
                self._tat[key] += tokens / (tpm / 60)

    def pause(self, model: str, seconds: float) -> None:
        """Hold back every caller of `model` for `seconds` (a 429 with Retry-After)."""
        with self._lock:
            self._paused[model] = max(self._paused.get(model, 0.0), time.monotonic() + seconds)

    def paused_for(self, model: str) -> float:
        """Seconds left of a pause of `model` (0 when it is not paused)."""
        with self._lock:
            return max(0.0, self._paused.get(model, 0.0) - time.monotonic())

    def spent(self, scope: str) -> float:
        with self._lock:
            return self._spent.get(scope, 0.0)

    def spend(self, scope: str, usd: float) -> None:
        with self._lock:
            self._spent[scope] = self._spent.get(scope, 0.0) + usd

    def reset(self) -> None:
        """Forget every rate, pause and amount spent (a new experiment in the same process)."""
        with self._lock:
            self._tat.clear()
            self._paused.clear()
            self._spent.clear()


# KEYS: requests TAT, tokens TAT, pause-until (one hash slot). ARGV: requests/s, tokens/s
# (0 = no limit), tokens. Server time, so the workers' clocks do not matter. Returns the wait
# in seconds as text (Redis would truncate a Lua number to an integer).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local start = math.max(now, tonumber(redis.call('GET', KEYS[3]) or '0'))
local wait = 0
local function take(key, rate, cost)
  local interval = cost / rate
  local tolerance = math.max(0, 1 - interval)
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), start)
  wait = math.max(wait, tat - tolerance - start)
  local arrival = tat + interval
  redis.call('SET', key, string.format('%.6f', arrival), 'PX', math.ceil((arrival - now) * 1000) + 60000)
end
if tonumber(ARGV[1]) > 0 then take(KEYS[1], tonumber(ARGV[1]), 1) end
if tonumber(ARGV[2]) > 0 then take(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3])) end
return string.format('%.6f', start - now + wait)
"""
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local resume = now + tonumber(ARGV[1])
if resume > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.6f', resume), 'PX', math.ceil(tonumber(ARGV[1]) * 1000))
end
return 1
"""


class RedisLimiter:
    """Rates, pauses and spending shared by every process using the same Redis URL and namespace.

    Each operation is one atomic command or script touching keys of one hash slot, so 4 workers
    at rpm=1200 send 20 requests a second together, not 80, on a single server or a cluster.
    """

    blocking = True  # network I/O: the async path runs it in a worker thread

    def __init__(self, url: str | RedisConnection, *, namespace: str = "myopto") -> None:
        self.connection = url if isinstance(url, RedisConnection) else redis_connection(url)
        self.location = self.connection.where
        self.namespace = namespace
        self._scripts: dict[str, Any] = {}

    def _keys(self, model: str) -> list[str]:
        tag = f"{self.namespace}:limits:{{{model}}}"
        return [f"{tag}:requests", f"{tag}:tokens", f"{tag}:pause"]

    def _run_script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        def call(client: Any) -> Any:
            script = self._scripts.get(source)
            if script is None:
                script = self._scripts[source] = client.register_script(source)
            return script(keys=keys, args=args)

        return self.connection.run(call)

    def reserve(self, model: str, rpm: float | None, tpm: float | None, tokens: int) -> float:
        per_second = [(rpm or 0) / 60, (tpm or 0) / 60]
        return float(self._run_script(_RESERVE, self._keys(model), [*per_second, tokens]))

    def adjust(self, model: str, tpm: float, tokens: int) -> None:
        key = self._keys(model)[1]
        self.connection.run(lambda client: client.incrbyfloat(key, tokens / (tpm / 60)))

    def pause(self, model: str, seconds: float) -> None:
        self._run_script(_PAUSE, [self._keys(model)[2]], [seconds])

    def paused_for(self, model: str) -> float:
        # the pause key expires when the pause ends (-2: no key)
        return max(0, int(self.connection.run(lambda client: client.pttl(self._keys(model)[2])))) / 1000

    def _budget_key(self, scope: str) -> str:
        return f"{self.namespace}:budget:{scope}"

    def spent(self, scope: str) -> float:
        value = self.connection.run(lambda client: client.get(self._budget_key(scope)))
        return float(value or 0.0)

    def spend(self, scope: str, usd: float) -> None:
        self.connection.run(lambda client: client.incrbyfloat(self._budget_key(scope), usd))


LOCAL = LocalLimiter()
_shared: dict[tuple[str, str], RedisLimiter] = {}
_shared_lock = threading.Lock()


def limiter_for(url: str | None, namespace: str = "myopto") -> LocalLimiter | RedisLimiter:
    """The process's limiter: shared through Redis when `url` is given, else this process's own."""
    if not url:
        return LOCAL
    with _shared_lock:
        limiter = _shared.get((url, namespace))
        if limiter is None:
            limiter = _shared[(url, namespace)] = RedisLimiter(url, namespace=namespace)
        return limiter
