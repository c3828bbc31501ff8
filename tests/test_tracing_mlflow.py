"""A real MLflow tracking server receives myopto's spans over OTLP/HTTP (`/v1/traces`).

A new process (its own OpenTelemetry setup through `configure_tracing`) runs a tagged run: one
call answered, one served from the cache, one retried after a 429, one refused with a 400.
`mlflow.search_traces` then finds them with their model, token usage, run, cached flag, and the
error as ERROR, the key the refusal quoted masked in its status and exception event.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

mlflow = pytest.importorskip("mlflow")

SCRIPT = """
import os, myopto
from myopto import BadRequest, get_llm, set_role_config
myopto.configure_tracing(endpoint=os.environ["MLFLOW_URL"],
                         headers={"x-mlflow-experiment-id": os.environ["EXPERIMENT"]})
set_role_config("executor", backend="CustomLLM", model="test-model", base_url=os.environ["URL"],
                api_key="sk-mlflow-secret-123456", cache="on", cache_dir=os.environ["CACHE"], retries=2,
                retry_backoff=0.01)
with myopto.run("traced-run", lr=0.1):
    get_llm()("retried after 429")  # the server refuses the first attempt
    get_llm()("answered")
    get_llm()("answered")           # from the cache
    try:
        get_llm()("refused")
    except BadRequest:
        pass
assert myopto.flush_tracing()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{directory}/mlflow.db",
            "--default-artifact-root",
            str(directory / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up on {url}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def test_mlflow_receives_a_tagged_run_of_calls_with_usage_cache_and_errors(mlflow_server, server, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.create_experiment(f"myopto-{time.time_ns()}")
    # requests in order: 429 then a clean retry, "answered", (the cache hit sends nothing), a 400
    server.fail(429, retry_after=0.01)
    server.delay(0, times=2)
    server.fail(400, message="unknown parameter for key sk-mlflow-secret-123456")  # a provider quoting the key
    env = {
        **os.environ,
        "MLFLOW_URL": mlflow_server,
        "EXPERIMENT": experiment,
        "URL": server.url,
        "CACHE": str(tmp_path / "cache"),
        "MYOPTO_CACHE": "on",
    }
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert server.request_count == 4

    mlflow.set_tracking_uri(mlflow_server)
    traces = []
    deadline = time.monotonic() + 60
    while len(traces) < 4 and time.monotonic() < deadline:  # the server stores what it received
        traces = mlflow.search_traces(locations=[experiment], return_type="list")
        time.sleep(0.5)
    assert len(traces) == 4
    spans = sorted((trace.data.spans[0] for trace in traces), key=lambda span: span.start_time_ns)
    retried, answered, cached, refused = spans
    for span in spans:
        assert span.name == "chat test-model"
        assert span.attributes["gen_ai.request.model"] == "test-model"
        assert span.attributes["myopto.run"] == "traced-run"
        assert span.attributes["myopto.run.tags.lr"] == 0.1
    assert (
        answered.attributes["gen_ai.usage.input_tokens"] == 1 and answered.attributes["gen_ai.usage.output_tokens"] == 2
    )
    assert answered.attributes["myopto.cached"] is False and cached.attributes["myopto.cached"] is True
    assert retried.attributes["myopto.attempts"] == 2
    assert [event.name for event in retried.events] == ["myopto.retry"]
    assert refused.status.status_code == "ERROR" and refused.attributes["error.type"] == "BadRequest"
    assert answered.status.status_code != "ERROR"
    # MLflow reads the GenAI attributes itself: a chat span with a token usage view
    assert str(answered.span_type) == "CHAT_MODEL"
    usage = answered.attributes.get("mlflow.chat.tokenUsage")
    assert usage is not None and usage["input_tokens"] == 1 and usage["output_tokens"] == 2
    # the refusal quoted the key: masked in the status and in the exception event's message and stack trace
    (exception,) = [event for event in refused.events if event.name == "exception"]
    assert "unknown parameter for key ***" in refused.status.description
    assert "unknown parameter for key ***" in exception.attributes["exception.stacktrace"]
    for span in spans:
        assert "sk-mlflow-secret" not in str(span.to_dict())
