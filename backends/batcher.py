"""`Batcher`: gathers concurrent requests into one batched call (one padded `generate`).

A burst of callers does not arrive at one instant: each thread builds its request and its prompt
first, a few milliseconds apart (more on a busy machine). A fixed wait after the first arrival cut
such a burst in two, and the second part then waited for the whole first `generate`: the gatherer
waits `max_wait` after the latest arrival instead, so a burst stays one batch, and never more
than `max_gather` after the first (a steady trickle still starts a batch in bounded time)."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

GATHER_WAITS = 5  # a burst is gathered for at most this many `max_wait`s after its first item

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs `run(items) -> results` on batches of items submitted from many threads.

    A worker thread takes the first waiting item and gathers more while they keep coming (each
    within `max_wait` seconds of the one before, all within `max_gather` of the first: by default
    five times `max_wait`), up to `max_batch_size`; it splits them by `key(item)` (only items
    with equal keys share a batch) and runs each group. While a batch runs, new items queue up
    and form the next one. Each caller gets its own result or its own exception (`run` may give
    an exception as one item's result: that caller alone gets it).
    """

    def __init__(
        self,
        run: Callable[[list[Item]], Sequence[Result | BaseException]],
        *,
        max_batch_size: int = 8,
        max_wait: float = 0.002,
        max_gather: float | None = None,
        key: Callable[[Item], Hashable] = lambda item: None,
        name: str = "myopto-batcher",
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_gather = GATHER_WAITS * max_wait if max_gather is None else max_gather
        self.key = key
        self.name = name
        self.batch_sizes: list[int] = []  # sizes of the batches run, for tests and benchmarks
        self._queue: queue.Queue[tuple[Item, concurrent.futures.Future[Result]]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: Item) -> Result:
        """Run `item` in the next batch and return its result (blocks until then)."""
        future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        self._ensure_worker()
        self._queue.put((item, future))
        return future.result()

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            with self._lock:
                if self._worker is None or not self._worker.is_alive():
                    self._worker = threading.Thread(target=self._loop, name=self.name, daemon=True)
                    self._worker.start()

    def _gather(self) -> list[tuple[Item, concurrent.futures.Future[Result]]]:
        """The next batch: the first waiting item and those that follow it closely."""
        pending = [self._queue.get()]
        first = latest = time.perf_counter()
        while len(pending) < self.max_batch_size:
            remaining = min(latest + self.max_wait, first + self.max_gather) - time.perf_counter()
            try:
                pending.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
            latest = time.perf_counter()
        return pending

    def _loop(self) -> None:
        while True:
            pending = self._gather()
            groups: dict[Hashable, list[tuple[Item, Any]]] = {}
            for entry in pending:
                try:
                    group_key = self.key(entry[0])
                except Exception as error:  # noqa: BLE001 - a bad item fails alone, whatever its key raised
                    entry[1].set_exception(error)
                    continue
                groups.setdefault(group_key, []).append(entry)
            for group in groups.values():
                self._run_group(group)

    def _run_group(self, group: list[tuple[Item, Any]]) -> None:
        self.batch_sizes.append(len(group))
        try:
            results = self.run([item for item, _ in group])
        except BaseException as error:  # noqa: BLE001 - every caller of the batch sees the failure
            for _, future in group:
                future.set_exception(error)
            return
        for (_, future), result in zip(group, results, strict=False):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
