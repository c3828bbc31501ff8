"""One role, several deployments: fallbacks, cooldowns, context windows, refusals raised at once,
streams, async calls, the cache key and replay, what logs and spans say, and no key anywhere.

Every deployment is a real server on loopback (our test server, or a small one with a context
window of its own) reached through the real `openai` client. A server "killed" mid-run sits
behind `Switch`, a port of its own that refuses connections while off and comes back at the
same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler

import pytest
from testkit import LoopbackHTTP, send_json

import myopto
from myopto import (
    AuthenticationFailed,
    BadRequest,
    BudgetExceeded,
    ConfigError,
    clear_role_config,
    configure_logging,
    get_llm,
    set_role_config,
)
from myopto.cli import roles_report
from myopto.cooldowns import LOCAL
from myopto.errors import CacheMiss, StreamBroken
from myopto.middleware.deployments import DeploymentsUnavailable
from myopto.parsing import content_text
from myopto.router import ROUTER
from myopto.stores import open_store
from myopto.testing import FakeOpenAIServer
from myopto.testing.answers import as_answer, chat_completion, count_tokens


@pytest.fixture(autouse=True)
def no_cooldowns():
    """Each test starts with no deployment resting (the session's server is shared)."""
    LOCAL.reset()
    yield
    LOCAL.reset()


def deployment(server_or_url, name: str, **options):
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    return {"name": name, "backend": "CustomLLM", "model": f"model-{name}", "base_url": url, **options}


class Switch:
    """A port of its own that forwards to `target_port` while on; off, it refuses connections (its
    listening socket is closed and every forwarded connection cut): a server taken down and
    brought back at the same address."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.on()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def on(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def off(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread in accept()
            listener.close()
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                if self._listener is not listener:  # switched off meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def fallback_events(exporter, deployment_name: str) -> list:
    return [
        event
        for span in exporter.get_finished_spans()
        for event in span.events
        if event.name == "myopto.fallback" and event.attributes.get("myopto.deployment") == deployment_name
    ]


# -- the run that outlives a dead server -------------------------------------------------------


def test_two_deployments_with_one_killed_mid_run_answer_200_calls_and_the_dead_one_rests(_exporter):
    cooldown, allowed_fails = 0.15, 2
    with FakeOpenAIServer(latency=0.004) as healthy, FakeOpenAIServer() as doomed:
        switch = Switch(doomed.port)
        set_role_config(
            "fleet",
            deployments=[deployment(healthy, "healthy"), deployment(switch.url, "doomed")],
            routing="weighted",
            allowed_fails=allowed_fails,
            cooldown=cooldown,
            retries=1,  # each deployment retries once: two attempts a call, then the next deployment
            retry_backoff=0.001,
            cache="off",
        )
        llm = get_llm("fleet")
        _exporter.clear()
        answered, failures, began = [], [], {}
        for index in range(200):
            if index == 40:  # taken down: connection refused
                switch.off()
                began["refused"] = time.time()
            if index == 110:  # back at the same address, failing every request
                doomed.chaos(1.0, faults=("500", "503"))
                switch.on()
                began["storm"] = time.time()
            if index == 170:  # healthy again
                doomed.chaos(0)
                began["healthy"] = time.time()
            try:
                answered.append(llm(f"call {index}").deployment)
            except myopto.MyoptoError as error:
                failures.append(error)
        switch.off()
        tries = [request.time for request in doomed.requests]
    assert failures == []
    assert len(answered) == 200
    assert set(answered[:40]) == {"healthy", "doomed"}  # spread over both while both were up
    assert set(answered[40:170]) == {"healthy"}  # nothing was lost while one was down or failing
    assert "doomed" in answered[170:]  # and it took calls again once it was back
    # refused: no server sees a refused connection, but each fallback's event on the call's span
    # says how many attempts it cost; at most `allowed_fails` per cooldown
    refused = [
        event.attributes["myopto.attempts"]
        for event in fallback_events(_exporter, "doomed")
        if began["refused"] * 1e9 <= event.timestamp < began["storm"] * 1e9
    ]
    assert refused and set(refused) == {allowed_fails}  # each time: its retry, then it rested
    assert len(refused) <= (began["storm"] - began["refused"]) / cooldown + 1
    # the 5xx storm: the server saw each try; any `allowed_fails + 1` of them span a cooldown
    storm = sorted(time for time in tries if began["storm"] <= time < began["healthy"])
    assert len(storm) >= 2 * allowed_fails  # tried again after a cooldown, and again
    spans = [storm[i + allowed_fails] - storm[i] for i in range(len(storm) - allowed_fails)]
    assert min(spans) >= cooldown - 0.005


def test_a_401_from_one_deployment_is_raised_not_hidden_by_a_fallback():
    with FakeOpenAIServer(api_key="sk-the-right-key") as refusing, FakeOpenAIServer() as other:
        set_role_config(
            "keys",
            deployments=[
                deployment(refusing, "refusing", api_key="sk-the-wrong-key"),
                deployment(other, "other"),
            ],
            routing="fallback-order",
            retries=0,
            cache="off",
        )
        with pytest.raises(AuthenticationFailed) as refused:
            get_llm("keys")("hello")
        assert refused.value.deployment == "refusing"
        assert other.request_count == 0
        refusing.fail(400, message="unknown parameter 'frobnicate'")  # a bad request, not a context window
        set_role_config("keys", deployments=[deployment(refusing, "refusing", api_key="sk-the-right-key")])
        with pytest.raises(BadRequest):
            get_llm("keys")("hello")
        assert other.request_count == 0


def test_a_budget_spent_is_raised_at_once_and_sends_nothing():
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        set_role_config(
            "budgeted",
            deployments=[deployment(first, "first"), deployment(second, "second")],
            pricing={"input": 0.0, "output": 5000.0},  # "echo: hi" is 2 tokens: $0.01 a call
            max_cost_usd=0.02,
            cache="off",
        )
        llm = get_llm("budgeted")
        llm("hi")
        llm("hi")
        with pytest.raises(BudgetExceeded):
            llm("hi")
        assert first.request_count + second.request_count == 2  # the budget is the role's, over both


def test_a_429_rests_only_that_deployment_and_the_calls_go_on_elsewhere():
    with FakeOpenAIServer() as limited, FakeOpenAIServer() as other:
        set_role_config(
            "limited",
            deployments=[deployment(limited, "limited"), deployment(other, "other")],
            routing="fallback-order",
            retries=3,
            cache="off",
        )
        llm = get_llm("limited")
        assert llm("first").deployment == "limited"
        limited.fail(429, retry_after=30)
        answered = [llm(f"next {i}").deployment for i in range(5)]
        assert answered == ["other"] * 5  # moved on at once, not after 30 s of waiting
        assert limited.request_count == 2  # the 429 was not retried there, and nothing followed it
        assert (
            0
            < ROUTER.chain("limited")[1]
            .backend.deployments[0]
            .pipeline.middleware[-1]
            .limiter.paused_for("model-limited", limited.url)
            <= 30
        )  # its own limits hold its model back too; the other deployment's do not


# -- context windows ----------------------------------------------------------------------------


def small_model(window: int) -> LoopbackHTTP:
    """An OpenAI-compatible server whose model has a context window of `window` tokens (words),
    refusing a longer prompt as OpenAI does (400, `context_length_exceeded`)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        requests = 0

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            Handler.requests += 1
            tokens = sum(count_tokens(content_text(message["content"])) for message in body["messages"])
            if tokens <= window:
                send_json(self, json.dumps(chat_completion(body, [as_answer(None, body)])).encode())
                return
            error = {
                "message": f"This model's maximum context length is {window} tokens. However, your messages "
                f"resulted in {tokens} tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
            data = json.dumps({"error": error}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = LoopbackHTTP(Handler)
    server.handler = Handler
    return server


@pytest.mark.parametrize("told_by", ["context_window_fallbacks", "context_window"])
def test_a_prompt_over_the_first_deployments_context_window_is_answered_by_the_larger_one(told_by):
    small = small_model(window=20)
    try:
        with FakeOpenAIServer() as large, FakeOpenAIServer() as same_size:
            url = f"http://127.0.0.1:{small.port}/v1"
            if told_by == "context_window_fallbacks":
                deployments = [deployment(url, "small"), deployment(same_size, "same"), deployment(large, "large")]
                options = {"context_window_fallbacks": {"small": ["large"]}}
            else:
                deployments = [
                    deployment(url, "small", context_window=20),
                    deployment(same_size, "same", context_window=20),
                    deployment(large, "large", context_window=100_000),
                ]
                options = {}
            set_role_config(
                "long", deployments=deployments, routing="fallback-order", retries=2, cache="off", **options
            )
            llm = get_llm("long")
            assert llm("a short prompt").deployment == "small"
            long_prompt = " ".join(["word"] * 50)
            response = llm(long_prompt)
            assert response.deployment == "large"
            assert response.text == f"echo: {long_prompt}"
            assert same_size.request_count == 0  # a window no larger is no help
            assert small.handler.requests == 2  # the refusal was not retried there
    finally:
        small.close()


def test_a_prompt_over_every_context_window_is_refused_with_the_providers_words():
    small = small_model(window=5)
    try:
        with FakeOpenAIServer() as other:
            set_role_config(
                "long",
                deployments=[deployment(f"http://127.0.0.1:{small.port}/v1", "small"), deployment(other, "other")],
                routing="fallback-order",
                cache="off",
            )
            with pytest.raises(BadRequest, match="maximum context length is 5 tokens"):
                get_llm("long")("one two three four five six seven")
            assert other.request_count == 0  # nothing says it is larger
    finally:
        small.close()


# -- when every deployment rests ----------------------------------------------------------------


def test_when_every_deployment_rests_the_call_fails_clearly_or_waits_for_the_first_back(tmp_path):
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        common = {"routing": "fallback-order", "allowed_fails": 1, "retries": 0, "cache": "off"}
        set_role_config(
            "resting",
            deployments=[deployment(first, "first"), deployment(second, "second")],
            cooldown=3.0,  # long enough that a loaded machine does not see a rest end between two calls
            when_all_cooling="fail",
            **common,
        )
        llm = get_llm("resting")
        first.fail(503)
        second.fail(503)
        with pytest.raises(DeploymentsUnavailable) as every_one_failed:
            llm("both fail")
        message = str(every_one_failed.value)
        assert "no deployment answered" in message and "first: DeploymentCoolingDown" in message
        assert "second: DeploymentCoolingDown" in message
        sent = first.request_count + second.request_count
        with pytest.raises(DeploymentsUnavailable) as resting:
            llm("while they rest")
        assert "every deployment is cooling down" in str(resting.value)
        assert "when_all_cooling='fail'" in str(resting.value)
        assert 0 < resting.value.retry_after <= 3.0
        assert first.request_count + second.request_count == sent  # nothing was sent
        set_role_config("resting", when_all_cooling="wait")
        response = get_llm("resting")("after the rest")  # waits for the first back, then answers
        assert response.deployment == "first"
        first.fail(503)
        second.fail(503)
        with pytest.raises(DeploymentsUnavailable):
            llm("both fail again")
        with pytest.raises(DeploymentsUnavailable, match="after the call's deadline"):
            llm("no time to wait", deadline=0.1)  # a rest longer than the call may take is not waited out


# -- streams and async calls --------------------------------------------------------------------


def test_a_stream_falls_back_before_its_first_chunk_and_never_after():
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        set_role_config(
            "streamed",
            deployments=[deployment(first, "first"), deployment(second, "second")],
            routing="fallback-order",
            retries=0,
            cache="off",
        )
        llm = get_llm("streamed")
        first.fail(503)  # refused before any chunk: the next deployment streams the answer
        stream = llm.stream("tell me a story")
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "echo: tell me a story"
        assert stream.response.deployment == "second"
        first.break_stream(after=2)  # broken after two chunks reached the caller
        stream = llm.stream("tell me another story")
        with pytest.raises(StreamBroken):
            for _ in stream:
                pass
        assert second.request_count == 1  # no other deployment finished what the caller had begun


def test_async_calls_and_streams_fall_back_and_say_which_deployment_answered():
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        set_role_config(
            "async",
            deployments=[deployment(first, "first"), deployment(second, "second")],
            routing="fallback-order",
            retries=0,
            allowed_fails=1,
            cache="off",
        )
        first.fail(500)

        async def calls():
            llm = get_llm("async")
            return [await llm.acall(f"question {i}") for i in range(3)]

        responses = asyncio.run(calls())
        assert [r.deployment for r in responses] == ["second"] * 3  # the first rests after its failure
        assert first.request_count == 1

        async def streamed():
            stream = get_llm("async").astream("stream it")
            chunks = [chunk async for chunk in stream]
            return chunks, await stream.get_final_response()

        chunks, response = asyncio.run(streamed())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream it"
        assert response.deployment == "second" and second.last_request.body["stream"] is True


# -- the cache ----------------------------------------------------------------------------------


def test_the_cache_key_is_the_roles_request_and_replay_needs_no_deployment(tmp_path):
    cache_dir = str(tmp_path / "cache")
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        set_role_config(
            "cached",
            deployments=[deployment(first, "first"), deployment(second, "second")],
            routing="fallback-order",
            retries=0,
            cache="on",
            cache_dir=cache_dir,
        )
        first.fail(503)
        answered = get_llm("cached")("what is 2+2?")
        assert answered.deployment == "second" and not answered.cached
        hit = get_llm("cached")("what is 2+2?")  # the first is up again: the cache answers all the same
        assert hit.cached and hit.deployment == "second" and hit.text == answered.text
        (record,) = [value for _, value in open_store(cache_dir).items()]
        assert record["response"]["deployment"] == "second"
        assert record["request"]["backend"] == "deployments"
        # listing the deployments the other way round keys the same
        set_role_config("cached", deployments=[deployment(second, "second"), deployment(first, "first")])
        assert get_llm("cached")("what is 2+2?").cached
    # every deployment gone: replay answers from the cache and says who answered first
    replayed = get_llm("cached", cache="replay")("what is 2+2?")
    assert replayed.cached and replayed.deployment == "second" and replayed.text == answered.text
    with pytest.raises(CacheMiss):
        get_llm("cached", cache="replay")("never asked")


def test_with_the_deployment_in_the_key_each_deployment_keys_as_a_role_of_its_own(tmp_path):
    cache_dir = str(tmp_path / "cache")
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        set_role_config(
            "keyed",
            deployments=[deployment(first, "first"), deployment(second, "second")],
            routing="fallback-order",
            deployment_in_key=True,
            retries=0,
            cache="on",
            cache_dir=cache_dir,
        )
        first.fail(503)
        assert get_llm("keyed")("hello").deployment == "second"
        assert get_llm("keyed")("hello").deployment == "first"  # the first's key had no answer
        set_role_config("single", backend="CustomLLM", model="model-second", base_url=second.url, cache_dir=cache_dir)
        single = get_llm("single", cache="on")("hello")
        assert single.cached  # the same key as a role of that one model
        records = [value for _, value in open_store(cache_dir).items()]
        assert sorted(record["request"]["model"] for record in records) == ["model-first", "model-second"]
    # replay looks in each deployment's keys, and finds the answer under one of them
    assert get_llm("keyed", cache="replay")("hello").cached
    with pytest.raises(CacheMiss):
        get_llm("keyed", cache="replay")("never asked")


# -- what the logs, spans and `myopto roles` say, and no key anywhere ---------------------------


def test_logs_spans_and_roles_say_which_deployment_answered_and_never_show_a_key(tmp_path, _exporter, caplog):
    marker = f"sk-MARKER-{uuid.uuid4().hex}"
    log = tmp_path / "calls.jsonl"
    with FakeOpenAIServer() as first, FakeOpenAIServer(api_key=marker) as second:
        set_role_config(
            "secret",
            deployments=[
                deployment(first, "first", api_key=f"{marker}-first"),
                deployment(second, "second", api_key=marker, extra_headers={"X-Api-Key": marker}),
            ],
            routing="fallback-order",
            retries=0,
            cache="on",
            cache_dir=str(tmp_path / "cache"),
        )
        configure_logging(log, messages=True)
        _exporter.clear()
        raised = []
        try:
            with caplog.at_level("DEBUG", logger="myopto"):
                first.fail(503, message=f"upstream refused {marker}")
                assert get_llm("secret")("hello").deployment == "second"
                second.fail(401, message=f"Incorrect API key provided: {marker}")
                first.fail(503, message=f"upstream refused {marker}")
                with pytest.raises(AuthenticationFailed) as refused:
                    get_llm("secret")("refused")
                raised.append(refused.value)
        finally:
            configure_logging()
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert [line.get("deployment") for line in lines] == ["second", "second"]
        spans = [span for span in _exporter.get_finished_spans() if span.name.startswith("chat ")]
        assert [span.attributes.get("myopto.deployment") for span in spans] == ["second", "second"]
        assert [event.attributes["myopto.deployment"] for event in spans[0].events] == ["first"]
        resolved, pipeline = ROUTER.chain("secret")
        places = {
            "log": log.read_text(),
            "spans": "\n".join(
                json.dumps([dict(s.attributes), [(e.name, dict(e.attributes)) for e in s.events], s.status.description])
                for s in _exporter.get_finished_spans()
            ),
            "exceptions": "\n".join(f"{e}\n{e!r}\n{e.__cause__}" for e in raised),
            "role_config": repr(ROUTER.config("secret")),
            "roles": "\n".join([roles_report(["secret"]), repr(resolved), repr(pipeline), pipeline.describe()]),
            "cache": json.dumps(list(open_store(str(tmp_path / "cache")).items()), default=str),
            "loggers": "\n".join(record.getMessage() for record in caplog.records),
        }
    assert "deployments:" in places["roles"] and "second: CustomLLM model-second" in places["roles"]
    for place, text in places.items():
        assert marker not in text, f"the key leaked into {place}"


# -- bad input ----------------------------------------------------------------------------------

GOOD = [{"model": "a", "base_url": "http://127.0.0.1:1/v1"}, {"model": "b", "base_url": "http://127.0.0.1:2/v1"}]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"deployments": []}, "deployments is empty"),
        ({"deployments": {"model": "a"}}, "must be a list of dicts"),
        ({"deployments": ["gpt-4o"]}, r"deployments\[0\] must be a dict"),
        ({"deployments": [{"base_url": "http://h/v1"}]}, r"deployments\[0\] needs a model"),
        ({"deployments": GOOD, "routing": "round-robin"}, "routing must be one of 'weighted', 'least-busy'"),
        ({"deployments": GOOD, "fallbacks": {"a": ["b"], "b": ["a"]}}, "fallbacks loop a -> b -> a"),
        ({"deployments": GOOD, "fallbacks": {"a": ["a"]}}, "fallbacks loop a -> a"),
        ({"deployments": GOOD, "fallbacks": {"a": ["c"]}}, "names 'c', which is no deployment"),
        ({"model": "gpt-4o", "fallbacks": ["gpt-4o-mini"]}, "list them all as deployments=.* routing='fallback-order'"),
        ({"deployments": GOOD, "context_window_fallbacks": {"a": ["b"], "b": ["a"]}}, "context_window_fallbacks loop"),
        (
            {"deployments": [{"model": "gpt-4o-mini"}, {"model": "text-embedding-3-small"}], "backend": "LiteLLM"},
            "mix chat models",
        ),
        ({"deployments": [GOOD[0], GOOD[0]]}, "are the same backend, model, endpoint and key"),
        ({"deployments": [{**GOOD[0], "name": "x"}, {**GOOD[1], "name": "x"}]}, "two deployments are named 'x'"),
        ({"deployments": [{**GOOD[0], "temperature": 0.5}, GOOD[1]]}, "generation parameters belong to the role"),
        ({"deployments": [{**GOOD[0], "weight": -1}, GOOD[1]]}, "weight must be a finite number >= 0"),
        ({"deployments": [{**GOOD[0], "weight": 0}, {**GOOD[1], "weight": 0}]}, "every deployment has weight 0"),
        ({"deployments": [{**GOOD[0], "base_url": "localhost:8000"}, GOOD[1]]}, "deployment 'a': base_url must"),
        ({"deployments": [{**GOOD[0], "device": "cuda"}, GOOD[1]]}, "deployment 'a': backend CustomLLM does not take"),
        ({"deployments": GOOD, "allowed_fails": 0}, "allowed_fails must be a whole number >= 1"),
        ({"deployments": GOOD, "cooldown": float("nan")}, "cooldown must be a number of seconds"),
        ({"deployments": GOOD, "when_all_cooling": "retry"}, "when_all_cooling must be 'wait'"),
        ({"routing": "weighted"}, "sets routing but has no deployments"),
        (
            {
                "deployments": [{**GOOD[0], "context_window": 8000}, {**GOOD[1], "context_window": 4000}],
                "context_window_fallbacks": {"a": ["b"]},
            },
            "whose context window \\(4000 tokens\\) is no larger",
        ),
    ],
)
def test_bad_deployment_settings_are_refused_when_set_saying_what_to_fix(options, says):
    options = dict(options)
    backend, model = options.pop("backend", "CustomLLM"), options.pop("model", None)
    with pytest.raises(ConfigError, match=says):
        set_role_config("bad", backend=backend, model=model, **options)
    assert "bad" not in ROUTER.roles()  # nothing was stored


