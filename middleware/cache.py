"""`Cache`: answers repeated requests from disk, so reruns cost nothing and replay offline.

Keyed on the request as it will be sent (`Request.fingerprint()`: backend, endpoint, model,
messages after shaping, parameters, response format, and `sample` when given; never API keys,
timeouts or run tags). Modes:

- `on`: read and write (default);
- `off`: neither;
- `read_only`: read, never write;
- `refresh`: call the backend and overwrite, never read;
- `replay`: read only, and a miss raises `CacheMiss` instead of calling the backend.

Errors are never cached. A paid answer is never thrown away: when storing it fails after it came
back (a full disk, a Redis server gone), the caller still gets it and the failure is reported
(`myopto.recording.report_unrecorded`). A store that cannot be written at all (`writable = False`,
a read-only directory) serves `read_only` and `replay`, and serves hits in `on`; a call that would
have to record an answer (a miss in `on`, any call in `refresh`) is refused with
`CacheUnavailable` before anything is sent. A stored entry that cannot be read back
(`DamagedCacheEntry`) is logged once per key on the `myopto.cache` logger and treated as a miss
(in `on` the new answer replaces it); `replay` raises it.

Single flight: identical concurrent requests in the same mode make one backend call; the others
follow it and get its answer as a cache hit (`cached=True`, nothing paid, counted as a hit). A
follower's outcome depends on its own options only. It waits no longer than its own `timeout`
and `deadline` allow (then `BackendTimeout`; the wait counts against its deadline). Only a
non-retryable `BackendError` (authentication, a bad request: no option changes those) is shared;
when the leader fails for reasons of its own (cancelled, its timeout or deadline, its retries
spent), one follower calls in its place with its own options and the rest follow that one. A sync
call made on a thread that runs an event loop never waits on another caller (that loop may be the
one that must finish the flight): it calls on its own. With a store that can coordinate processes
(`RedisStore.claim`), single flight holds across processes and machines too: in `on` mode the
caller that takes the store's lease calls the backend, and the others wait for its answer (or
take over when it fails or dies).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from myopto.errors import BackendError, BackendTimeout, CacheMiss, CacheUnavailable, ConfigError, DamagedCacheEntry
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.recording import report_unrecorded
from myopto.request import Request
from myopto.response import Response, Usage
from myopto.stores import CacheStore

MODES = ("on", "off", "read_only", "refresh", "replay")
RECORD_VERSION = 1
# Waiting on another process's call: the store wakes waiters when the call ends; they look again
# at least this often, so an owner that died is noticed soon after its lease runs out.
_LONGEST_WAIT = 1.0
_log = logging.getLogger("myopto.cache")


class _Flight:
    """One backend call that identical concurrent requests wait on (threads or asyncio tasks).

    When its leader fails for reasons of its own, `successor` is the flight that replaces it
    (one follower leads it, the others follow it).
    """

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None
        self.successor: _Flight | None = None
        self._lock = threading.Lock()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    async def wait_async(self, timeout: float | None) -> bool:
        """Wait without holding a worker thread (waiters must not starve the thread pool).
        False when `timeout` seconds passed first."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self._lock:
            if self.done.is_set():
                return True
            self._async_waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if not future.done() or future.cancelled():  # gave up (timeout, or this task cancelled)
                with self._lock:
                    if waiter in self._async_waiters:
                        self._async_waiters.remove(waiter)

    def land(self) -> None:
        with self._lock:
            self.done.set()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that waiter's loop has closed: nobody is left to wake
                pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Cache(Middleware):
    """Serves and stores answers in a `CacheStore` (a `DiskStore` by default). See the module doc."""

    name = "cache"

    def __init__(self, store: CacheStore, *, mode: str = "on") -> None:
        if mode not in MODES:
            raise ConfigError(f"cache mode must be one of {MODES}, got {mode!r}")
        self.store = store
        self.mode = mode
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._lock = threading.Lock()
        self._damage_reported: set[str] = set()

    def mode_for(self, request: Request) -> str:
        mode = request.metadata.get("cache", self.mode)
        if mode not in MODES:
            raise ConfigError(f"cache mode must be one of {MODES}, got {mode!r}")
        return mode

    # -- sync --------------------------------------------------------------------------------
    def __call__(self, request: Request, call_next: Handler) -> Response:
        mode = self.mode_for(request)
        if mode == "off":
            return call_next(request)
        key = request.fingerprint()
        if mode != "refresh":
            hit = self._lookup(key, mode)
            if hit is not None:
                return hit
        return self._miss(key, request, call_next, mode)

    def _miss(self, key: str, request: Request, call_next: Handler, mode: str) -> Response:
        """Lead the flight of `key`, or follow it (taking over when its leader fails for reasons of its own)."""
        flight, leader = self._join(key, mode)
        start = 0.0
        while not leader:
            if _runs_a_loop():
                # this thread runs an event loop, maybe the one that must finish the flight:
                # blocking it on the flight would deadlock, so this caller calls on its own
                return self._lead(key, None, _deadline_left(request, start), call_next, mode)
            start = start or time.monotonic()
            if not flight.done.wait(_time_left(request, start)):
                raise _follower_timeout(request)
            shared = self._shared(flight, start)
            if shared is not None:
                return shared
            flight, leader = self._rejoin(key, mode, flight)
        return self._lead(key, flight, _deadline_left(request, start), call_next, mode)

    def _lead(self, key: str, flight: _Flight | None, request: Request, call_next: Handler, mode: str) -> Response:
        response = None
        try:
            self._check_writable(mode)
            response, lease, request = self._claim(key, mode, request)
            if response is None:
                try:
                    response = call_next(request)
                finally:
                    self._record(key, request, response, mode, lease)
        except BaseException as error:
            self._land(key, mode, flight, response, error)
            raise
        self._land(key, mode, flight, response, None)
        return response

    # -- async -------------------------------------------------------------------------------
    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        mode = self.mode_for(request)
        if mode == "off":
            return await call_next(request)
        key = request.fingerprint()
        if mode != "refresh":
            in_memory = getattr(self.store, "in_memory", None)
            if in_memory is not None and in_memory(key):
                hit = self._lookup(key, mode)
            else:  # a disk or network read must not block the event loop
                hit = await asyncio.to_thread(self._lookup, key, mode)
            if hit is not None:
                return hit
        return await self._amiss(key, request, call_next, mode)

    async def _amiss(self, key: str, request: Request, call_next: AsyncHandler, mode: str) -> Response:
        """`_miss` for async callers: followers wait on the event loop, not in a thread."""
        flight, leader = self._join(key, mode)
        start = 0.0
        while not leader:
            start = start or time.monotonic()
            if not await flight.wait_async(_time_left(request, start)):
                raise _follower_timeout(request)
            shared = self._shared(flight, start)
            if shared is not None:
                return shared
            flight, leader = self._rejoin(key, mode, flight)
        request = _deadline_left(request, start)
        response = None
        try:
            self._check_writable(mode)
            response, lease, request = await self._aclaim(key, mode, request)
            if response is None:
                try:
                    response = await call_next(request)
                finally:
                    if response is not None or lease is not None:
                        # in a worker thread, which saves and then frees the lease even when
                        # this task is cancelled meanwhile
                        await asyncio.to_thread(self._record, key, request, response, mode, lease)
        except BaseException as error:
            # cancelled while recording: the answer is in hand, and the followers get it
            self._land(key, mode, flight, response, error)
            raise
        self._land(key, mode, flight, response, None)
        return response

    # -- reading -----------------------------------------------------------------------------
    def _hit(self, record: Any, start: float, key: str) -> Response:
        """The record as a cache hit (latency: the time the first lookup in this process took).
        A record that does not make a response raises `DamagedCacheEntry`."""
        try:
            fields = {**record["response"], "cached": True, "attempts": 0}
            fields["usage"] = Usage(**fields.get("usage", {}))
            fields["latency"] = time.perf_counter() - start
            response = Response(**fields)
            problem = _shape_problem(response)
        except (TypeError, KeyError, ValueError, AttributeError) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is not None:
            raise self._damaged(key, problem)
        return response

    def _damaged(self, key: str, problem: str) -> DamagedCacheEntry:
        where = getattr(self.store, "location", type(self.store).__name__)
        return DamagedCacheEntry(
            f"the cached entry for key {key[:16]}... in {where} is damaged ({problem}). Modes that may call "
            "the model treat it as a miss (cache='on' replaces it with a new answer); replay cannot",
            key=key,
            location=where,
        )

    def _lookup(self, key: str, mode: str) -> Response | None:
        memory = getattr(self.store, "memory", None)
        if memory is not None:
            kept = memory.hit(key)
            if kept is not None:  # immutable: the same hit serves every later one in this process
                return kept
        start = time.perf_counter()
        try:
            record = self.store.get(key)
            response = None if record is None else self._hit(record, start, key)
        except DamagedCacheEntry as damage:
            if mode == "replay":
                raise
            self._report_damage(key, damage)
            return None
        if response is not None:
            if memory is not None:
                memory.keep_hit(key, response)
            return response
        if mode == "replay":
            raise CacheMiss(
                f"replay mode: no cached answer for this request (key {key[:16]}...); nothing was sent. "
                "Run once with the cache on (MYOPTO_CACHE=on) to record it",
                key=key,
            )
        return None

    def _report_damage(self, key: str, damage: DamagedCacheEntry) -> None:
        """A warning on the `myopto.cache` logger, once per key (every call of the key meets it)."""
        with self._lock:
            if key in self._damage_reported:
                return
            self._damage_reported.add(key)
        _log.warning("damaged cache entry %s..., treated as a miss: %s", key[:16], damage)

    # -- single flight across processes ------------------------------------------------------
    def _claim(self, key: str, mode: str, request: Request) -> tuple[Response | None, Any, Request]:
        """Across processes: (another worker's answer, None) or (None, our lease, or None when the
        store cannot coordinate processes, the mode does not write, or this caller must not wait),
        and the request to send (a wait on another worker counts against its deadline)."""
        claim = getattr(self.store, "claim", None)
        if claim is None or mode != "on":
            return None, None, request
        start = time.perf_counter()
        waiting = 0.0
        while True:
            response, lease, left = self._poll(claim, key, start)
            if left is None:
                return response, lease, _deadline_left(request, waiting)
            if _runs_a_loop():  # the lease may be held by a task of this very loop
                return None, None, request
            waiting = waiting or time.monotonic()
            self.store.wait(key, _wait_seconds(request, waiting, left))

    async def _aclaim(self, key: str, mode: str, request: Request) -> tuple[Response | None, Any, Request]:
        """`_claim` for async callers: the store's blocking steps run in a worker thread."""
        claim = getattr(self.store, "claim", None)
        if claim is None or mode != "on":
            return None, None, request
        start = time.perf_counter()
        waiting = 0.0
        while True:
            response, lease, left = await asyncio.to_thread(self._poll, claim, key, start)
            if left is None:
                return response, lease, _deadline_left(request, waiting)
            waiting = waiting or time.monotonic()
            await asyncio.to_thread(self.store.wait, key, _wait_seconds(request, waiting, left))

    def _poll(self, claim: Any, key: str, start: float) -> tuple[Response | None, Any, float | None]:
        """One claim: (the answer, None, None), (None, our lease, None), or (None, None, seconds
        the owner's lease has left). A damaged record where the answer would be: (None, None,
        None), so this caller calls without the lease and its answer replaces the record."""
        try:
            record, lease, left = claim(key)
            if record is not None:
                return self._hit(record, start, key), None, None
        except DamagedCacheEntry as damage:
            self._report_damage(key, damage)
            return None, None, None
        return None, lease, None if lease is not None else left

    # -- flights -----------------------------------------------------------------------------
    def _join(self, key: str, mode: str) -> tuple[_Flight, bool]:
        # one flight per mode: a `refresh` caller never gets an `on` caller's stored answer,
        # an `on` caller never follows a `read_only` call that records nothing
        with self._lock:
            flight = self._flights.get((mode, key))
            if flight is not None:
                return flight, False
            flight = self._flights[(mode, key)] = _Flight()
            return flight, True

    def _rejoin(self, key: str, mode: str, failed: _Flight) -> tuple[_Flight, bool]:
        """After `failed`'s leader failed for its own reasons: follow the flight that replaces it,
        or lead it (the first follower to ask)."""
        with self._lock:
            successor = failed.successor or self._flights.get((mode, key))
            if successor is not None:
                failed.successor = successor
                return successor, False
            successor = failed.successor = self._flights[(mode, key)] = _Flight()
            return successor, True

    def _land(
        self, key: str, mode: str, flight: _Flight | None, response: Response | None, error: BaseException | None
    ) -> None:
        if flight is None:
            return
        if response is not None:
            flight.response = response
        else:
            flight.error = error
        with self._lock:
            if self._flights.get((mode, key)) is flight:
                del self._flights[(mode, key)]
        flight.land()

    @staticmethod
    def _shared(flight: _Flight, start: float) -> Response | None:
        """What a follower gets from a landed flight: the answer (a hit: another caller paid for
        it), the leader's error when no option could change it, or None: take over."""
        error = flight.error
        if error is None:
            assert flight.response is not None
            return flight.response.replace(cached=True, attempts=0, latency=time.monotonic() - start)
        if isinstance(error, BackendError) and not error.retryable:
            raise error
        return None

    # -- writing -----------------------------------------------------------------------------
    def _check_writable(self, mode: str) -> None:
        """Before anything is sent: a mode that records answers needs a store that takes them."""
        if mode in ("on", "refresh") and getattr(self.store, "writable", True) is False:
            where = getattr(self.store, "location", type(self.store).__name__)
            why = getattr(self.store, "read_only_reason", None) or "a read-only directory or filesystem"
            raise CacheUnavailable(
                f"the cache at {where} cannot be written ({why}), and cache mode "
                f"{mode!r} records every answer it gets, so nothing was sent. Use cache='read_only' (serve what "
                "is cached, call the model for the rest without recording it) or cache='replay' (serve what is "
                "cached, nothing else), or point cache_dir= / MYOPTO_CACHE_DIR at a writable directory",
                location=where,
            )

    def _record(self, key: str, request: Request, response: Response | None, mode: str, lease: Any) -> None:
        """Save the answer (when there is one), then free the lease: in that order, so the
        processes the release wakes find the answer."""
        try:
            if response is not None:
                self._save(key, request, response, mode)
        finally:
            if lease is not None:
                lease.release()

    def _save(self, key: str, request: Request, response: Response, mode: str) -> None:
        if mode == "read_only" or response.cached:
            return
        record = {
            "version": RECORD_VERSION,
            "created": time.time(),
            "run": request.metadata.get("run"),
            "role": request.role,
            "request": request.fingerprint_data(),
            "response": response.replace(cached=False).to_dict(),
        }
        try:
            self.store.set(key, record)
        except Exception as error:  # the answer was paid for: the caller gets it, the loss is reported
            report_unrecorded("cache", error, role=request.role, model=request.model, key=key)

    def describe(self) -> str:
        where = getattr(self.store, "location", type(self.store).__name__)
        read_only = ", read-only store" if getattr(self.store, "writable", True) is False else ""
        return f"{self.name} ({self.mode}, {where}{read_only})"


