"""The cache's records: what it stores for an answer, and an answer read back as a hit.

`record_answer` stores the record of an answer (`record_of`: the record version, when, the run
and role, the request's fingerprint data, and the answer) and then frees the store's
single-flight lease, in that order. A paid answer is never thrown away: when the store fails,
the failure is reported (`myopto.recording.report_unrecorded`) and the caller still gets it.
`check_writable` refuses, before anything is sent, a mode that records answers on a store that
cannot be written. `hit_of` builds the `Response` a stored record is served as, or raises
`DamagedCacheEntry` when it does not make one. (Each store checks a record's shape as it reads
it: `myopto.stores.memory.record_problem`.)
"""

from __future__ import annotations

import time
from typing import Any

from myopto.errors import CacheUnavailable, DamagedCacheEntry
from myopto.recording import report_unrecorded
from myopto.request import Request
from myopto.response import Response, Usage
from myopto.stores import CacheStore

RECORD_VERSION = 1


def record_of(request: Request, response: Response) -> dict[str, Any]:
    """The record stored for `response`, the answer to `request`."""
    return {
        "version": RECORD_VERSION,
        "created": time.time(),
        "run": request.metadata.get("run"),
        "role": request.role,
        "request": request.fingerprint_data(),
        "response": response.replace(cached=False).to_dict(),
    }


def record_answer(
    store: CacheStore, key: str, request: Request, response: Response | None, mode: str, lease: Any
) -> None:
    """Save the answer (when there is one), then free the lease: in that order, so the
    processes the release wakes find the answer."""
    try:
        if response is not None:
            _save(store, key, request, response, mode)
    finally:
        if lease is not None:
            lease.release()


def _save(store: CacheStore, key: str, request: Request, response: Response, mode: str) -> None:
    if mode == "read_only" or response.cached:
        return
    record = record_of(request, response)
    try:
        store.set(key, record)
    except Exception as error:  # noqa: BLE001 - the answer was paid for: the caller gets it, the loss is reported
        report_unrecorded("cache", error, role=request.role, model=request.model, key=key)


def check_writable(store: CacheStore, mode: str) -> None:
    """Before anything is sent: a mode that records answers needs a store that takes them."""
    if mode in ("on", "refresh") and getattr(store, "writable", True) is False:
        where = getattr(store, "location", type(store).__name__)
        why = getattr(store, "read_only_reason", None) or "a read-only directory or filesystem"
        raise CacheUnavailable(
            f"the cache at {where} cannot be written ({why}), and cache mode "
            f"{mode!r} records every answer it gets, so nothing was sent. Use cache='read_only' (serve what "
            "is cached, call the model for the rest without recording it) or cache='replay' (serve what is "
            "cached, nothing else), or point cache_dir= / MYOPTO_CACHE_DIR at a writable directory",
            location=where,
        )


def hit_of(store: CacheStore, record: Any, start: float, key: str) -> Response:
    """`record` (of `key`, from `store`) as a cache hit (latency: the time since `start`, when the
    lookup began). A record that does not make a response raises `DamagedCacheEntry`."""
    try:
        fields = {**record["response"], "cached": True, "attempts": 0}
        fields["usage"] = Usage(**fields.get("usage", {}))
        fields["latency"] = time.perf_counter() - start
        response = Response(**fields)
        problem = _shape_problem(response)
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        where = getattr(store, "location", type(store).__name__)
        raise DamagedCacheEntry(
            f"the cached entry for key {key[:16]}... in {where} is damaged ({problem}). Modes that may call "
            "the model treat it as a miss (cache='on' replaces it with a new answer); replay cannot",
            key=key,
            location=where,
        )
    return response


def _shape_problem(response: Response) -> str | None:
    """What makes a response built from a stored record unusable, or None."""
    text: object = response.text  # built from a stored record: any JSON value may be there
    if not isinstance(text, str):
        return f"text is {type(text).__name__}, not a string"
    usage = response.usage
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    if not all(isinstance(count, int) and not isinstance(count, bool) and count >= 0 for count in counts):
        return f"token counts {counts!r} are not whole numbers"
    cost = response.cost
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float))):
        return f"cost {cost!r} is not a number"
    return None
