"""Call logs: real files written during real calls, read back; log locations that cannot work
(a path under a regular file, a directory, a read-only mount, a disk that fills, a folder taken
away mid-run) refused before anything is sent, or reported without losing an answer."""

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest
import structlog
from testkit import serve, use_cache

from myopto import BackendError, ConfigError, ServerError, configure_logging, get_llm, run, set_role_config
from myopto.cli import roles_report
from myopto.logs import read_log
from myopto.recording import reset_unrecorded, unrecorded_counts

FIELDS = {
    "ts",
    "event",
    "run",
    "role",
    "backend",
    "model",
    "request_key",
    "latency_s",
    "status",
    "cached",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "finish_reason",
    "choices",
}


@pytest.fixture
def logged(server, tmp_path):
    path = tmp_path / "calls.jsonl"
    serve(server, model="gpt-4o-mini", api_key="sk-LOGSECRET-999", retries=0)
    configure_logging(path)
    yield server, path
    configure_logging()


def test_one_json_line_per_call_with_the_documented_fields(logged):
    _, path = logged
    with run("exp-1", lr=0.1):
        get_llm()("hello")
        get_llm()("again", cache="off")
    records = read_log(path)
    assert len(records) == 2
    first = records[0]
    assert set(first) >= FIELDS
    assert first["event"] == "llm_call" and first["status"] == "ok"
    assert (first["run"], first["tags"], first["role"], first["backend"], first["model"]) == (
        "exp-1",
        {"lr": 0.1},
        "executor",
        "CustomLLM",
        "gpt-4o-mini",
    )
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
    _, _ = logged
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
    _, path = logged
    set_role_config("executor", cache="on", cache_dir=str(tmp_path / "c"))
    get_llm()("same")
    get_llm()("same")
    records = read_log(path)
    assert [r["cached"] for r in records] == [False, True]
    assert records[1]["attempts"] == 0


def test_concurrent_writers_never_interleave_lines(logged):
    _, path = logged

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


# -- log locations that cannot work -------------------------------------------------------------
def test_a_log_path_under_a_regular_file_is_refused_before_anything_is_sent(server, tmp_path, monkeypatch):
    use_cache(server, tmp_path / "cache", api_key=None)
    assert get_llm()("cached").text == "echo: cached"  # in the cache before the log is set
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    bad = tmp_path / "notes.txt" / "calls.jsonl"
    monkeypatch.setenv("MYOPTO_LOG_FILE", str(bad))
    for prompt in ("cached", "new"):  # a cache hit is refused too: the log would miss it
        with pytest.raises(ConfigError) as refused:
            get_llm()(prompt)
        assert str(bad) in str(refused.value) and "MYOPTO_LOG_FILE" in str(refused.value)
    assert server.request_count == 1
    assert "logging (refused: cannot write the call log" in roles_report(["executor"])
    monkeypatch.setenv("MYOPTO_LOG_FILE", str(tmp_path / "calls.jsonl"))  # fixed: calls go on
    assert get_llm()("new").text == "echo: new" and len(read_log(tmp_path / "calls.jsonl")) == 1


def test_a_directory_given_as_the_log_is_refused(server, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=f"cannot write the call log {tmp_path}.*configure_logging"):
        configure_logging(tmp_path)
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url)
    monkeypatch.setenv("MYOPTO_LOG_FILE", str(tmp_path))
    with pytest.raises(ConfigError, match="MYOPTO_LOG_FILE"):
        asyncio.run(get_llm().acall("x"))
    assert server.request_count == 0


