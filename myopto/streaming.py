"""Streamed calls: the chunks of an answer as they come, through the same chain as a plain call.

A stream is a property of the call, not a second chain. `Stream` (sync) and `AsyncStream` run the
role's chain with a `StreamSink` on the request: a backend that streams pushes each chunk into it
as the provider sends it, and returns the assembled `Response` as a plain call would, so every
middleware sees the whole answer when the stream ends (the cache stores it with its chunks,
usage and budgets count it, logs write one record). An answer that comes back without being
pushed (a cache hit, a replay, a follower of single flight, a backend that cannot stream) is
streamed from its stored chunks at once (`myopto.chunks.replay_chunks`).

Closing a stream early (`close()`, leaving a `with` block, a `break` that drops the last
reference, cancelling the task) makes the sink raise `StreamClosed` at the backend's next chunk:
the provider's stream is closed and nothing is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from myopto.chunks import Chunk, replay_chunks
from myopto.errors import StreamClosed
from myopto.request import Request
from myopto.response import Response
from myopto.workers import run_in_worker


class StreamSink:
    """Where a streamed call's chunks go. Backends call `push(chunk)`; middleware may read
    `started` (a chunk reached the caller: no retry or re-ask now), `chunks`, `first_chunk_at`
    and add a listener (`listen(fn)`: `fn(chunk)` for each chunk, in the pushing thread)."""

    def __init__(self, deliver: Callable[[Chunk], None]) -> None:
        self._deliver = deliver
        self._listeners: list[Callable[[Chunk], None]] = []
        self.started_at = time.perf_counter()
        self.first_chunk_at: float | None = None
        self.chunks = 0
        self.closed = False
        self.text_parts: list[str] = []
        self._on_close: list[Callable[[], None]] = []

    @property
    def started(self) -> bool:
        return self.chunks > 0

    @property
    def time_to_first_chunk(self) -> float | None:
        """Seconds from the call to its first chunk (None before one)."""
        return None if self.first_chunk_at is None else self.first_chunk_at - self.started_at

    def listen(self, listener: Callable[[Chunk], None]) -> None:
        self._listeners.append(listener)

    def on_close(self, stop: Callable[[], None]) -> None:
        """`stop()` runs when the caller closes the stream (in the caller's thread): a backend
        closes the provider's connection with it, so it does not wait for the next chunk."""
        self._on_close.append(stop)
        if self.closed:
            stop()

    def push(self, chunk: Chunk) -> None:
        """Hand `chunk` to the caller; `StreamClosed` when the caller has stopped reading."""
        if self.closed:
            raise StreamClosed(text="".join(self.text_parts))
        if self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()
        self.chunks += 1
        if chunk.text:
            self.text_parts.append(chunk.text)
        for listener in self._listeners:
            listener(chunk)
        self._deliver(chunk)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stop in self._on_close:
            # closing a connection that already failed leaves nothing to do
            with contextlib.suppress(Exception):
                stop()


class _Done:
    def __init__(self, response: Response) -> None:
        self.response = response


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Reading:
    """What the sync and async streams share: the chunks the backend pushed, then (when it pushed
    none: a cache hit) the answer's stored chunks, then the end."""

    sink: StreamSink
    _response: Response | None
    _replay: deque[Chunk] | None
    _finished: bool

    def _ended(self) -> bool:
        return self._finished and not self._replay

    def _ready(self) -> Chunk | None:
        """The next replayed chunk, or None: read the next item the chain sent."""
        return self._replay.popleft() if self._replay else None

    def _take(self, item: Chunk | _Done | _Failed) -> Chunk | None:
        """A pushed chunk; or, at the chain's end, None (having kept its answer) or its error."""
        if isinstance(item, Chunk):
            return item
        self._finished = True
        if isinstance(item, _Failed):
            raise item.error
        self._response = item.response
        if not self.sink.started:  # answered without streaming (a cache hit): its chunks now
            self._replay = deque(replay_chunks(item.response))
        return None


class _Mailbox:
    """Where a sync stream's worker leaves chunks for the reading thread.

    The first chunk that arrives while the reader waits is handed over: the worker waits (up to
    `HANDOVER_SECONDS`) until the reader took it. Otherwise the worker, already holding the GIL,
    would go on reading the provider's next chunks and the waiting reader would get the GIL only
    at CPython's next forced switch (5 ms): the time to first chunk a caller sees. Later chunks
    are not handed over: two thread switches a chunk cost more of the whole stream's time than
    they save (measured on LiteLLM streams, whose chunks take milliseconds of CPU each)."""

    HANDOVER_SECONDS = 0.005

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._taken: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._reader_waits = False
        self._handing = False
        self._handed = False

    def deliver(self, chunk: Chunk) -> None:
        """(worker) A chunk for the reader."""
        hand_over = self._reader_waits and not self._handed
        if hand_over:
            self._handing = self._handed = True  # before the put: the reader that takes the chunk sees it
        self._items.put(chunk)
        if hand_over:
            with contextlib.suppress(queue.Empty):  # the reader is slow: go on without it
                self._taken.get(timeout=self.HANDOVER_SECONDS)

    def end(self, item: _Done | _Failed) -> None:
        """(worker) The chain's answer or error, last."""
        self._items.put(item)

    def take(self) -> Any:
        """(reader) The next chunk, answer or error, waiting for it."""
        try:
            item = self._items.get_nowait()
        except queue.Empty:
            self._reader_waits = True
            item = self._items.get()
            self._reader_waits = False
        if self._handing:
            self._handing = False
            self._taken.put(None)
        return item

    def take_within(self, seconds: float) -> Any:
        """(tests) The next item, or `queue.Empty` after `seconds`."""
        return self._items.get(timeout=seconds)


def _work(run: Callable[[Request], Response], request: Request, mailbox: _Mailbox) -> None:
    """A sync stream's chain, in its worker thread: the answer or the error goes to the reader."""
    try:
        mailbox.end(_Done(run(request)))
    except BaseException as error:  # noqa: BLE001 - handed to the reading thread, which raises it
        mailbox.end(_Failed(error))


class Stream(_Reading):
    """A streamed call (sync): iterate it for `Chunk`s; `response` (or `get_final_response()`)
    is the assembled `Response` once it ended. The chain runs in a worker thread (`myopto.workers`)."""

    def __init__(self, run: Callable[[Request], Response], request: Request) -> None:
        self._mailbox = _Mailbox()
        self.sink = StreamSink(self._mailbox.deliver)
        self._response: Response | None = None
        self._replay: deque[Chunk] | None = None
        self._finished = False
        context = contextvars.copy_context()  # the caller's run tags reach the call
        streamed = request.replace(sink=self.sink)
        mailbox = self._mailbox  # the worker holds the mailbox, not the stream: dropping the stream closes it
        run_in_worker(lambda: context.run(_work, run, streamed, mailbox))

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        while not self._ended():
            chunk = self._ready() or self._take(self._mailbox.take())
            if chunk is not None:
                return chunk
        raise StopIteration

    @property
    def response(self) -> Response:
        """The assembled answer: reads what is left of the stream first."""
        if self._response is None:
            for _ in self:
                pass
        assert self._response is not None  # the loop above ends only with a response or an error
        return self._response

    def get_final_response(self) -> Response:
        """Same as `response` (the OpenAI SDK's name)."""
        return self.response

    @property
    def text(self) -> str:
        """The whole answer's text (reads the rest of the stream)."""
        return self.response.text

    def close(self) -> None:
        """Stop reading: the backend stops the provider's stream at its next chunk."""
        if not self._finished:
            self.sink.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "sink"):  # built (a refused request never was)
            self.close()


