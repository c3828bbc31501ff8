"""Reading a provider's stream (the `openai` SDK's chunks or LiteLLM's) for a streamed call: each
chunk becomes a `myopto.chunks.Chunk`, goes to the caller (`request.sink.push`) as it arrives and
is added up; the end of the stream makes the `Response` a plain call gives, with the chunks kept.

Shared by CustomLLM and LiteLLM (`read_stream`, `aread_stream`). A caller that stops reading has
the provider's stream closed at once: on the sync side `sink.on_close` shuts the connection's
socket down from the caller's thread (a read blocked on it wakes), on the async side the task is
cancelled; a `StreamClosed` from the sink at the next chunk closes it too. Nothing is returned
then, so nothing is cached.

A failure before the first chunk is the SDK's error mapped as for a plain call (`sdk_errors`), so
it is retried as usual; after it, a `StreamBroken` (not retried) carrying the text streamed so
far, with the mapped error as its `__cause__`. A provider whose stream carries no usage
(`stream_options.include_usage` unsupported; LiteLLM counts it itself) leaves the call's tokens
at 0 and its cost unknown, and that is logged once per endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from myopto.chunks import Assembler, Chunk, ChunkChoice, Delta, FunctionDelta, ToolCallDelta
from myopto.errors import BackendError, MalformedResponse, StreamBroken, StreamClosed
from myopto.parsing import content_text
from myopto.request import Request
from myopto.response import Response, Usage, new_response_id

from .completion import logprobs_of, read_field, usage_of
from .sdk_errors import sdk_failure

_log = logging.getLogger("myopto.backends")
_warned: set[str] = set()  # endpoints whose streams were found to carry no usage

Price = Callable[[Usage], "float | None"]


def chunk_of(raw: Any, backend: str, request: Request) -> Chunk:
    """The `Chunk` for one chunk of a provider's stream (an SDK object or plain JSON)."""
    try:
        usage = read_field(raw, "usage")
        created = read_field(raw, "created")
        return Chunk(
            choices=tuple(
                _choice(choice, position) for position, choice in enumerate(read_field(raw, "choices") or ())
            ),
            usage=usage_of(usage, backend, request) if usage is not None else None,
            id=read_field(raw, "id") or "",
            model=read_field(raw, "model") or "",
            created=created if type(created) is int else 0,
        )
    except (TypeError, ValueError) as error:
        raise MalformedResponse(
            f"{backend} streamed a chunk that cannot be read: {error}",
            retryable=True,
            role=request.role,
            model=request.model,
        ) from None


def _choice(choice: Any, position: int) -> ChunkChoice:
    index = read_field(choice, "index")
    delta = read_field(choice, "delta")
    return ChunkChoice(
        delta=_delta(delta) if delta is not None else Delta(),
        index=index if type(index) is int and index >= 0 else position,
        finish_reason=read_field(choice, "finish_reason"),
        logprobs=logprobs_of(read_field(choice, "logprobs")),
    )


def _delta(delta: Any) -> Delta:
    content = read_field(delta, "content")
    if isinstance(content, list):  # content parts, as some OpenAI-compatible servers send
        content = content_text(content)
    reasoning = read_field(delta, "reasoning_content")
    if reasoning is None:  # vLLM and OpenRouter name it `reasoning`
        reasoning = read_field(delta, "reasoning")
    calls = read_field(delta, "tool_calls")
    return Delta(
        role=read_field(delta, "role"),
        content=content,
        reasoning_content=reasoning if isinstance(reasoning, str) else None,
        tool_calls=tuple(_call(call, position) for position, call in enumerate(calls)) if calls else None,
    )


def _call(call: Any, position: int) -> ToolCallDelta:
    """A piece of a tool call; a custom tool's (`custom.input`) reads as a function's arguments."""
    index = read_field(call, "index")
    function = read_field(call, "function") or read_field(call, "custom")
    piece = None
    if function is not None:
        arguments = read_field(function, "arguments")
        if arguments is None:
            arguments = read_field(function, "input")
        if arguments is not None and not isinstance(arguments, str):  # an object: as JSON text
            arguments = json.dumps(arguments, ensure_ascii=False)
        piece = FunctionDelta(name=read_field(function, "name"), arguments=arguments)
    return ToolCallDelta(
        index=index if type(index) is int else position,
        id=read_field(call, "id") or None,
        type=read_field(call, "type"),
        function=piece,
    )


