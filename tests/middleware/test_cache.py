"""The disk cache, over real HTTP (test server, real clients) and a real diskcache directory."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import in_threads, use_cache

from myopto import CacheMiss, ServerError, get_llm, get_usage_summary, set_role_config
from myopto.stores.disk import DiskStore, UnsafeCacheEntry, disk_store
from myopto.testing import FakeOpenAIServer

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cached(server, tmp_path):
    directory = tmp_path / "exp-cache"
    use_cache(server, directory, model="m1", api_key="sk-SECRET-123")
    return server, directory


def test_a_repeated_call_is_served_from_the_cache(cached):
    server, _ = cached
    first = get_llm()("hello", temperature=0)
    second = get_llm()("hello", temperature=0)
    assert server.request_count == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text and second.usage == first.usage
    summary = get_usage_summary()["by_role"]["executor"]
    assert summary["calls"] == 2 and summary["cache_hits"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"model": "m2"},
        {"messages": "other"},
        {"temperature": 0.7},
        {"response_format": SCHEMA},
        {"sample": 1},
        {"max_tokens": 9},
    ],
)
def test_what_decides_the_answer_changes_the_key(cached, change):
    server, _ = cached
    get_llm()("hello", temperature=0)
    kwargs = {"temperature": 0, **change}
    messages = kwargs.pop("messages", "hello")
    get_llm()(messages, **kwargs)
    assert server.request_count == 2


def test_run_tags_and_timeouts_do_not_change_the_key(cached):
    server, _ = cached
    get_llm()("hello", metadata={"run": "a"})
    get_llm()("hello", metadata={"run": "b"}, timeout=30)
    assert server.request_count == 1


def test_distinct_samples_are_cached_separately_and_replayed(cached):
    server, _ = cached
    for sample in range(3):
        get_llm()("draw", temperature=1.0, sample=sample)
    assert server.request_count == 3
    for sample in range(3):
        assert get_llm()("draw", temperature=1.0, sample=sample, cache="replay").cached


def test_the_api_key_is_nowhere_on_disk_and_values_are_json(cached):
    _, directory = cached
    for i in range(5):
        get_llm()(f"q{i}", response_format=SCHEMA if i % 2 else None)
    disk_store(directory).close()
    for path in directory.rglob("*"):
        if path.is_file():
            assert b"sk-SECRET-123" not in path.read_bytes(), path
    rows = sqlite3.connect(directory / "cache.db").execute("SELECT key, value, mode FROM Cache").fetchall()
    assert len(rows) == 5
    for _key, value, _mode in rows:
        record = json.loads(value)
        assert record["response"]["text"] and record["request"]["model"] == "m1"
        assert "api_key" not in json.dumps(record)


def test_errors_are_never_cached(cached):
    server, directory = cached
    server.fail(500)
    with pytest.raises(ServerError):
        get_llm()("flaky")
    assert len(disk_store(directory)) == 0
    assert get_llm()("flaky").cached is False
    assert server.request_count == 2


def test_modes_off_read_only_refresh_and_replay(cached):
    server, directory = cached
    get_llm()("x", cache="off")
    assert len(disk_store(directory)) == 0
    get_llm()("x", cache="read_only")
    assert len(disk_store(directory)) == 0
    get_llm()("x")  # on: stores
    assert get_llm()("x", cache="read_only").cached
    count = server.request_count
    server.reply("fresh answer")
    assert get_llm()("x", cache="refresh").text == "fresh answer"
    assert server.request_count == count + 1
    assert get_llm()("x").text == "fresh answer"
    with pytest.raises(CacheMiss):
        get_llm()("never asked", cache="replay")
    assert server.request_count == count + 1


def test_the_mode_comes_from_the_environment_when_the_role_sets_none(server, monkeypatch):
    set_role_config("executor", backend="CustomLLM", model="m1", base_url=server.url)
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    get_llm()("recorded")
    monkeypatch.setenv("MYOPTO_CACHE", "replay")
    assert get_llm()("recorded").cached
    with pytest.raises(CacheMiss, match="nothing was sent"):
        get_llm()("not recorded")
    assert server.request_count == 1
    monkeypatch.setenv("MYOPTO_CACHE", "sometimes")
    with pytest.raises(ValueError, match="MYOPTO_CACHE must be one of"):
        get_llm()("x")


def test_sixteen_threads_with_the_same_request_make_one_backend_call(cached):
    server, _ = cached
    server.latency = 0.3
    results = in_threads(16, lambda: get_llm()("same"))
    assert server.request_count == 1
    assert len({r.text for r in results}) == 1 and len(results) == 16


async def test_async_single_flight_and_hits(cached):
    import asyncio

    server, _ = cached
    server.latency = 0.2
    responses = await asyncio.gather(*(get_llm().acall("together") for _ in range(8)))
    assert server.request_count == 1
    assert len({r.text for r in responses}) == 1
    assert (await get_llm().acall("together")).cached


def test_a_pickled_entry_is_refused_not_loaded(tmp_path):
    import diskcache

    directory = tmp_path / "foreign"
    with diskcache.Cache(str(directory)) as foreign:
        foreign.set("key", {"not": "json text"})  # the default Disk pickles a dict
    store = DiskStore(directory)
    with pytest.raises(UnsafeCacheEntry):
        store.get("key")


def test_export_and_import_between_directories(cached, tmp_path):
    from myopto.cli import main

    _, directory = cached
    get_llm()("one", metadata={"run": "exp-1"})
    get_llm()("two", metadata={"run": "exp-2"})
    export = tmp_path / "run.jsonl"
    assert main(["cache", "--dir", str(directory), "export", str(export), "--run", "exp-1"]) == 0
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line["run"] for line in lines] == ["exp-1"]
    other = tmp_path / "colleague"
    assert main(["cache", "--dir", str(other), "import", str(export)]) == 0
    set_role_config("executor", cache_dir=str(other))
    assert get_llm()("one", cache="replay").text == "echo: one"
    with pytest.raises(CacheMiss):
        get_llm()("two", cache="replay")


def test_import_rejects_a_file_that_is_not_an_export(tmp_path, capsys):
    from myopto.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"hello": 1}\n')
    assert main(["cache", "--dir", str(tmp_path / "c"), "import", str(bad)]) == 2
    assert "not a myopto cache record" in capsys.readouterr().err
    assert len(disk_store(tmp_path / "c")) == 0


def test_stats_and_clear(cached, capsys):
    from myopto.cli import main

    _, directory = cached
    get_llm()("a")
    get_llm()("a")
    main(["cache", "--dir", str(directory), "stats"])
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == 1 and stats["memory_hits"] >= 1 and stats["size_bytes"] > 0
    main(["cache", "--dir", str(directory), "clear"])
    assert "removed 1 entries" in capsys.readouterr().out


EXPERIMENT = """
import json, os, sys
from myopto import get_llm, set_role_config
set_role_config("executor", backend="CustomLLM", model="m", base_url=os.environ["URL"], api_key="sk-x",
                cache_dir=os.environ["DIR"])