def _shape_problem(response: Response) -> str | None:
    """What makes a response built from a stored record unusable, or None."""
    if not isinstance(response.text, str):
        return f"text is {type(response.text).__name__}, not a string"
    usage = response.usage
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    if not all(isinstance(count, int) and not isinstance(count, bool) and count >= 0 for count in counts):
        return f"token counts {counts!r} are not whole numbers"
    cost = response.cost
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float))):
        return f"cost {cost!r} is not a number"
    return None


def _runs_a_loop() -> bool:
    """Whether this thread is running an event loop (a sync call made inside a coroutine)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _wait_limit(request: Request) -> float | None:
    """How long a caller's own options let it wait for an answer: its timeout or its deadline,
    whichever is shorter (None: neither is set)."""
    limits = [
        value
        for value in (request.timeout, request.metadata.get("deadline"))
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    return min(limits) if limits else None


def _time_left(request: Request, start: float) -> float | None:
    limit = _wait_limit(request)
    return None if limit is None else limit - (time.monotonic() - start)


def _wait_seconds(request: Request, since: float, lease_left: float) -> float:
    """How long to block on another worker's lease before looking again: never past this
    caller's own limit (then `BackendTimeout`)."""
    own = _time_left(request, since)
    if own is not None and own <= 0:
        raise _follower_timeout(request)
    return min(lease_left, _LONGEST_WAIT, own if own is not None else _LONGEST_WAIT)


def _follower_timeout(request: Request) -> BackendTimeout:
    return BackendTimeout(
        f"no answer within this call's own limit of {_wait_limit(request):g} s (its timeout or deadline): it was "
        "waiting for an identical call already in flight (the cache's single flight), which had not answered. "
        "Nothing was sent for this call",
        retryable=True,
        role=request.role,
        model=request.model,
    )


def _deadline_left(request: Request, start: float) -> Request:
    """The request a caller sends: when it waited on other callers first (`start` is when it
    began to wait; 0: it did not), that wait counts against its deadline."""
    deadline = request.metadata.get("deadline")
    if not start or not isinstance(deadline, (int, float)) or isinstance(deadline, bool):
        return request
    left = max(deadline - (time.monotonic() - start), 0.001)
    return request.replace(metadata={**request.metadata, "deadline": left})
