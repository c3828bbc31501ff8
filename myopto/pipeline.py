"""Middleware and the `Pipeline` that composes them around a backend.

A middleware is anything callable as `middleware(request, call_next) -> Response`; a plain
function works. Its async twin is `async def acall(request, call_next)`. A middleware written
only for one side still serves the other: a sync one runs in a worker thread during async calls
(its `call_next` hands the rest of the chain back to the event loop), an `async def` one runs on
an event loop of its own during sync calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol, runtime_checkable

from myopto.errors import ConfigError
from myopto.request import Request
from myopto.response import Response

Handler = Callable[[Request], Response]
AsyncHandler = Callable[[Request], Awaitable[Response]]


@runtime_checkable
class Backend(Protocol):
    """The terminal of a chain. See `myopto.backends.base.BaseBackend` for the full contract."""

    kind: str

    def complete(self, request: Request) -> Response: ...

    async def acomplete(self, request: Request) -> Response: ...

    def endpoint_for(self, model: str) -> str | None:
        """Where a call for `model` goes and what the model is: a request's `endpoint`."""
        ...


def _run_coroutine(coroutine: Coroutine[Any, Any, Response]) -> Response:
    """Run a coroutine to completion from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Middleware:
    """Base class for middleware.

    Override `process_request` and/or `process_response` to edit a call on its way down and up:
    both sync and async calls then work with nothing more. Override `__call__` (and `acall`, for
    async calls that should not take a worker thread) to wrap the call itself, as retry does.
    """

    name: str = "middleware"

    def process_request(self, request: Request) -> Request:
        return request

    def process_response(self, request: Request, response: Response) -> Response:
        return response

    def __call__(self, request: Request, call_next: Handler) -> Response:
        request = self.process_request(request)
        return self.process_response(request, call_next(request))

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        if type(self).__call__ is not Middleware.__call__:
            # A wrapping middleware with no async twin: run its sync logic off the loop.
            return await _sync_in_async(self.__call__, request, call_next)
        request = self.process_request(request)
        return self.process_response(request, await call_next(request))

    def describe(self) -> str:
        """One line for `myopto roles`: the name, and the settings that matter."""
        return self.name


async def _sync_in_async(function: Callable[..., Response], request: Request, call_next: AsyncHandler) -> Response:
    loop = asyncio.get_running_loop()

    def blocking_next(next_request: Request) -> Response:
        return asyncio.run_coroutine_threadsafe(_awaited(call_next(next_request)), loop).result()

    return await asyncio.to_thread(function, request, blocking_next)


async def _awaited(awaitable: Awaitable[Response]) -> Response:
    """`awaitable` as a coroutine, which is what `run_coroutine_threadsafe` takes."""
    return await awaitable


class FunctionMiddleware(Middleware):
    """Adapts a plain `fn(request, call_next)` (sync or `async def`) to the middleware interface."""

    def __init__(self, function: Callable[..., Any], name: str | None = None) -> None:
        self.function = function
        own_name: str = getattr(function, "name", "") or getattr(function, "__name__", "middleware")
        self.name = name or own_name
        # an object whose `__call__` is an `async def` is async too
        call = getattr(function, "__call__", None)  # noqa: B004 - reads the method; callability is not the question
        self.is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)

    def __call__(self, request: Request, call_next: Handler) -> Response:
        if not self.is_async:
            response: Response = self.function(request, call_next)
            return response

        async def async_next(next_request: Request) -> Response:
            return await asyncio.to_thread(call_next, next_request)

        return _run_coroutine(self.function(request, async_next))

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        if self.is_async:
            response: Response = await self.function(request, call_next)
            return response
        return await _sync_in_async(self.function, request, call_next)


def as_middleware(candidate: Any, name: str | None = None) -> Middleware:
    """Accept a `Middleware`, or any callable `(request, call_next)`, and return a `Middleware`."""
    if isinstance(candidate, Middleware):
        if name is not None and name != candidate.name:
            return _Renamed(candidate, name)
        return candidate
    if not callable(candidate):
        raise ConfigError(
            f"middleware must be callable as (request, call_next) -> Response, got {type(candidate).__name__}"
        )
    try:
        parameters = inspect.signature(candidate).parameters.values()
    except (TypeError, ValueError):
        parameters = None
    if parameters is not None:
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)
        if not varargs and len(positional) != 2:
            raise ConfigError(
                f"middleware {getattr(candidate, '__name__', candidate)!r} takes {len(positional)} "
                "positional arguments; a middleware takes exactly two: (request, call_next)"
            )
    return FunctionMiddleware(candidate, name)


class _Renamed(Middleware):
    """A middleware registered under another name than its own."""

    def __init__(self, inner: Middleware, name: str) -> None:
        self.inner, self.name = inner, name

    def __call__(self, request: Request, call_next: Handler) -> Response:
        return self.inner(request, call_next)

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        return await self.inner.acall(request, call_next)

    def describe(self) -> str:
        return f"{self.name} ({self.inner.describe()})"


class Pipeline:
    """An ordered list of middleware around a backend, listed in the order a request travels.

    Immutable: `insert`, `remove` and `replace` return a new pipeline, so a chain another thread
    is running never changes under it.
    """

    def __init__(self, backend: Backend, middleware: Iterable[Any] = ()) -> None:
        self.backend = backend
        self.middleware: tuple[Middleware, ...] = tuple(as_middleware(m) for m in middleware)
        names = [m.name for m in self.middleware]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"two middleware are named {duplicates}; give each a distinct name "
                "(as_middleware(fn, name=...) or a `name` attribute)"
            )
        self._handler = self._compose_sync()
        self._async_handler = self._compose_async()

    # -- running -------------------------------------------------------------------------
    def _compose_sync(self) -> Handler:
        handler: Handler = self.backend.complete
        for middleware in reversed(self.middleware):
            handler = _bind_sync(middleware, handler)
        return handler

    def _compose_async(self) -> AsyncHandler:
        handler: AsyncHandler = self.backend.acomplete
        for middleware in reversed(self.middleware):
            handler = _bind_async(middleware, handler)
        return handler

    def __call__(self, request: Request) -> Response:
        return self._handler(request)

    async def acall(self, request: Request) -> Response:
        return await self._async_handler(request)

    # -- editing -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [m.name for m in self.middleware]

    def _index(self, name: str) -> int:
        for index, middleware in enumerate(self.middleware):
            if middleware.name == name:
                return index
        raise ConfigError(f"no middleware named {name!r} in this chain; it has {self.names}")

    def insert(
        self,
        middleware: Any,
        *,
        before: str | None = None,
        after: str | None = None,
        index: int | None = None,
        name: str | None = None,
    ) -> Pipeline:
        """A new pipeline with `middleware` added before/after a named one, at an index, or last."""
        if sum(x is not None for x in (before, after, index)) > 1:
            raise ConfigError("give at most one of before=, after=, index=")
        items = list(self.middleware)
        if before is not None:
            position = self._index(before)
        elif after is not None:
            position = self._index(after) + 1
        elif index is not None:
            position = index
        else:
            position = len(items)
        items.insert(position, as_middleware(middleware, name))
        return Pipeline(self.backend, items)

    def remove(self, name: str) -> Pipeline:
        """A new pipeline without the middleware called `name`."""
        items = list(self.middleware)
        del items[self._index(name)]
        return Pipeline(self.backend, items)

    def replace(self, name: str, middleware: Any) -> Pipeline:
        """A new pipeline with the middleware called `name` swapped for another (keeping its place)."""
        items = list(self.middleware)
        items[self._index(name)] = as_middleware(middleware)
        return Pipeline(self.backend, items)

    def describe(self) -> str:
        """The chain top to bottom, one line a layer, ending at the backend."""
        lines = [f"{position}. {m.describe()}" for position, m in enumerate(self.middleware, 1)]
        describe_backend = getattr(self.backend, "describe", None)
        backend = describe_backend() if callable(describe_backend) else getattr(self.backend, "kind", "backend")
        lines.append(f"{len(lines) + 1}. backend: {backend}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Pipeline({' -> '.join([*self.names, getattr(self.backend, 'kind', 'backend')])})"


def _bind_sync(middleware: Middleware, call_next: Handler) -> Handler:
    def handler(request: Request) -> Response:
        return middleware(request, call_next)

    return handler


def _bind_async(middleware: Middleware, call_next: AsyncHandler) -> AsyncHandler:
    async def handler(request: Request) -> Response:
        return await middleware.acall(request, call_next)

    return handler
