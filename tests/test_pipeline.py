import asyncio
import threading

import pytest

from myopto import ConfigError, Middleware, Pipeline, Request, Response, as_middleware
from myopto.testing import EchoBackend


def request(text="hi"):
    return Request(model="m", messages=[{"role": "user", "content": text}])


def tagger(label, log):
    def middleware(request, call_next):
        log.append(f"{label}>")
        response = call_next(request.replace(metadata={**request.metadata, label: True}))
        log.append(f"<{label}")
        return response.replace(text=response.text + f"|{label}")

    middleware.__name__ = label
    return middleware


def test_middleware_run_in_list_order_down_and_reverse_order_up():
    log = []
    backend = EchoBackend()
    pipeline = Pipeline(backend, [tagger("a", log), tagger("b", log)])
    response = pipeline(request())
    assert log == ["a>", "b>", "<b", "<a"]
    assert response.text == "echo: hi|b|a"
    assert dict(backend.requests[0].metadata) == {"a": True, "b": True}


async def test_a_plain_sync_function_also_serves_async_calls():
    log = []
    backend = EchoBackend()
    pipeline = Pipeline(backend, [tagger("a", log)])
    response = await pipeline.acall(request())
    assert response.text == "echo: hi|a"
    assert log == ["a>", "<a"]


def test_an_async_function_middleware_also_serves_sync_calls():
    seen = []

    async def shout(request, call_next):
        seen.append(threading.current_thread().name)
        response = await call_next(request)
        return response.replace(text=response.text.upper())

    pipeline = Pipeline(EchoBackend(), [shout])
    assert pipeline(request()).text == "ECHO: HI"
    assert asyncio.run(pipeline.acall(request())).text == "ECHO: HI"
    assert len(seen) == 2


def test_sync_call_with_async_middleware_works_inside_a_running_loop():
    async def upper(request, call_next):
        return (await call_next(request)).replace(text="UP")

    pipeline = Pipeline(EchoBackend(), [upper])

    async def main():
        return pipeline(request())  # a sync call made from async code

    assert asyncio.run(main()).text == "UP"


class CountingHooks(Middleware):
    name = "counting"

    def __init__(self):
        self.requests = 0
        self.responses = 0

    def process_request(self, request):
        self.requests += 1
        return request.replace(model="rewritten")

    def process_response(self, request, response):
        self.responses += 1
        return response.replace(text=f"{response.text} via {request.model}")


async def test_hook_middleware_serves_sync_and_async_with_the_same_code():
    hooks = CountingHooks()
    pipeline = Pipeline(EchoBackend(), [hooks])
    assert pipeline(request()).text == "echo: hi via rewritten"
    assert (await pipeline.acall(request())).text == "echo: hi via rewritten"
    assert (hooks.requests, hooks.responses) == (2, 2)


class SyncWrapper(Middleware):
    """Wraps the call (overrides __call__ only); async calls must still go through it."""

    name = "wrapper"

    def __init__(self):
        self.calls = 0

    def __call__(self, request, call_next):
        self.calls += 1
        return call_next(request).replace(text="wrapped")


async def test_wrapping_middleware_without_async_twin_runs_on_async_calls():
    wrapper = SyncWrapper()
    pipeline = Pipeline(EchoBackend(), [wrapper])
    assert (await pipeline.acall(request())).text == "wrapped"
    assert wrapper.calls == 1


def test_insert_remove_replace_by_name_return_new_pipelines():
    log = []
    base = Pipeline(EchoBackend(), [tagger("a", log), tagger("c", log)])
    inserted = base.insert(tagger("b", log), after="a")
    assert inserted.names == ["a", "b", "c"]
    assert base.names == ["a", "c"]
    assert inserted.insert(tagger("z", log), before="a").names == ["z", "a", "b", "c"]
    assert inserted.insert(tagger("y", log), index=1).names == ["a", "y", "b", "c"]
    assert inserted.remove("b").names == ["a", "c"]
    replaced = inserted.replace("b", tagger("x", log))
    assert replaced.names == ["a", "x", "c"]
    assert replaced(request()).text == "echo: hi|c|x|a"


def test_describe_lists_each_layer_and_the_backend():
    pipeline = Pipeline(EchoBackend(), [tagger("a", []), CountingHooks()])
    lines = pipeline.describe().splitlines()
    assert lines[0] == "1. a"
    assert lines[1] == "2. counting"
    assert lines[2].startswith("3. backend: Echo")


def test_unknown_names_and_duplicate_names_are_config_errors():
    pipeline = Pipeline(EchoBackend(), [tagger("a", [])])
    with pytest.raises(ConfigError, match="no middleware named 'nope'"):
        pipeline.remove("nope")
    with pytest.raises(ConfigError, match="two middleware are named"):
        pipeline.insert(tagger("a", []))
    with pytest.raises(ConfigError, match="at most one"):
        pipeline.insert(tagger("b", []), before="a", after="a")


def test_a_callable_with_the_wrong_signature_is_rejected_early():
    with pytest.raises(ConfigError, match="exactly two"):
        as_middleware(lambda request: request)
    with pytest.raises(ConfigError, match="must be callable"):
        as_middleware("not a function")


def test_errors_propagate_through_the_chain_unchanged():
    class Boom(Exception):
        pass

    def failing(request, call_next):
        raise Boom("from middleware")

    with pytest.raises(Boom):
        Pipeline(EchoBackend(), [failing])(request())


def test_a_middleware_can_answer_without_calling_the_backend():
    backend = EchoBackend()

    def short_circuit(request, call_next):
        return Response(text="from middleware", model=request.model)

    assert Pipeline(backend, [short_circuit])(request()).text == "from middleware"
    assert backend.requests == []
