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
(`myopto.recording.report_unrecorded`; the records themselves: `myopto.middleware.cache_record`).
A store that cannot be written at all (`writable = False`, a read-only directory) serves
`read_only` and `replay`, and serves hits in `on`; a call that would have to record an answer
(a miss in `on`, any call in `refresh`) is refused with `CacheUnavailable` before anything is
sent. A stored entry that cannot be read back (`DamagedCacheEntry`) is logged once per key on
the `myopto.cache` logger and treated as a miss (in `on` the new answer replaces it); `replay`
raises it.

Single flight (`myopto.middleware.single_flight`): identical concurrent requests in the same mode
make one backend call; the others follow it and get its answer as a cache hit (`cached=True`,
nothing paid, counted as a hit). A follower's outcome depends on its own options only. With a
store that can coordinate processes (`RedisStore.claim`), single flight holds across processes
and machines too: in `on` mode the caller that takes the store's lease calls the backend, and
the others wait for its answer (or take over when it fails or dies).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from myopto.errors import CacheMiss, ConfigError, DamagedCacheEntry
from myopto.middleware.cache_record import check_writable, hit_of, record_answer
from myopto.middleware.single_flight import CrossProcessFlight, SingleFlight
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.request import Request
from myopto.response import Response
from myopto.stores import CacheStore

MODES = ("on", "off", "read_only", "refresh", "replay")
_log = logging.getLogger("myopto.cache")


class Cache(Middleware):
    """Serves and stores answers in a `CacheStore` (a `DiskStore` by default). See the module doc."""

    name = "cache"

    def __init__(self, store: CacheStore, *, mode: str = "on") -> None:
        if mode not in MODES:
            raise ConfigError(f"cache mode must be one of {MODES}, got {mode!r}")
        self.store = store
        self.mode = mode
        self._flights = SingleFlight()
        self._across_processes = CrossProcessFlight(store, self._report_damage)
        self._lock = threading.Lock()
        self._damage_reported: set[str] = set()

    def mode_for(self, request: Request) -> str:
        mode: str = request.metadata.get("cache", self.mode)
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
        lead = self._flights.follow(key, mode, request)
        if isinstance(lead, Response):
            return lead
        flight, request = lead
        response = None
        try:
            check_writable(self.store, mode)
            response, lease, request = self._across_processes.claim(key, mode, request)
            if response is None:
                try:
                    response = call_next(request)
                finally:
                    record_answer(self.store, key, request, response, mode, lease)
        except BaseException as error:
            self._flights.land(key, mode, flight, response, error)
            raise
        self._flights.land(key, mode, flight, response, None)
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
        lead = await self._flights.afollow(key, mode, request)
        if isinstance(lead, Response):
            return lead
        flight, request = lead
        response = None
        try:
            check_writable(self.store, mode)
            response, lease, request = await self._across_processes.aclaim(key, mode, request)
            if response is None:
                try:
                    response = await call_next(request)
                finally:
                    if response is not None or lease is not None:
                        # in a worker thread, which saves and then frees the lease even when
                        # this task is cancelled meanwhile
                        await asyncio.to_thread(record_answer, self.store, key, request, response, mode, lease)
        except BaseException as error:
            # cancelled while recording: the answer is in hand, and the followers get it
            self._flights.land(key, mode, flight, response, error)
            raise
        self._flights.land(key, mode, flight, response, None)
        return response

    # -- reading -----------------------------------------------------------------------------
    def _lookup(self, key: str, mode: str) -> Response | None:
        memory = getattr(self.store, "memory", None)
        if memory is not None:
            kept: Response | None = memory.hit(key)
            if kept is not None:  # immutable: the same hit serves every later one in this process
                return kept
        start = time.perf_counter()
        try:
            record = self.store.get(key)
            response: Response | None = None if record is None else hit_of(self.store, record, start, key)
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

    def describe(self) -> str:
        where = getattr(self.store, "location", type(self.store).__name__)
        read_only = ", read-only store" if getattr(self.store, "writable", True) is False else ""
        return f"{self.name} ({self.mode}, {where}{read_only})"