for i in range(int(os.environ["CALLS"])):
    print(json.dumps(get_llm()(f"question {i}").text), flush=True)
"""


def run_experiment(tmp_path, url, directory, calls, mode="on", **popen):
    script = tmp_path / "experiment.py"
    script.write_text(EXPERIMENT)
    env = {**os.environ, "URL": url, "DIR": str(directory), "CALLS": str(calls), "MYOPTO_CACHE": mode}
    return subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def test_a_rerun_in_a_new_process_replays_offline_with_identical_outputs(tmp_path):
    directory = tmp_path / "cache"
    with FakeOpenAIServer() as live:
        url = live.url
        first = run_experiment(tmp_path, url, directory, 6).communicate(timeout=120)[0]
        assert live.request_count == 6
    replay = run_experiment(tmp_path, url, directory, 6, mode="replay")  # the server is gone
    out, err = replay.communicate(timeout=120)
    assert replay.returncode == 0, err
    assert out == first and len(out.splitlines()) == 6
    more = run_experiment(tmp_path, url, directory, 7, mode="replay")
    _, err = more.communicate(timeout=120)
    assert more.returncode != 0 and "CacheMiss" in err


def test_a_run_killed_half_way_resumes_calling_only_what_had_not_finished(tmp_path):
    directory = tmp_path / "cache"
    with FakeOpenAIServer(latency=0.05) as live:
        process = run_experiment(tmp_path, live.url, directory, 30)
        for _ in range(10):
            process.stdout.readline()
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        finished = len(DiskStore(directory))
        assert 10 <= finished < 30
        before = live.request_count
        rerun = run_experiment(tmp_path, live.url, directory, 30)
        out, _ = rerun.communicate(timeout=120)
        assert len(out.splitlines()) == 30
        assert live.request_count - before == 30 - finished


WRITER = """
import sys
from myopto import Pipeline, Request
from myopto.stores.disk import disk_store
from myopto.middleware.cache import Cache
from myopto.testing import EchoBackend
worker, directory = sys.argv[1], sys.argv[2]
pipeline = Pipeline(EchoBackend(), [Cache(disk_store(directory))])
for i in range(500):
    text = f"shared {i}" if i % 2 else f"worker {worker} item {i}"
    response = pipeline(Request(model="m", messages=[{"role": "user", "content": text}]))
    assert response.text == "echo: " + text, response.text
"""


def test_four_processes_writing_one_directory_lose_and_corrupt_nothing(tmp_path):
    directory = tmp_path / "shared"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    processes = [
        subprocess.Popen([sys.executable, str(script), str(w), str(directory)], stderr=subprocess.PIPE, text=True)
        for w in range(4)
    ]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    store = DiskStore(directory)
    records = dict(store.items())
    assert len(records) == 250 + 4 * 250
    for record in records.values():
        assert record["response"]["text"] == "echo: " + record["request"]["messages"][0]["content"]
