"""See a run as OpenTelemetry spans: one span per call, nested under your own step's span.

With a collector, spans go there over OTLP/HTTP:

    mlflow server --port 5000 &                       # or Phoenix, Langfuse, Jaeger (README "Seeing a run")
    python examples/trace_a_run.py http://127.0.0.1:5000 <mlflow-experiment-id>

With no argument, the spans are kept in memory and printed, to show what a collector receives.
The model is myopto's test server (one call answered, one from the cache, one retried after a
429, one refused), so the example runs anywhere.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile

from opentelemetry import trace

import myopto
from myopto import BadRequest
from myopto.testing import FakeOpenAIServer
from myopto.utils import get_llm, set_role_config


def setup() -> object | None:
    """The exporter to print from, or None when spans go to a collector."""
    if len(sys.argv) > 1:
        headers = {"x-mlflow-experiment-id": sys.argv[2]} if len(sys.argv) > 2 else None
        myopto.configure_tracing(endpoint=sys.argv[1], headers=headers)
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # what a host (MLflow, Phoenix) does; myopto uses it
    return exporter


def main() -> None:
    exporter = setup()
    with FakeOpenAIServer() as server:
        set_role_config(
            "optimizer",
            backend="CustomLLM",
            model="opt-model",
            base_url=server.url,
            api_key="sk-example",
            cache="on",
            cache_dir=tempfile.mkdtemp(prefix="myopto-trace-"),
            retry_backoff=0.01,
        )
        llm = get_llm("optimizer")
        tracer = trace.get_tracer("my optimiser")
        server.fail(429, retry_after=0.01)
        server.delay(0, times=2)
        server.fail(400, message="unknown parameter")
        with myopto.run("trace-demo", lr=0.1), tracer.start_as_current_span("optimizer step 1"):
            llm("Propose a better prompt.")  # retried after a 429
            llm("Summarise the feedback.")  # answered
            llm("Summarise the feedback.")  # from the cache
            with contextlib.suppress(BadRequest):  # refused: the span records the error
                llm("Use a parameter the server refuses.")
    myopto.flush_tracing()
    if exporter is None:
        print(f"spans sent to {sys.argv[1]}")
        return
    for span in sorted(exporter.get_finished_spans(), key=lambda span: span.start_time):
        a = span.attributes
        if not span.name.startswith("chat "):
            print(f"{span.name} (your span)")
            continue
        status = f"ERROR {a['error.type']}" if span.status.status_code.name == "ERROR" else "ok"
        usage = (
            f"tokens {a.get('gen_ai.usage.input_tokens')}/{a.get('gen_ai.usage.output_tokens')}"
            if status == "ok"
            else ""
        )
        retries = len([event for event in span.events if event.name == "myopto.retry"])
        print(
            f"  {span.name}: {status}, cached={a['myopto.cached']}, attempts={a['myopto.attempts']} "
            f"({retries} retry events), {usage} run={a['myopto.run']} provider={a['gen_ai.provider.name']}"
        )


if __name__ == "__main__":
    main()
