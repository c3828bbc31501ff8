"""Single flight for the cache: identical concurrent requests make one backend call.

In a process (`SingleFlight`): the first caller of a request (same key, same mode) leads the
flight and calls the backend; the others follow it and get its answer as a cache hit
(`cached=True`, nothing paid). A follower's outcome depends on its own options only. It waits no
longer than its own `timeout` and `deadline` allow (then `BackendTimeout`; the wait counts
against its deadline). Only a non-retryable `BackendError` (authentication, a bad request: no
option changes those) is shared; when the leader fails for reasons of its own (cancelled, its
timeout or deadline, its retries spent), one follower calls in its place with its own options
and the rest follow that one. A sync call made on a thread that runs an event loop never waits
on another caller (that loop may be the one that must finish the flight): it calls on its own.

Across processes (`CrossProcessFlight`), with a store that can coordinate them
(`RedisStore.claim` and `wait`): in `on` mode the caller that takes the store's lease calls the
backend, and the others wait for its answer (or take over when it fails or dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeGuard

from myopto.errors import BackendError, BackendTimeout, DamagedCacheEntry, StreamBroken
from myopto.middleware.cache_record import hit_of
from myopto.request import Request
from myopto.response import Response
from myopto.stores import CacheStore, CoordinatingStore

# Waiting on another process's call: the store wakes waiters when the call ends; they look again
# at least this often, so an owner that died is noticed soon after its lease runs out.
_LONGEST_WAIT = 1.0


class Flight:
    """One backend call that identical concurrent requests wait on (threads or asyncio tasks).

    When its leader fails for reasons of its own, `successor` is the flight that replaces it
    (one follower leads it, the others follow it).
    """

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None
        self.successor: Flight | None = None
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
            with contextlib.suppress(RuntimeError):  # that waiter's loop has closed: nobody is left to wake
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Lead(NamedTuple):
    """A caller's turn to call: the `flight` it leads (None: it calls on its own, leading no
    one) and the `request` to send (a wait on other callers counts against its deadline)."""

    flight: Flight | None
    request: Request


class SingleFlight:
    """The flights in progress of one cache, one per (mode, key). See the module doc."""

    def __init__(self) -> None:
        self._flights: dict[tuple[str, str], Flight] = {}
        self._lock = threading.Lock()

    def follow(self, key: str, mode: str, request: Request) -> Response | Lead:
        """The answer of the flight of `key` this caller followed, or its `Lead`: this caller
        calls (the first caller, or taking over when a leader failed for reasons of its own)."""
        flight, leader = self._join(key, mode)
        start = 0.0
        while not leader:
            if _runs_a_loop():
                # this thread runs an event loop, maybe the one that must finish the flight:
                # blocking it on the flight would deadlock, so this caller calls on its own
                return Lead(None, _deadline_left(request, start))
            start = start or time.monotonic()
            if not flight.done.wait(_time_left(request, start)):
                raise _follower_timeout(request)
            shared = self._shared(flight, start)
            if shared is not None:
                return shared
            flight, leader = self._rejoin(key, mode, flight)
        return Lead(flight, _deadline_left(request, start))

    async def afollow(self, key: str, mode: str, request: Request) -> Response | Lead:
        """`follow` for async callers: followers wait on the event loop, not in a thread."""
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
        return Lead(flight, _deadline_left(request, start))

    def land(
        self, key: str, mode: str, flight: Flight | None, response: Response | None, error: BaseException | None
    ) -> None:
        """The leader's outcome: its answer when it has one (even if it failed after), else its error."""
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

    def _join(self, key: str, mode: str) -> tuple[Flight, bool]:
        # one flight per mode: a `refresh` caller never gets an `on` caller's stored answer,
        # an `on` caller never follows a `read_only` call that records nothing
        with self._lock:
            flight = self._flights.get((mode, key))
            if flight is not None:
                return flight, False
            flight = self._flights[(mode, key)] = Flight()
            return flight, True

    def _rejoin(self, key: str, mode: str, failed: Flight) -> tuple[Flight, bool]:
        """After `failed`'s leader failed for its own reasons: follow the flight that replaces it,
        or lead it (the first follower to ask)."""
        with self._lock:
            successor = failed.successor or self._flights.get((mode, key))
            if successor is not None:
                failed.successor = successor
                return successor, False
            successor = failed.successor = self._flights[(mode, key)] = Flight()
            return successor, True

    @staticmethod
    def _shared(flight: Flight, start: float) -> Response | None:
        """What a follower gets from a landed flight: the answer (a hit: another caller paid for
        it), the leader's error when no option could change it, or None: take over."""
        error = flight.error
        if error is None:
            assert flight.response is not None
            return flight.response.replace(cached=True, attempts=0, latency=time.monotonic() - start)
        # a leader's broken stream is its own (its caller saw part of it): a follower asks anew
        if isinstance(error, BackendError) and not error.retryable and not isinstance(error, StreamBroken):
            raise error
        return None


class CrossProcessFlight:
    """Single flight across processes through a store's lease (`claim`, `wait`), in `on` mode.
    `report_damage(key, damage)` is told of a damaged record where another worker's answer was."""

    def __init__(self, store: CacheStore, report_damage: Callable[[str, DamagedCacheEntry], None]) -> None:
        self.store = store
        self._report_damage = report_damage

    def claim(self, key: str, mode: str, request: Request) -> tuple[Response | None, Any, Request]:
        """(another worker's answer, None) or (None, our lease, or None when the store cannot
        coordinate processes, the mode does not write, or this caller must not wait), and the
        request to send (a wait on another worker counts against its deadline)."""
        store = self.store
        if not _coordinates(store) or mode != "on":
            return None, None, request
        start = time.perf_counter()
        waiting = 0.0
        while True:
            response, lease, left = self._poll(store, key, start)
            if left is None:
                return response, lease, _deadline_left(request, waiting)
            if _runs_a_loop():  # the lease may be held by a task of this very loop
                return None, None, request
            waiting = waiting or time.monotonic()
            store.wait(key, _wait_seconds(request, waiting, left))

    async def aclaim(self, key: str, mode: str, request: Request) -> tuple[Response | None, Any, Request]:
        """`claim` for async callers: the store's blocking steps run in a worker thread."""
        store = self.store
        if not _coordinates(store) or mode != "on":
            return None, None, request
        start = time.perf_counter()
        waiting = 0.0
        while True:
            response, lease, left = await asyncio.to_thread(self._poll, store, key, start)
            if left is None:
                return response, lease, _deadline_left(request, waiting)
            waiting = waiting or time.monotonic()
            await asyncio.to_thread(store.wait, key, _wait_seconds(request, waiting, left))

    def _poll(self, store: CoordinatingStore, key: str, start: float) -> tuple[Response | None, Any, float | None]:
        """One claim: (the answer, None, None), (None, our lease, None), or (None, None, seconds
        the owner's lease has left). A damaged record where the answer would be: (None, None,
        None), so this caller calls without the lease and its answer replaces the record."""
        try:
            record, lease, left = store.claim(key)
            if record is not None:
                return hit_of(store, record, start, key), None, None
        except DamagedCacheEntry as damage:
            self._report_damage(key, damage)
            return None, None, None
        return None, lease, None if lease is not None else left


def _coordinates(store: CacheStore) -> TypeGuard[CoordinatingStore]:
    """Whether `store` can coordinate processes (it has `claim`, and so `wait`)."""
    return getattr(store, "claim", None) is not None


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
    """The error of a caller that waited on another's call past its own timeout or deadline."""
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