class AsyncStream(_Reading):
    """A streamed call (async): `async for` it for `Chunk`s; `await stream.get_final_response()`
    is the assembled `Response`. The chain runs as a task on the caller's loop."""

    def __init__(self, run: Callable[[Request], Awaitable[Response]], request: Request) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.sink = StreamSink(self._deliver)
        self._response: Response | None = None
        self._replay: deque[Chunk] | None = None
        self._finished = False
        self._task = self._loop.create_task(self._work(run, request.replace(sink=self.sink)))

    def _deliver(self, chunk: Chunk) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._queue.put_nowait(chunk)
        else:  # a backend pushing from a worker thread
            self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)

    async def _work(self, run: Callable[[Request], Awaitable[Response]], request: Request) -> None:
        try:
            self._queue.put_nowait(_Done(await run(request)))
        except BaseException as error:  # noqa: BLE001 - handed to the reader, which raises it
            self._queue.put_nowait(_Failed(error))

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self

    async def __anext__(self) -> Chunk:
        while not self._ended():
            chunk = self._ready()
            if chunk is not None:
                return chunk
            try:
                item = await self._queue.get()
            except asyncio.CancelledError:
                await self.aclose()
                raise
            chunk = self._take(item)
            if chunk is not None:
                return chunk
        raise StopAsyncIteration

    async def get_final_response(self) -> Response:
        """The assembled answer: reads what is left of the stream first."""
        if self._response is None:
            async for _ in self:
                pass
        assert self._response is not None
        return self._response

    async def aclose(self) -> None:
        """Stop reading: the provider's stream is closed and the call ends."""
        if self._finished:
            return
        self.sink.close()
        self._finished = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StreamClosed):
            await self._task

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if hasattr(self, "_task") and not self._finished:
            self.sink.close()
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._task.cancel)
