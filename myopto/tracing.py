"""OpenTelemetry for myopto: where spans go, and the cheap check that says whether they are wanted.

Tracing is off until a tracer provider exists: the host's own (MLflow, Phoenix, Langfuse and
most tracing setups install one), or the one `configure_tracing()` (or `MYOPTO_TRACING=otlp`)
sets up with the OTLP/HTTP exporter. While it is off, nothing of OpenTelemetry is imported and
a call pays one dictionary lookup. The `tracing` middleware (`myopto.middleware.tracing`) makes
the spans; retry attempts become events on them (`span_event`).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any

from myopto.errors import ConfigError

_log = logging.getLogger("myopto.tracing")
_lock = threading.Lock()
_tracer: tuple[Any, Any] = (None, None)  # (the provider it came from, our tracer or None)
_messages = False
_configured = False


def _is_recording_provider(provider: Any, trace: Any) -> bool:
    """False for the API's placeholders: the proxy handed out before any provider is set, a no-op."""
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def active_tracer() -> Any:
    """myopto's tracer from the current global provider, or None when tracing is off (cheap)."""
    global _tracer
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # nobody imported OpenTelemetry: nobody is collecting spans
        return None
    try:
        provider = trace.get_tracer_provider()
        cached_provider, tracer = _tracer
        if provider is cached_provider:
            return tracer
        recording = _is_recording_provider(provider, trace)
    except AttributeError:  # another thread is importing OpenTelemetry right now: not set up yet
        return None
    from myopto import __version__

    tracer = provider.get_tracer("myopto", __version__) if recording else None
    _tracer = (provider, tracer)
    return tracer


def messages_wanted() -> bool:
    """Whether spans carry messages and answers: `configure_tracing(messages=True)` or
    `MYOPTO_LOG_MESSAGES=1` (the same switch as for the call log)."""
    from myopto.settings import log_settings

    return _messages or log_settings()[1]


def span_event(name: str, attributes: Mapping[str, Any]) -> None:
    """Add an event to the current span, if there is a recording one (retry attempts use this).

    Text values are masked as the call log masks them (an error message may quote a key)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None or active_tracer() is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        from myopto.redaction import redact

        span.add_event(
            name,
            {
                key: redact(value) if isinstance(value, str) else value
                for key, value in attributes.items()
                if value is not None
            },
        )


def _traces_url(endpoint: str | None) -> str | None:
    """An OTLP/HTTP traces URL from a collector's base URL (`/v1/traces` added when missing)."""
    if endpoint is None:
        return None
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def configure_tracing(
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    service_name: str = "myopto",
    messages: bool = False,
) -> Any:
    """Send myopto's spans over OTLP/HTTP, batched; returns the tracer provider in use.

    `endpoint` is the collector's base URL (`http://localhost:5000` for MLflow, `/v1/traces` is
    added) or the full traces URL; with none, the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
    `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_EXPORTER_OTLP_HEADERS` variables apply. `messages=True`
    puts messages and answers on the spans (secrets masked as in the call log). Credentials in
    `headers` and `endpoint` are masked wherever myopto masks keys. When the host
    already installed a tracer provider, myopto's spans go there and nothing is replaced (a
    message on the `myopto.tracing` logger says so). Spans are flushed at exit; `flush_tracing()`
    flushes now.
    """
    global _messages, _configured
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise ConfigError("tracing needs OpenTelemetry: pip install 'myopto[otel]'") from error
    from myopto.redaction import register_secrets_in

    register_secrets_in({"headers": dict(headers or {}), "endpoint": endpoint})  # a collector's token is a key too
    with _lock:
        _messages = bool(messages)
        current = trace.get_tracer_provider()
        if _is_recording_provider(current, trace):
            level = logging.WARNING if (endpoint or headers) and not _configured else logging.INFO
            _log.log(
                level,
                "myopto: spans go to the tracer provider already installed (%s)%s",
                type(current).__name__,
                "; the endpoint and headers given are not used" if (endpoint or headers) and not _configured else "",
            )
            return current
        exporter = OTLPSpanExporter(endpoint=_traces_url(endpoint), headers=dict(headers) if headers else None)
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)  # the SDK shuts it down (flushing) at exit
        _configured = True
        return provider


def flush_tracing(timeout_s: float = 30.0) -> bool:
    """Export every finished span now; True when all were exported in time (or none is pending)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return True
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    return bool(flush(int(timeout_s * 1000))) if flush is not None else True
