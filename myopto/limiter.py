"""The state behind the `Limits` middleware: request and token rates per model, pauses after a
429, and money spent against budgets. `LocalLimiter` keeps it in this process; `RedisLimiter`
keeps it on a Redis server, so a fleet of workers shares one rate and one budget.

Rates follow GCRA (the generic cell rate algorithm, a token bucket written as one timestamp):
a model at `rpm` gets a request every 60/rpm seconds, with a burst of about one second's worth
(providers enforce limits on sub-minute windows, so a minute's worth at once would be refused).
A caller reserves its slot and sleeps until it, one operation per request, so callers are spread
evenly without polling. Tokens work the same with the request's estimated tokens as its cost;
the estimate is corrected with the real usage afterwards.

Pauses after a 429 belong to one endpoint and model: a provider's Retry-After says nothing about
another server that serves a model of the same name. A pause is at most `pause_cap()` seconds
(`MYOPTO_MAX_PAUSE_SECONDS`, 300 by default), whatever the server asked: one absurd Retry-After
(a year, `inf`) cannot stop a fleet. Values that are no length of time (NaN, negative) pause nothing.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from typing import Any

from myopto.errors import ConfigError
from myopto.redis_connection import NOTHING_SENT, RedisConnection, redis_connection
from myopto.settings import DEFAULT_MAX_PAUSE_SECONDS, max_pause_setting

# The cap on the cap: a day. Longer is no rate limit but an outage, and Redis's expiry times
# must stay in range.
LONGEST_PAUSE_SECONDS = 86400.0


def pause_cap(max_pause: Any = None) -> float:
    """The longest pause or Retry-After wait, in seconds: `max_pause` when given, else
    `MYOPTO_MAX_PAUSE_SECONDS`, else 300. `ConfigError` unless it is a number > 0 and at most a day."""
    if max_pause is None:
        raw = max_pause_setting()
        if raw is None:
            return DEFAULT_MAX_PAUSE_SECONDS
        try:
            value: Any = float(raw)
        except ValueError:
            value = math.nan
        return _checked_cap(value, raw, "MYOPTO_MAX_PAUSE_SECONDS")
    valid = not isinstance(max_pause, bool) and isinstance(max_pause, (int, float))
    return _checked_cap(max_pause if valid else math.nan, max_pause, "max_pause")


def _checked_cap(value: float, given: Any, name: str) -> float:
    if not (0 < value <= LONGEST_PAUSE_SECONDS):  # also refuses NaN
        raise ConfigError(
            f"{name} must be a number of seconds > 0 and at most {LONGEST_PAUSE_SECONDS:g} (a day), got {given!r}: "
            f"the longest a provider's Retry-After may pause a model (default {DEFAULT_MAX_PAUSE_SECONDS:g})"
        )
    return float(value)


def capped_wait(seconds: Any, cap: float) -> float | None:
    """A server's Retry-After as seconds to wait, at most `cap` (`inf` or a year become `cap`);
    None when it is no length of time at all (not a number, NaN, negative)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    if seconds != seconds or seconds < 0:  # NaN is the one value unequal to itself
        return None
    return float(min(seconds, cap))  # compared before converting: an int past float's range is fine


def _usable_pause(seconds: float) -> float | None:
    """`seconds` as a pause a limiter can store (its own guard; `Limits` caps it first)."""
    value = capped_wait(seconds, LONGEST_PAUSE_SECONDS)
    return value if value else None


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
        self._paused: dict[tuple[str | None, str], float] = {}
        self._spent: dict[str, float] = {}
        self.location = "this process"

    def reserve(
        self, model: str, rpm: float | None, tpm: float | None, tokens: int, endpoint: str | None = None
    ) -> float:
        """Take the next slot for one request of about `tokens` tokens to `model` at `endpoint`;
        returns seconds to wait (its rate, and any pause of that endpoint's model)."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._paused.get((endpoint, model), 0.0))
            wait = 0.0
            for unit, per_minute, cost in (("requests", rpm, 1), ("tokens", tpm, tokens)):
                if per_minute:
                    slot_wait, self._tat[model, unit] = _slot(
                        self._tat.get((model, unit), 0.0), start, cost, per_minute / 60
                    )
                    wait = max(wait, slot_wait)
            return start - now + wait

    def adjust(self, model: str, tpm: float, tokens: int) -> None:
        """Correct a reservation by `tokens` (real usage minus the estimate; may be negative)."""
        with self._lock:
            key = (model, "tokens")
            if key in self._tat:
                self._tat[key] += tokens / (tpm / 60)

    def pause(self, model: str, seconds: float, endpoint: str | None = None) -> None:
        """Hold back every caller of `model` at `endpoint` for `seconds` (a 429 with Retry-After)."""
        usable = _usable_pause(seconds)
        if usable is None:
            return
        with self._lock:
            key = (endpoint, model)
            self._paused[key] = max(self._paused.get(key, 0.0), time.monotonic() + usable)

    def paused_for(self, model: str, endpoint: str | None = None) -> float:
        """Seconds left of a pause of `model` at `endpoint` (0 when it is not paused)."""
        with self._lock:
            return max(0.0, self._paused.get((endpoint, model), 0.0) - time.monotonic())

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
# KEYS: pause-until. ARGV: seconds, positive and finite (the caller's guard: Redis refuses an
# expiry that is not a positive whole number of ms, hence at least 1).
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local resume = now + tonumber(ARGV[1])
if resume > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.6f', resume), 'PX', math.max(1, math.ceil(tonumber(ARGV[1]) * 1000)))
end
return 1
"""


