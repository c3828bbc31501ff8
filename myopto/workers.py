"""Threads kept for the next sync stream, so that opening one does not start a thread.

A sync `Stream` runs its chain in a thread of its own while the caller reads the chunks. Starting
a thread costs tens of microseconds, which a stream's time to first chunk would pay every call;
`run_in_worker` hands the work to an idle thread instead, and starts one only when none is idle.
There is no upper bound on threads (a bounded pool could queue a stream behind the one it waits
for, e.g. a single-flight follower behind its leader); a thread idle for `IDLE_SECONDS` ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

IDLE_SECONDS = 30.0

_lock = threading.Lock()
_idle: list[queue.SimpleQueue[Callable[[], None]]] = []


def run_in_worker(work: Callable[[], None]) -> None:
    """Run `work()` in an idle worker thread, or in a new one. `work` handles its own errors."""
    with _lock:
        inbox = _idle.pop() if _idle else None
    if inbox is None:
        inbox = queue.SimpleQueue()
        threading.Thread(target=_serve, args=(inbox,), daemon=True, name="myopto-stream").start()
    inbox.put(work)


def idle_workers() -> int:
    """How many threads wait for work now."""
    with _lock:
        return len(_idle)


def _serve(inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
    while True:
        try:
            work = inbox.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            with _lock:
                if inbox in _idle:  # nobody handed it work meanwhile: end the thread
                    _idle.remove(inbox)
                    return
            continue  # it was taken just now: its work is on the way
        work()
        del work  # drop the stream's frames before waiting for the next one
        with _lock:
            _idle.append(inbox)
