"""Call logs: real files written during real calls, read back."""

import json
import threading

import pytest
import structlog

from myopto import BackendError, configure_logging, get_llm, run, set_role_config
from myopto.logs import read_log

FIELDS = {"ts", "event", "run", "role", "backend", "model", "request_key", "latency_s", "status", "cached",
          "attempts", "prompt_tokens", "completion_tokens", "cost", "finish_reason"}


@pytest.fixture
def logged(server, tmp_path):
    path = tmp_path / "calls.jsonl"
    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, api_key="sk-LOGSECRET-999", retries=0)
    configure_logging(path)
    yield server, path
    configure_logging()


def test_one_json_line_per_call_with_the_documented_fields(logged):
    server, path = logged
    with run("exp-1", lr=0.1):
        get_llm()("hello")
        get_llm()("again", cache="off")
    records = read_log(path)
    assert len(records) == 2
    first = records[0]
    assert FIELDS <= set(first)
    assert first["event"] == "llm_call" and first["status"] == "ok"
    assert (first["run"], first["tags"], first["role"], first["backend"], first["model"]) == ("exp-1", {"lr": 0.1}, "executor", "CustomLLM", "gpt-4o-mini")
    assert (first["prompt_tokens"], first["completion_tokens"], first["attempts"]) == (1, 2, 1)
    assert first["cost"] > 0  # gpt-4o-mini is in the price map
    assert "messages" not in first and "answer" not in first


def test_errors_are_logged_with_their_type(logged):
    server, path = logged
    server.fail(400)
    with pytest.raises(BackendError):
        get_llm()("bad")
    record = read_log(path)[-1]
    assert record["status"] == "error" and record["error_type"] == "BadRequest"
    assert "HTTP 400" in record["error"]


def test_messages_and_answers_only_when_asked(logged, tmp_path):
    server, _ = logged
    path = tmp_path / "full.jsonl"
    configure_logging(path, messages=True)
    get_llm()(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    record = read_log(path)[-1]
    assert record["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert record["answer"] == "echo: u"


def test_the_api_key_is_nowhere_in_the_file(logged, tmp_path, monkeypatch):
    server, _ = logged
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ENVSECRET-12345")
    path = tmp_path / "secrets.jsonl"
    configure_logging(path, messages=True)
    get_llm()("my key is sk-LOGSECRET-999 and sk-ENVSECRET-12345", metadata={"api_key": "sk-LOGSECRET-999"})
    server.fail(401, message="bad key sk-LOGSECRET-999")
    with pytest.raises(BackendError):
        get_llm()("x")
    text = path.read_text()
    assert "sk-LOGSECRET-999" not in text and "sk-ENVSECRET-12345" not in text
    assert "***" in text


def test_the_environment_variable_turns_logging_on(server, tmp_path, monkeypatch):
    path = tmp_path / "env.jsonl"
    monkeypatch.setenv("MYOPTO_LOG_FILE", str(path))
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url)
    get_llm()("x")
    assert len(read_log(path)) == 1
    configure_logging(enabled=False)
    get_llm()("y")
    assert len(read_log(path)) == 1
    configure_logging()


def test_cache_hits_are_logged_as_cached(logged, tmp_path):
    server, path = logged
    set_role_config("executor", cache="on", cache_dir=str(tmp_path / "c"))
    get_llm()("same")
    get_llm()("same")
    records = read_log(path)
    assert [r["cached"] for r in records] == [False, True]
    assert records[1]["attempts"] == 0


def test_concurrent_writers_never_interleave_lines(logged):
    server, path = logged

    def work(n):
        for i in range(50):
            get_llm()(f"t{n} {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 400
    assert all(json.loads(line)["status"] == "ok" for line in lines)


def test_the_hosts_structlog_configuration_is_untouched(logged):
    before = structlog.get_config()
    configured = structlog.is_configured()
    get_llm()("x")
    assert structlog.get_config() == before
    assert structlog.is_configured() == configured