# What a failed command means for the call: the checks come before the request is sent; the
# counting after it (`Limits` then reports the failure and returns the answer).
_BEFORE_SENDING = f"{NOTHING_SENT}, since its rate limits and budgets could not be checked"


def _hashed(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RedisLimiter:
    """Rates, pauses and spending shared by every process using the same Redis URL and namespace.

    Each operation is one atomic command or script touching keys of one hash slot, so 4 workers
    at rpm=1200 send 20 requests a second together, not 80, on a single server or a cluster.
    Keys: `<ns>:limits:{<model>}:requests|tokens` and `...:pause:<endpoint hash>` (a model name
    with braces is hashed too, so the three stay in one slot; an endpoint URL, which may carry
    a credential, is only ever stored hashed), `<ns>:budget:<scope>`.
    """

    blocking = True  # network I/O: the async path runs it in a worker thread

    def __init__(self, url: str | RedisConnection, *, namespace: str = "myopto") -> None:
        self.connection = url if isinstance(url, RedisConnection) else redis_connection(url)
        self.location = self.connection.where
        self.namespace = namespace
        self._scripts: dict[str, Any] = {}

    def _keys(self, model: str, endpoint: str | None = None) -> list[str]:
        name = model if "{" not in model and "}" not in model else f"sha256-{_hashed(model)}"
        tag = f"{self.namespace}:limits:{{{name}}}"
        return [f"{tag}:requests", f"{tag}:tokens", f"{tag}:pause:{'-' if endpoint is None else _hashed(endpoint)}"]

    def _run_script(self, source: str, keys: list[str], args: list[Any], consequence: str = "") -> Any:
        def call(client: Any) -> Any:
            script = self._scripts.get(source)
            if script is None:
                script = self._scripts[source] = client.register_script(source)
            return script(keys=keys, args=args)

        return self.connection.run(call, consequence=consequence)

    def reserve(
        self, model: str, rpm: float | None, tpm: float | None, tokens: int, endpoint: str | None = None
    ) -> float:
        per_second = [(rpm or 0) / 60, (tpm or 0) / 60]
        return float(self._run_script(_RESERVE, self._keys(model, endpoint), [*per_second, tokens], _BEFORE_SENDING))

    def adjust(self, model: str, tpm: float, tokens: int) -> None:
        key = self._keys(model)[1]
        self.connection.run(
            lambda client: client.incrbyfloat(key, tokens / (tpm / 60)),
            consequence="the call's tokens were not counted against the rate limit",
        )

    def pause(self, model: str, seconds: float, endpoint: str | None = None) -> None:
        usable = _usable_pause(seconds)
        if usable is not None:
            self._run_script(
                _PAUSE,
                [self._keys(model, endpoint)[2]],
                [repr(usable)],
                "the provider's Retry-After does not hold back the other workers",
            )

    def paused_for(self, model: str, endpoint: str | None = None) -> float:
        # the pause key expires when the pause ends (-2: no key)
        key = self._keys(model, endpoint)[2]
        return max(0, int(self.connection.run(lambda client: client.pttl(key), consequence=_BEFORE_SENDING))) / 1000

    def _budget_key(self, scope: str) -> str:
        return f"{self.namespace}:budget:{scope}"

    def spent(self, scope: str) -> float:
        value = self.connection.run(lambda client: client.get(self._budget_key(scope)), consequence=_BEFORE_SENDING)
        return float(value or 0.0)

    def spend(self, scope: str, usd: float) -> None:
        self.connection.run(
            lambda client: client.incrbyfloat(self._budget_key(scope), usd),
            consequence="the call's cost was not counted against the budget",
        )


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