def test_a_role_with_one_model_is_configured_and_keyed_as_before(server):
    set_role_config("plain", backend="CustomLLM", model="m", base_url=server.url, cache="off")
    llm = get_llm("plain")
    request = llm.request("hello")
    assert (request.backend, request.model, request.endpoint) == ("CustomLLM", "m", server.url)
    response = llm("hello")
    assert response.deployment is None and "deployment" not in response.to_dict()
    assert ROUTER.resolve("plain").deployments == ()
    clear_role_config("plain")


def test_a_call_may_pick_deployments_by_name_or_model():
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        set_role_config("picked", deployments=[deployment(first, "first"), deployment(second, "second")], cache="off")
        llm = get_llm("picked")
        assert {llm("hi", model="second").deployment for _ in range(4)} == {"second"}
        assert {llm("hi", model="model-first").deployment for _ in range(4)} == {"first"}
        with pytest.raises(myopto.InvalidRequest, match="no deployment named or serving 'third'"):
            llm("hi", model="third")
        assert first.request_count == second.request_count == 4


def test_the_deployment_that_answered_is_data_of_the_answer_and_checked_when_read_back():
    from myopto.response import Response

    answer = Response(text="hi", model="m", deployment="second")
    assert answer.to_dict()["deployment"] == "second"
    assert Response.from_dict(answer.to_dict()) == answer
    assert "deployment" not in Response(text="hi").to_dict()  # a role with one model stores what it always did
    with pytest.raises(ValueError, match="not a deployment's name"):
        Response.from_dict({**answer.to_dict(), "deployment": 3})  # a damaged record