class _Reading:
    """One streamed call being read: pushes and adds up the chunks, maps failures, ends in a `Response`."""

    def __init__(self, request: Request, backend: str, endpoint: str | None, start: float, price: Price) -> None:
        self.request = request
        self.sink: Any = request.sink
        self.backend = backend
        self.endpoint = endpoint or backend
        self.start = start
        self.price = price
        self.assembler = Assembler()

    def take(self, raw: Any) -> bool:
        """Push and add up one chunk of the provider's; True for the first."""
        chunk = chunk_of(raw, self.backend, self.request)
        self.sink.push(chunk)  # StreamClosed when the caller stopped reading
        self.assembler.add(chunk)
        return len(self.assembler.chunks) == 1

    def failure(self, error: Exception) -> BaseException | None:
        """What to raise for `error`, raised while streaming; None: our own code's error, raised as it is."""
        request, text = self.request, self.assembler.text
        if self.sink.closed:  # the caller closed the stream (and with it the connection)
            return StreamClosed(text=text)
        mapped = error if isinstance(error, BackendError) else sdk_failure(error, self.backend, request)
        if mapped is None or not self.assembler.chunks:
            return mapped
        broken = StreamBroken(
            f"{self.backend} stream failed after {len(self.assembler.chunks)} chunks: {mapped}",
            text=text,
            status_code=getattr(mapped, "status_code", None),
            role=request.role,
            model=request.model,
        )
        broken.__cause__ = mapped  # and no context: the SDK's exception stays out
        return broken

    def response(self) -> Response:
        request, chunks = self.request, self.assembler.chunks
        if self.sink.closed:
            raise StreamClosed(text=self.assembler.text)
        if not any(chunk.choices for chunk in chunks):
            raise MalformedResponse(
                f"{self.backend} streamed no choices", retryable=True, role=request.role, model=request.model
            )
        usage = self.assembler.usage
        if usage is None and self.endpoint not in _warned:
            _warned.add(self.endpoint)
            _log.warning(
                "%s at %s sent no usage in its stream (stream_options.include_usage unsupported?): "
                "streamed calls there count 0 tokens and an unknown cost",
                self.backend,
                self.endpoint,
            )
        choices = self.assembler.choices()
        first = chunks[0]
        return Response(
            text=choices[0].message.content or "",
            model=first.model or request.model,
            usage=usage if usage is not None else Usage(),
            cost=self.price(usage) if usage is not None else None,
            latency=time.perf_counter() - self.start,
            finish_reason=choices[0].finish_reason,
            id=first.id or new_response_id(),
            created=first.created or int(time.time()),
            choices=choices,
            stream=tuple(chunks),
        )


def read_stream(
    stream: Any, request: Request, backend: str, endpoint: str | None, start: float, price: Price
) -> Response:
    """Read the SDK's sync `stream` for the streamed call `request` (see the module doc)."""
    reading = _Reading(request, backend, endpoint, start, price)
    reading.sink.on_close(lambda: _interrupt(stream))  # the caller's close ends the read at once
    done = False
    try:
        for raw in stream:  # a sync stream's mailbox hands each chunk to a waiting reader at once
            reading.take(raw)
        response = reading.response()
        done = True
        return response
    except StreamClosed:
        raise
    except Exception as error:
        failure = reading.failure(error)
        if failure is None:
            raise
    finally:
        if not done:
            _close(stream)
    # raised here, not in the except block: the SDK's exception is not its context
    raise failure


async def aread_stream(
    stream: Any, request: Request, backend: str, endpoint: str | None, start: float, price: Price
) -> Response:
    """Read the SDK's async `stream` (see the module doc); a cancelled task closes it."""
    reading = _Reading(request, backend, endpoint, start, price)
    done = False
    try:
        async for raw in stream:
            if reading.take(raw):
                await asyncio.sleep(0)  # the caller's task takes its first chunk now (as above)
        response = reading.response()
        done = True
        return response
    except StreamClosed:
        raise
    except Exception as error:
        failure = reading.failure(error)
        if failure is None:
            raise
    finally:
        if not done:
            await _aclose(stream)
    raise failure


def _interrupt(stream: Any) -> None:
    """Stop a read of `stream` blocked in another thread: shut its HTTP connection's socket down,
    which wakes the read (closing the response alone would leave it waiting for the next bytes);
    the reading thread then closes the stream. Not once the response is closed: its connection
    may serve another request by now. A stream whose socket cannot be found is closed."""
    holder = getattr(stream, "completion_stream", None) or stream  # LiteLLM's wrapper holds the SDK's
    response = getattr(holder, "response", None)
    if getattr(response, "is_closed", False):
        return
    extensions = getattr(response, "extensions", None)
    network = extensions.get("network_stream") if isinstance(extensions, dict) else None
    connection = network.get_extra_info("socket") if network is not None else None
    if isinstance(connection, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            connection.shutdown(socket.SHUT_RDWR)
    else:
        _close(stream)


def _close(stream: Any) -> None:
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - closing a connection that already failed leaves nothing to do
        _log.debug("closing a %s failed", type(stream).__name__, exc_info=True)


async def _aclose(stream: Any) -> None:
    try:
        close = getattr(stream, "aclose", None) or stream.close
        result = close()
        if inspect.isawaitable(result):
            await result
    except Exception:  # noqa: BLE001 - closing a connection that already failed leaves nothing to do
        _log.debug("closing a %s failed", type(stream).__name__, exc_info=True)
