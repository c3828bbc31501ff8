"""RedisStore against a real redis-server: same records as disk, modes, replay in a new process,
AOF restart, export/import between Redis and disk, namespaces (glob characters too), stats,
faults (damaged records, a server SIGKILLed mid-call), leases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis as redis_py
from testkit import use_cache, use_redis_cache

from myopto import CacheMiss, CacheUnavailable, ConfigError, clear_role_config, get_llm, set_role_config
from myopto.cli import main
from myopto.stores.disk import DiskStore
from myopto.stores.redis import RedisStore
from myopto.testing import FakeOpenAIServer, RedisServer

SECRET = "sk-redis-test-secret-0123456789"


def redis_role(server, url, **options):
    """The executor on the test server with its cache on the Redis server at `url` (MYOPTO_CACHE
    says the mode)."""
    use_redis_cache(server, url, None, api_key=SECRET, **options)


def disk_role(server, directory):
    """The executor, its Redis config forgotten, on the test server with its cache in `directory`
    (MYOPTO_CACHE says the mode)."""
    clear_role_config()
    use_cache(server, directory, None, api_key=SECRET)


def raw(redis_server):
    return redis_py.Redis.from_url(redis_server.url, decode_responses=True)


def test_answers_are_cached_in_redis_as_the_same_json_records_as_on_disk(server, redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    redis_role(server, redis_server.url)
    first = get_llm()("hello")
    again = get_llm()("hello")
    assert server.request_count == 1 and not first.cached and again.cached and again.text == first.text
    keys = raw(redis_server).keys("myopto:cache:*")
    assert len(keys) == 1
    key = keys[0][len("myopto:cache:{") : -1]
    disk_role(server, tmp_path / "disk")
    get_llm()("hello")
    disk = dict(DiskStore(tmp_path / "disk").items())
    assert list(disk) == [key]  # the same key in both stores
    stored = json.loads(raw(redis_server).get(keys[0]))
    assert stored["request"] == disk[key]["request"]
    assert stored["response"]["text"] == first.text


def test_the_api_key_never_reaches_redis(server, redis_server, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    redis_role(server, redis_server.url, rpm=600, tpm=100000)
    get_llm()("a question")
    client = raw(redis_server)
    dump = " ".join(f"{key}={client.dump(key)!r}" for key in client.keys("*"))
    assert client.keys("*") and SECRET not in dump and SECRET[:12] not in dump


def test_replay_in_a_new_process_with_the_backend_gone_and_after_a_restart_with_aof(redis_server, tmp_path):
    script = tmp_path / "replay.py"
    script.write_text(
        "import os, json\nfrom myopto import get_llm, set_role_config\n"
        "set_role_config('executor', backend='CustomLLM', model='m', base_url=os.environ['URL'], api_key='sk-x',"
        " retries=0)\n"
        "print(json.dumps([get_llm()(f'q{i}').text for i in range(5)]))\n"
    )
    env = {**os.environ, "MYOPTO_CACHE_URL": redis_server.url, "MYOPTO_CACHE_DIR": str(tmp_path / "unused")}

    def run(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, str(script)],
            env={**env, "MYOPTO_CACHE": mode},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    with FakeOpenAIServer() as live:
        env["URL"] = live.url
        first = run("on")
        assert live.request_count == 5
    # the server is gone: a new process with a fresh disk dir replays everything from Redis
    assert run("replay") == first
    redis_server.restart()  # SIGTERM and start again: the AOF holds the answers
    assert run("replay") == first


def test_export_from_redis_import_into_disk_replays_the_same_answers(
    server, redis_server, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    redis_role(server, redis_server.url)
    answers = [get_llm()(f"item {i}").text for i in range(4)]
    export = tmp_path / "fleet.jsonl"
    assert main(["cache", "export", str(export), "--url", redis_server.url]) == 0
    assert len(export.read_text().splitlines()) == 4
    assert main(["cache", "import", str(export), "--dir", str(tmp_path / "home")]) == 0
    disk_role(server, tmp_path / "home")
    before = server.request_count
    assert [get_llm()(f"item {i}", cache="replay").text for i in range(4)] == answers
    assert server.request_count == before
    # and back: disk -> a second namespace on Redis
    assert main(["cache", "import", str(export), "--url", redis_server.url, "--namespace", "team-b"]) == 0
    assert len(RedisStore(redis_server.url, namespace="team-b")) == 4


def test_namespaces_keep_experiments_apart(server, redis_server, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    redis_role(server, redis_server.url)
    monkeypatch.setenv("MYOPTO_CACHE_NAMESPACE", "exp-a")
    get_llm()("same prompt")
    monkeypatch.setenv("MYOPTO_CACHE_NAMESPACE", "exp-b")
    assert not get_llm()("same prompt").cached
    assert server.request_count == 2
    with pytest.raises(CacheMiss):
        monkeypatch.setenv("MYOPTO_CACHE_NAMESPACE", "exp-c")
        get_llm()("same prompt", cache="replay")
    assert server.request_count == 2
    assert sorted(key.split(":")[0] for key in raw(redis_server).keys("*:cache:*")) == ["exp-a", "exp-b"]


def test_stats_show_entries_memory_and_warn_about_an_evicting_policy(server, redis_server, monkeypatch, capsys):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    redis_role(server, redis_server.url)
    get_llm()("one")
    get_llm()("two")
    assert main(["cache", "stats", "--url", redis_server.url]) == 0
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert stats["entries"] == 2 and stats["maxmemory_policy"] == "noeviction" and stats["used_memory_bytes"] > 0
    assert "warning" not in stats and captured.err == ""
    with RedisServer(maxmemory_policy="allkeys-lru") as evicting:
        assert main(["cache", "--url", evicting.url, "stats"]) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out)["maxmemory_policy"] == "allkeys-lru"
        assert "will evict cached answers" in captured.err and "noeviction" in captured.err
    assert main(["cache", "clear", "--url", redis_server.url]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert RedisStore(redis_server.url).stats()["entries"] == 0


def test_redis_down_fails_within_seconds_with_cache_unavailable_and_sends_nothing(server, redis_server, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    url = f"redis://:hunter2-password@127.0.0.1:{redis_server.port}/0"
    redis_server.stop()
    redis_role(server, url)
    start = time.monotonic()
    with pytest.raises(CacheUnavailable) as error:
        get_llm()("anything")
    assert time.monotonic() - start < 5
    assert server.request_count == 0
    assert f"127.0.0.1:{redis_server.port}" in str(error.value) and "hunter2" not in str(error.value)
    assert error.value.location == f"redis://:***@127.0.0.1:{redis_server.port}/0"


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://127.0.0.1:6379/0", "scheme 'http'"),
        ("redis://127.0.0.1:6379/zero", "must be a number"),
        ("redis://:6379/0", "names no host"),
        ("unix://", "no socket path"),
    ],
)
def test_a_malformed_url_is_refused_at_configuration(server, url, problem):
    with pytest.raises(ConfigError, match=problem):
        set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, cache_url=url)


def test_a_malformed_url_in_the_environment_is_refused_before_any_request(server, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    monkeypatch.setenv("MYOPTO_CACHE_URL", "redis//nowhere")
    with pytest.raises(ConfigError, match="MYOPTO_CACHE_URL"):
        set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url)
    assert server.request_count == 0


def test_wrong_credentials_and_a_missing_db_are_config_errors_before_any_request(server, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    with RedisServer(password="right-password") as guarded:
        redis_role(server, f"redis://:wrong-password@127.0.0.1:{guarded.port}/0")
        with pytest.raises(ConfigError, match="refused the credentials") as error:
            get_llm()("x")
        assert "wrong-password" not in str(error.value)
        redis_role(server, f"redis://:right-password@127.0.0.1:{guarded.port}/99")
        with pytest.raises(ConfigError, match="no such database"):
            get_llm()("x")
        redis_role(server, f"redis://:right-password@127.0.0.1:{guarded.port}/1")
        assert get_llm()("x").text == "echo: x"
    assert server.request_count == 1


def test_a_failed_call_releases_the_lease_so_a_waiter_tries_itself(redis_server):
    owner = RedisStore(redis_server.url, namespace="lease-test")
    other = RedisStore(redis_server.url, namespace="lease-test")
    record, lease, _ = owner.claim("k1")
    assert record is None and lease is not None
    record, second, left = other.claim("k1")
    assert record is None and second is None and 0 < left <= 10
    lease.release()  # the owner's call failed: nothing cached, the lease goes
    record, second, _ = other.claim("k1")
    assert record is None and second is not None
    other.set("k1", {"response": {"text": "done"}})
    second.release()
    record, lease, _ = owner.claim("k1")
    assert record == {"response": {"text": "done"}} and lease is None


def test_a_lease_is_renewed_while_its_call_runs_and_expires_when_its_owner_is_gone(redis_server):
    owner = RedisStore(redis_server.url, namespace="renew-test", lease_seconds=0.3)
    _, _lease, _ = owner.claim("long")  # held, and renewed, while this test runs
    time.sleep(1.0)  # three lease lifetimes: the renewer keeps it
    assert RedisStore(redis_server.url, namespace="renew-test").claim("long")[1] is None
    owner._held.clear()  # the owner stops renewing, as a killed process would
    time.sleep(0.6)
    assert RedisStore(redis_server.url, namespace="renew-test").claim("long")[1] is not None


def test_waiters_wake_when_the_flight_ends_not_when_their_wait_runs_out(redis_server):
    import threading

    owner = RedisStore(redis_server.url, namespace="wake-test")
    waiter = RedisStore(redis_server.url, namespace="wake-test")
    _, lease, _ = owner.claim("k")
    woke = []
    thread = threading.Thread(target=lambda: (waiter.wait("k", 4.0), woke.append(time.monotonic())))
    thread.start()
    time.sleep(0.3)
    assert not woke  # still waiting while the call runs
    owner.set("k", {"response": {"text": "landed"}})
    released = time.monotonic()
    lease.release()
    thread.join(5)
    assert woke and woke[0] - released < 1.0
    assert waiter.claim("k")[0] == {"response": {"text": "landed"}}
    # the next flight of the same key starts with no stale signal: a waiter blocks again
    raw(redis_server).delete("wake-test:cache:{k}")
    waiter.memory.clear()
    _, second, _ = owner.claim("k")
    start = time.monotonic()
    waiter.wait("k", 0.3)
    assert time.monotonic() - start >= 0.25
    second.release()


def test_a_redis_cluster_serves_the_cache_single_flight_limits_and_stats(server, monkeypatch, capsys):
    from myopto.testing import RedisClusterServers

    monkeypatch.setenv("MYOPTO_CACHE", "on")
    with RedisClusterServers() as cluster:
        redis_role(server, cluster.url, rpm=600, pricing={"input": 0.0, "output": 5000.0}, max_cost_usd=1.0)
        answers = [get_llm()(f"cluster question {i}").text for i in range(6)]
        assert server.request_count == 6
        store = RedisStore(cluster.url)
        store.memory.clear()
        assert [get_llm()(f"cluster question {i}", cache="replay").text for i in range(6)] == answers
        assert server.request_count == 6
        record, lease, _ = store.claim("a-key-of-its-own")  # the lease script: two keys, one slot
        assert record is None and lease is not None
        lease.release()
        assert main(["cache", "stats", "--url", cluster.url]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert stats["entries"] == 6 and stats["nodes"] == len(cluster.nodes)
        # memory is every primary's, not one node's
        used = [int(redis_py.Redis(port=node.port).info("memory")["used_memory"]) for node in cluster.nodes]
        assert stats["used_memory_bytes"] > max(used) and stats["maxmemory_policy"] == "noeviction"
        # the keys really are spread over the nodes
        counts = [int(raw_node.dbsize()) for raw_node in (redis_py.Redis(port=node.port) for node in cluster.nodes)]
        assert sum(counts) >= 6 and sum(1 for count in counts if count) >= 2
    with pytest.raises(ConfigError, match="only database 0"):
        set_role_config("executor", cache_url="redis+cluster://127.0.0.1:7000/3")


def test_an_unreachable_cluster_is_cache_unavailable_and_nothing_is_sent(server, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    redis_role(server, "redis+cluster://127.0.0.1:9/0")
    with pytest.raises(CacheUnavailable, match="cannot be reached"):
        get_llm()("anything")
    assert server.request_count == 0


# Namespaces that are Redis glob patterns when left unescaped, next to the ones they would match.
GLOB_NAMESPACES = ["lab[1]", "lab1", "a*", "ab", "a?b", "axb", "x\\y", "xy", "lab", "lab:cache:{k}:more"]


def test_namespaces_with_glob_characters_never_reach_each_other(redis_server, capsys):
    stores = {namespace: RedisStore(redis_server.url, namespace=namespace) for namespace in GLOB_NAMESPACES}
    for namespace, store in stores.items():
        for index in range(2):
            store.set(f"{index:064x}", {"response": {"text": namespace}, "request": {"index": index}})
    for namespace, store in stores.items():
        assert len(store) == 2, namespace
        assert sorted(record["response"]["text"] for _, record in store.items()) == [namespace, namespace]
        assert store.stats()["entries"] == 2
    assert main(["cache", "stats", "--url", redis_server.url, "--namespace", "a*"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 2
    # the reported case: clearing `lab[1]` removes its own entries, and never `lab1`'s
    assert main(["cache", "clear", "--url", redis_server.url, "--namespace", "lab[1]"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    left = raw(redis_server)
    assert left.keys("lab\\[1\\]:cache:*") == []
    for namespace in GLOB_NAMESPACES[1:]:
        assert len(RedisStore(redis_server.url, namespace=namespace)) == 2, namespace
    # each of the others, cleared in turn, takes its own two entries and nothing else
    remaining = 2 * (len(GLOB_NAMESPACES) - 1)
    for namespace in GLOB_NAMESPACES[1:]:
        assert stores[namespace].clear() == 2, namespace
        remaining -= 2
        assert len(left.keys("*:cache:*")) == remaining, namespace
    assert left.keys("*") == []


def test_a_damaged_record_raises_damaged_cache_entry_and_an_export_can_go_past_it(redis_server):
    from myopto.errors import DamagedCacheEntry

    store = RedisStore(redis_server.url, namespace="damaged")
    store.set("good", {"response": {"text": "fine"}})
    client = raw(redis_server)
    client.set("damaged:cache:{not-json}", '{"response": ')
    client.set("damaged:cache:{a-list}", "[1, 2]")
    client.set("damaged:cache:{no-text}", json.dumps({"response": {"text": None}}))
    with pytest.raises(DamagedCacheEntry) as error:
        dict(store.items())
    assert error.value.key in ("not-json", "a-list", "no-text") and error.value.location == store.location
    assert not isinstance(error.value, json.JSONDecodeError)
    damaged = []
    assert dict(store.items(on_damaged=damaged.append)) == {"good": {"response": {"text": "fine"}}}
    assert sorted(damage.key for damage in damaged) == ["a-list", "no-text", "not-json"]
    for key in ("not-json", "a-list", "no-text"):  # a read of one key, and a single-flight claim, say the same
        with pytest.raises(DamagedCacheEntry):
            store.get(key)
        with pytest.raises(DamagedCacheEntry):
            store.claim(key)


def test_a_redis_gone_says_nothing_was_sent_only_before_sending():
    with RedisServer() as doomed:
        store = RedisStore(doomed.url, namespace="gone")
        store.set("k", {"response": {"text": "kept"}})
        store.memory.clear()
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
        with pytest.raises(CacheUnavailable, match="nothing was sent to the model"):
            store.get("k")  # read before a call: the call does not happen
        with pytest.raises(CacheUnavailable, match="nothing was sent to the model"):
            store.claim("k")
        with pytest.raises(CacheUnavailable) as error:
            store.set("k2", {"response": {"text": "paid"}})  # the write after a paid answer
        assert "the answer was not stored" in str(error.value) and "nothing was sent" not in str(error.value)
        assert error.value.location == doomed.url


def test_redis_killed_while_the_model_answers_a_cached_call_returns_the_paid_answer(server, monkeypatch):
    import concurrent.futures

    from myopto.recording import reset_unrecorded, unrecorded_counts

    reset_unrecorded()
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    with RedisServer() as doomed:
        # cache, single flight, budget and token counts all on the one server that dies
        redis_role(server, doomed.url, pricing={"input": 0.0, "output": 5000.0}, max_cost_usd=1.0, tpm=100000)
        llm = get_llm()
        assert llm("warm up").text == "echo: warm up"
        server.delay(1.5)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(llm, "paid")
            deadline = time.monotonic() + 30
            while server.request_count < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(doomed.process.pid, signal.SIGKILL)
            doomed.process.wait()
            response = pending.result(timeout=30)
        assert response.text == "echo: paid" and not response.cached
        assert unrecorded_counts() == {"cache": 1, "limits": 1}
        with pytest.raises(CacheUnavailable, match="nothing was sent"):
            llm("next")  # the next call cannot be recorded: refused before sending
    assert server.request_count == 2
