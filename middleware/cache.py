"""`Cache`: answers repeated requests from disk, so reruns cost nothing and replay offline.

Keyed on the request as it will be sent (`Request.fingerprint()`: backend, endpoint, model,
messages after shaping, parameters, response format, and `sample` when given; never API keys,
timeouts or run tags). Modes:

- `on`: read and write (default);
- `off`: neither;
- `read_only`: read, never write;
- `refresh`: call the backend and overwrite, never read;
- `replay`: read only, and a miss raises `CacheMiss` instead of calling the backend.

Errors are never cached. Identical concurrent requests make one backend call (single flight);
every caller gets its answer. With a store that can coordinate processes (`RedisStore.claim`),
that holds across processes and machines too: in `on` mode the caller that takes the store's
lease calls the backend, and the others wait for its answer (or take over when it fails or dies).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from myopto.stores import CacheStore
from myopto.errors import CacheMiss, ConfigError
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.request import Request
from myopto.response import Response, Usage

MODES = ("on", "off", "read_only", "refresh", "replay")
RECORD_VERSION = 1
# Waiting on another process's call: the store wakes waiters when the call ends; they look again
# at least this often, so an owner that died is noticed soon after its lease runs out.
_LONGEST_WAIT = 1.0


class _Flight:
    """One backend call that identical concurrent requests wait on (threads or asyncio tasks)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    async def wait_async(self) -> None:
        """Wait without holding a worker thread (waiters must not starve the thread pool)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.done.is_set():
                return
            self._async_waiters.append((loop, future))
        await future

    def land(self) -> None:
        with self._lock:
            self.done.set()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)


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
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()

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
        flight, leader = self._join(key)
        if not leader:
            flight.done.wait()
            return self._result(flight)
        try:
            response, lease = self._claim(key, mode)
            if response is None:
                try:
                    response = call_next(request)
                    self._save(key, request, response, mode)
                finally:
                    if lease is not None:
                        lease.release()
        except BaseException as error:
            self._land(key, flight, error=error)
            raise
        self._land(key, flight, response=response)
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
        flight, leader = self._join(key)
        if not leader:
            await flight.wait_async()
            return self._result(flight)
        try:
            response, lease = await self._aclaim(key, mode)
            if response is None:
                try:
                    response = await call_next(request)
                    await asyncio.to_thread(self._save, key, request, response, mode)
                finally:
                    if lease is not None:
                        await asyncio.to_thread(lease.release)
        except BaseException as error:
            self._land(key, flight, error=error)
            raise
        self._land(key, flight, response=response)
        return response

    # -- parts -------------------------------------------------------------------------------
    @staticmethod
    def _hit(record: dict, start: float) -> Response:
        """The record as a cache hit (latency: the time the first lookup in this process took)."""
        fields = {**record["response"], "cached": True, "attempts": 0}
        fields["usage"] = Usage(**fields.get("usage", {}))
        fields["latency"] = time.perf_counter() - start
        return Response(**fields)

    def _lookup(self, key: str, mode: str) -> Response | None:
        memory = getattr(self.store, "memory", None)
        if memory is not None:
            kept = memory.hit(key)
            if kept is not None:  # immutable: the same hit serves every later one in this process
                return kept
        start = time.perf_counter()
        record = self.store.get(key)
        if record is not None:
            response = self._hit(record, start)
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

    def _claim(self, key: str, mode: str) -> tuple[Response | None, Any]:
        """Across processes: (another worker's answer, None) or (None, our lease, or None when the
        store cannot coordinate processes or the mode does not write)."""
        claim = getattr(self.store, "claim", None)
        if claim is None or mode != "on":
            return None, None
        start = time.perf_counter()
        while True:
            record, lease, left = claim(key)
            if record is not None or lease is not None:
                return (self._hit(record, start) if record is not None else None), lease
            self.store.wait(key, min(left, _LONGEST_WAIT))

    async def _aclaim(self, key: str, mode: str) -> tuple[Response | None, Any]:
        """`_claim` for async callers: the store's blocking steps run in a worker thread."""
        claim = getattr(self.store, "claim", None)
        if claim is None or mode != "on":
            return None, None
        start = time.perf_counter()
        while True:
            record, lease, left = await asyncio.to_thread(claim, key)
            if record is not None or lease is not None:
                return (self._hit(record, start) if record is not None else None), lease
            await asyncio.to_thread(self.store.wait, key, min(left, _LONGEST_WAIT))

    def _join(self, key: str) -> tuple[_Flight, bool]:
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight()
            return flight, True

    def _land(self, key: str, flight: _Flight, *, response: Response | None = None, error: BaseException | None = None) -> None:
        flight.response, flight.error = response, error
        with self._lock:
            self._flights.pop(key, None)
        flight.land()

    @staticmethod
    def _result(flight: _Flight) -> Response:
        if flight.error is not None:
            raise flight.error
        assert flight.response is not None
        return flight.response

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
        self.store.set(key, record)

    def describe(self) -> str:
        where = getattr(self.store, "location", type(self.store).__name__)
        return f"{self.name} ({self.mode}, {where})"