def _unshare_works() -> bool:
    try:
        return (
            shutil.which("unshare") is not None
            and subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_mounts = pytest.mark.skipif(
    not _unshare_works(),
    reason="`unshare -rm` (a user and mount namespace) is not "
    "available here, so no read-only mount or small disk can be made",
)

_CHILD_PRELUDE = """
import json, os, subprocess, sys
from myopto import BackendError, ConfigError, get_llm, set_role_config
from myopto.logs import read_log
from myopto.recording import unrecorded_counts
from myopto.testing import FakeOpenAIServer
folder = os.environ["LOG_FOLDER"]
def mount(*arguments):
    subprocess.run(["mount", *arguments], check=True)
server = FakeOpenAIServer().start()
set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, retries=0,
                cache="on", cache_dir=os.environ["CACHE_FOLDER"])
"""


def _in_own_mount_namespace(script: str, tmp_path) -> dict:
    """Run `script` in a child python inside a new user and mount namespace, where it may mount a
    tmpfs or a read-only bind mount over `folder` (the log's); it has a test server of its own
    and prints one JSON object last."""
    folder = tmp_path / "logs"
    folder.mkdir()
    env = {
        **os.environ,
        "LOG_FOLDER": str(folder),
        "CACHE_FOLDER": str(tmp_path / "cache"),
        "MYOPTO_LOG_FILE": str(folder / "calls.jsonl"),
    }
    done = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", _CHILD_PRELUDE + textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_mounts
def test_a_read_only_mount_is_refused_before_anything_is_sent(tmp_path):
    result = _in_own_mount_namespace(
        """
        mount("--bind", "-o", "ro", folder, folder)
        try:
            get_llm()("hello")
            outcome = "answered"
        except ConfigError as error:
            outcome = str(error)
        print(json.dumps({"outcome": outcome, "sent": server.request_count}))
    """,
        tmp_path,
    )
    assert "cannot write the call log" in result["outcome"] and "MYOPTO_LOG_FILE" in result["outcome"]
    assert "Read-only file system" in result["outcome"] and str(tmp_path / "logs" / "calls.jsonl") in result["outcome"]
    assert result["sent"] == 0


@needs_mounts
def test_a_disk_that_fills_or_turns_read_only_mid_run_takes_no_answer_away(tmp_path):
    """A tmpfs of 256 KiB holds the log; it fills up, is freed, then is remounted read-only. Every
    answer reaches its caller, each unwritten line is counted, a failed call keeps its own error,
    and the log reads back whole around the line the full disk tore."""
    result = _in_own_mount_namespace(
        """
        mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", folder)
        os.environ["MYOPTO_LOG_MESSAGES"] = "1"
        big = " word" * 3000  # long lines, so the full disk cuts one in the middle
        answers = [get_llm()("first" + big).text[:11]]
        filler = os.path.join(folder, "filler")
        with open(filler, "wb", buffering=0) as out:
            try:
                while True:
                    out.write(b"x" * 4096)
            except OSError:
                pass
        answers.append(get_llm()("second" + big).text[:12])   # sent and answered; its line cannot be written
        answers.append(get_llm()("first" + big).text[:11])    # a cache hit: the same
        full = unrecorded_counts().get("log", 0)
        server.fail(500)
        try:
            get_llm()("fails")
            failed = None
        except BackendError as error:
            failed = type(error).__name__
        os.remove(filler)
        answers.append(get_llm()("third" + big).text[:11])    # room again: logged
        records = [r["messages"][-1]["content"][:6] for r in read_log(os.environ["MYOPTO_LOG_FILE"])]
        lines = open(os.environ["MYOPTO_LOG_FILE"], "rb").read().splitlines()
        mount("-o", "remount,bind,ro", folder)
        answers.append(get_llm()("fourth").text)               # read-only now: answered all the same
        print(json.dumps({"answers": answers, "full": full, "failed": failed, "records": records,
                          "unrecorded": unrecorded_counts().get("log", 0), "sent": server.request_count,
                          "lines": [line.startswith(b"{") and line.endswith(b"}") for line in lines]}))
    """,
        tmp_path,
    )
    assert result["answers"] == ["echo: first", "echo: second", "echo: first", "echo: third", "echo: fourth"]
    assert result["full"] == 2 and result["unrecorded"] == 3  # the failed call is no answer: not counted
    assert result["failed"] == "ServerError"
    assert result["records"] == ["first ", "third "]
    assert result["sent"] == 5
    assert result["lines"] == [True, False, True]  # the torn line stands alone: only it is lost


def test_a_log_folder_taken_away_mid_run_takes_no_answer_away(server, tmp_path, caplog):
    """The log's folder is replaced by a regular file between calls: answers (sent or cached, sync
    or async) still reach their callers, each line that could not be written is reported at ERROR
    and counted, a failed call raises its own error, and logging resumes once the folder can be
    made again."""
    folder = tmp_path / "logs"
    use_cache(server, tmp_path / "cache", api_key=None)
    configure_logging(folder / "calls.jsonl")
    reset_unrecorded()
    try:
        assert get_llm()("one").text == "echo: one"
        shutil.rmtree(folder)
        folder.write_text("not a folder any more")
        with caplog.at_level(logging.ERROR, logger="myopto"):
            assert get_llm()("two").text == "echo: two"
            assert get_llm()("one").cached
            assert asyncio.run(get_llm().acall("three")).text == "echo: three"
            server.fail(500)
            with pytest.raises(ServerError):
                get_llm()("four")
        assert unrecorded_counts() == {"log": 3}
        reports = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(reports) == 4 and all("calls.jsonl" in r or "could not be recorded in the log" in r for r in reports)
        folder.unlink()
        assert get_llm()("five").text == "echo: five"
    finally:
        configure_logging()
    assert [r["status"] for r in read_log(folder / "calls.jsonl")] == ["ok"]
    assert server.request_count == 5


def test_a_log_file_removed_mid_run_is_started_again(logged):
    _, path = logged
    get_llm()("one")
    path.unlink()
    get_llm()("two")
    assert [r["request_key"] for r in read_log(path)] == [get_llm().request("two").fingerprint()[:16]]
