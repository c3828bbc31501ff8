"""Tracing: exact GenAI attributes on spans, caught by the OpenTelemetry SDK's in-memory exporter;
retries as events, errors as ERROR, messages only when asked, nesting under the caller's span in
threads and asyncio tasks; off and import-free without a provider."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import myopto
from myopto import BadRequest, get_llm, set_role_config

KEY = "sk-tracing-secret-0123456789"


@pytest.fixture
def spans(_exporter, server):
    _exporter.clear()
    set_role_config(
        "executor",
        backend="CustomLLM",
        model="test-model",
        base_url=server.url,
        api_key=KEY,
        retries=2,
        retry_backoff=0.001,
    )
    return _exporter


def chat_spans(exporter):
    return [span for span in exporter.get_finished_spans() if span.name.startswith("chat ")]


def test_a_call_is_one_client_span_with_the_genai_attributes(spans, server):
    with myopto.run("exp-7", lr=0.1):
        response = get_llm()("hello there", temperature=0.2, max_tokens=50, top_p=0.9, seed=7)
    (span,) = chat_spans(spans)
    assert span.name == "chat test-model" and span.kind is SpanKind.CLIENT
    attributes = dict(span.attributes)
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "127.0.0.1",
        "gen_ai.request.model": "test-model",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.seed": 7,
        "gen_ai.response.model": "test-model",
        "gen_ai.response.id": response.id,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 2,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "myopto.role": "executor",
        "myopto.backend": "CustomLLM",
        "myopto.request_key": get_llm()
        .request("hello there", temperature=0.2, max_tokens=50, top_p=0.9, seed=7)
        .fingerprint(),
        "myopto.run": "exp-7",
        "myopto.run.tags.lr": 0.1,
        "myopto.choices": 1,
        "myopto.cached": False,
        "myopto.attempts": 1,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert KEY not in json.dumps(attributes)


def test_a_cached_answer_and_a_known_price_show_on_the_span(spans, server, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    set_role_config("executor", model="gpt-4o-mini")
    get_llm()("once")
    get_llm()("once")
    first, second = chat_spans(spans)
    assert first.attributes["myopto.cached"] is False and first.attributes["myopto.cost_usd"] > 0
    assert second.attributes["myopto.cached"] is True
    assert server.request_count == 1


def test_each_retried_attempt_is_an_event_with_its_status_and_wait(spans, server):
    server.fail(429, retry_after=0.05)
    server.fail(503)
    get_llm()("try again")
    (span,) = chat_spans(spans)
    events = [event for event in span.events if event.name == "myopto.retry"]
    assert [
        (e.attributes["myopto.attempt"], e.attributes["error.type"], e.attributes["http.response.status_code"])
        for e in events
    ] == [(1, "RateLimited", 429), (2, "ServerError", 503)]
    assert events[0].attributes["myopto.retry.wait_s"] == pytest.approx(0.05)
    assert span.attributes["myopto.attempts"] == 3


def test_a_failed_call_is_an_error_span_with_its_type(spans, server):
    server.fail(400, message="unknown parameter")
    with pytest.raises(BadRequest):
        get_llm()("bad")
    (span,) = chat_spans(spans)
    assert span.status.status_code is StatusCode.ERROR and "unknown parameter" in span.status.description
    assert span.attributes["error.type"] == "BadRequest" and span.attributes["http.response.status_code"] == 400
    assert any(event.name == "exception" for event in span.events)


def test_a_failed_call_records_its_exception_with_message_and_stack_trace_masked(spans, server):
    """The SDK's `record_exception` would write the message and the stack trace (the SDK's own
    exception, quoting the refused key, as the cause) in clear: ours masks both."""
    server.fail(401, message=f"Incorrect API key provided: {KEY}")
    with pytest.raises(myopto.AuthenticationFailed):
        get_llm()("refused")
    (span,) = chat_spans(spans)
    (event,) = [event for event in span.events if event.name == "exception"]
    attributes = dict(event.attributes)
    assert set(attributes) == {"exception.type", "exception.message", "exception.stacktrace", "exception.escaped"}
    assert attributes["exception.type"] == "myopto.errors.AuthenticationFailed"
    assert "Incorrect API key provided: ***" in attributes["exception.message"]
    stacktrace = attributes["exception.stacktrace"]
    assert "openai.AuthenticationError" in stacktrace and "Traceback (most recent call last)" in stacktrace
    assert stacktrace.count("Incorrect API key provided: ***") >= 2  # ours and its cause, both masked
    assert "Incorrect API key provided: ***" in span.status.description
    assert KEY not in json.dumps([attributes, span.status.description, dict(span.attributes)])


def test_span_events_mask_the_text_they_carry(spans):
    from myopto.tracing import span_event

    with trace.get_tracer("a user's code").start_as_current_span("step") as step:
        span_event("note", {"detail": f"retrying with {KEY}", "count": 2, "none": None})
    (event,) = next(span for span in spans.get_finished_spans() if span.name == "step").events
    assert step is not None and dict(event.attributes) == {"detail": "retrying with ***", "count": 2}


def test_messages_only_when_asked_and_masked(spans, server, monkeypatch):
    get_llm()(f"my key is {KEY}")
    (quiet,) = chat_spans(spans)
    assert "gen_ai.input.messages" not in quiet.attributes and "gen_ai.output.messages" not in quiet.attributes
    spans.clear()
    monkeypatch.setenv("MYOPTO_LOG_MESSAGES", "1")
    get_llm()([{"role": "system", "content": "be brief"}, {"role": "user", "content": f"my key is {KEY}"}])
    (loud,) = chat_spans(spans)
    sent = json.loads(loud.attributes["gen_ai.input.messages"])
    answer = json.loads(loud.attributes["gen_ai.output.messages"])
    assert sent == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "my key is ***"}]},
    ]
    assert answer == [
        {"role": "assistant", "parts": [{"type": "text", "content": "echo: my key is ***"}], "finish_reason": "stop"}
    ]


def test_calls_nest_under_the_callers_span_in_threads_of_batch(spans):
    tracer = trace.get_tracer("a user's code")
    with myopto.run("batched"), tracer.start_as_current_span("optimizer step") as step:
        get_llm().batch([f"item {i}" for i in range(4)], max_concurrency=4)
    calls = chat_spans(spans)
    assert len(calls) == 4
    assert {span.parent.span_id for span in calls} == {step.get_span_context().span_id}
    assert {span.attributes["myopto.run"] for span in calls} == {"batched"}


def test_async_calls_and_tasks_keep_the_current_span_and_run(spans):
    tracer = trace.get_tracer("a user's code")

    async def main():
        with myopto.run("async-run"), tracer.start_as_current_span("step") as step:
            llm = get_llm()
            await asyncio.gather(*(llm.acall(f"task {i}") for i in range(3)))
            return step.get_span_context().span_id

    parent = asyncio.run(main())
    calls = chat_spans(spans)
    assert len(calls) == 3 and {span.parent.span_id for span in calls} == {parent}
    assert {span.attributes["myopto.run"] for span in calls} == {"async-run"}


def test_the_provider_name_follows_the_backend(spans, server):
    set_role_config("critic", backend="LiteLLM", model="openai/test-model", base_url=server.url, api_key=KEY)
    get_llm("critic")("hi")
    (span,) = chat_spans(spans)
    assert span.attributes["gen_ai.provider.name"] == "openai"
    assert span.attributes["myopto.backend"] == "LiteLLM"


def test_configure_tracing_uses_the_provider_the_host_installed_and_says_so(spans, caplog):
    with caplog.at_level(logging.INFO, logger="myopto.tracing"):
        provider = myopto.configure_tracing(endpoint="http://127.0.0.1:9", headers={"x": "y"})
    assert provider is trace.get_tracer_provider()
    assert "already installed" in caplog.text and "not used" in caplog.text
    assert myopto.flush_tracing() is True


def test_configure_tracing_masks_the_collectors_credentials(spans):
    from myopto.logs import redact

    token, query_key = f"pk-lf-{uuid.uuid4().hex}", f"qk-{uuid.uuid4().hex}"
    myopto.configure_tracing(
        endpoint=f"http://127.0.0.1:9/otlp?api_key={query_key}", headers={"Authorization": f"Basic {token}"}
    )
    assert redact(f"exporting with {token} to ...?api_key={query_key}") == "exporting with *** to ...?api_key=***"


def test_tracing_is_off_and_imports_nothing_without_a_provider():
    code = (
        "import sys, myopto\n"
        "from myopto import Pipeline, Request\n"
        "from myopto.testing import EchoBackend\n"
        "myopto.set_role_config('executor', backend='CustomLLM', model='m', base_url='http://127.0.0.1:9/v1')\n"
        "chain = myopto.get_llm().pipeline\n"
        "request = Request(model='m', messages=[{'role': 'user', 'content': 'x'}])\n"
        "print(Pipeline(EchoBackend(), chain.middleware)(request).text)\n"
        "print('opentelemetry' in sys.modules, chain.middleware[1].describe())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["echo: x", "False tracing (off: no tracer provider)"]


def test_a_bad_myopto_tracing_value_is_refused(server, monkeypatch):
    monkeypatch.setenv("MYOPTO_TRACING", "jaeger")
    with pytest.raises(myopto.ConfigError, match="MYOPTO_TRACING must be 'otlp'"):
        get_llm("executor", backend="CustomLLM", model="m", base_url=server.url)


def test_a_half_imported_opentelemetry_counts_as_off(monkeypatch):
    """Another thread importing OpenTelemetry (redis-py does, lazily) must not fail a call."""
    import types

    from myopto.tracing import active_tracer, span_event

    half = types.ModuleType("opentelemetry.trace")  # in sys.modules, nothing defined yet
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", half)
    assert active_tracer() is None
    span_event("myopto.retry", {"myopto.attempt": 1})  # no error either
