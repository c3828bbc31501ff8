"""A paid answer is never thrown away, and a cache that cannot record is refused before sending.

For real: a tmpfs that fills up and a read-only bind mount (each in a child process of its own,
inside an unprivileged user and mount namespace: `unshare -rm`, so root cannot write through
them), and a real redis-server killed while a call is in flight.
"""

import json
import threading
import time

import pytest
from testkit import use_cache, use_redis_cache

from myopto import CacheUnavailable, get_llm
from myopto.recording import unrecorded_counts
from myopto.stores.disk import disk_store
from myopto.testing.mounts import mounts_unavailable, run_mounted

needs_mounts = pytest.mark.skipif(mounts_unavailable() is not None, reason=str(mounts_unavailable()))


def run_child(code, directory, env=None, **mounts):
    """Run `code` in its own mount namespace (`myopto.testing.mounts`) with DIRECTORY (and `env`)
    in its environment; its last stdout line as JSON."""
    done = run_mounted(code, env={"MYOPTO_CACHE": "on", "DIRECTORY": str(directory), **(env or {})}, **mounts)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


FULL_DISK = """
import asyncio, json, logging, os
mount = os.environ["DIRECTORY"]  # a 1 MB tmpfs
from myopto import get_llm, set_role_config
from myopto.recording import unrecorded_counts
from myopto.testing import FakeOpenAIServer

class Collect(logging.Handler):
    messages = []
    def emit(self, record):
        self.messages.append(record.getMessage())

logging.getLogger("myopto").addHandler(Collect(logging.ERROR))
with FakeOpenAIServer() as server:
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, api_key="sk-x", cache="on",
                    cache_dir=mount + "/cache", retries=0)
    out = {"first": get_llm()("first").text, "recorded_before": unrecorded_counts().get("cache", 0)}
    descriptor = os.open(mount + "/filler", os.O_WRONLY | os.O_CREAT)  # the disk fills up
    for chunk in (65536, 4096, 512, 1):
        try:
            while True:
                os.write(descriptor, b"0" * chunk)
        except OSError:
            pass
    os.close(descriptor)
    server.reply("a " * 3000, "b " * 3000, "c " * 20000)  # the last one is kept in a file of its own
    out["sync"] = len(get_llm()("sync on a full disk").text)
    out["async"] = len(asyncio.run(get_llm().acall("async on a full disk")).text)
    out["large"] = len(get_llm()("large on a full disk").text)
    out["hit"] = get_llm()("first").cached
    out["requests"] = server.request_count
    out["unrecorded"] = unrecorded_counts().get("cache", 0)
    out["errors"] = Collect.messages
    print(json.dumps(out))
"""


@needs_mounts
def test_a_disk_that_fills_up_after_the_send_still_returns_the_answer_and_reports_it(tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    out = run_child(FULL_DISK, mount, tmpfs={mount: "1m"})
    assert out["first"] == "echo: first" and out["recorded_before"] == 0
    assert (out["sync"], out["async"], out["large"]) == (6000, 6000, 40000)  # every paid answer reached its caller
    assert out["hit"] is True and out["requests"] == 4
    assert out["unrecorded"] == 3
    errors = out["errors"]
    assert len(errors) == 3 and all("could not be recorded in the cache" in e for e in errors), errors


READ_ONLY = """
import json, os
from myopto import get_llm, set_role_config
set_role_config("executor", backend="CustomLLM", model="m", base_url=os.environ["URL"], api_key="sk-x",
                cache_dir=os.environ["DIRECTORY"], retries=0)
out = {}
for mode, prompt in (("replay", "recorded"), ("read_only", "recorded"), ("read_only", "new"), ("on", "recorded"),
                     ("on", "new"), ("refresh", "recorded")):
    try:
        response = get_llm()(prompt, cache=mode)
        out[f"{mode} {prompt}"] = [response.text, response.cached]
    except Exception as error:
        out[f"{mode} {prompt}"] = [type(error).__name__, str(error)]
print(json.dumps(out))
"""


@needs_mounts
def test_a_read_only_cache_serves_replay_and_refuses_to_record_before_sending(server, tmp_path):
    directory = tmp_path / "shared-dataset"
    use_cache(server, directory)
    get_llm()("recorded")
    disk_store(directory).close()  # as a finished run leaves it: everything in cache.db
    out = run_child(READ_ONLY, directory, read_only=[directory], env={"URL": server.url})
    assert out["replay recorded"] == ["echo: recorded", True]
    assert out["read_only recorded"] == ["echo: recorded", True]
    assert out["read_only new"] == ["echo: new", False]  # called, not recorded
    assert out["on recorded"] == ["echo: recorded", True]  # a hit needs no writing
    for refused in ("on new", "refresh recorded"):
        kind, message = out[refused]
        assert kind == "CacheUnavailable", out[refused]
        assert "read_only" in message and "replay" in message and "cache_dir" in message
    # the child sent one request, for `read_only new`: the refused calls sent nothing
    assert server.request_count == 2 and server.last_request.last_user_content == "new"


def test_redis_dying_while_a_call_is_in_flight_returns_the_answer_and_reports_it(server, caplog):
    from myopto.testing import RedisServer

    with RedisServer() as redis:
        use_redis_cache(server, redis.url)
        get_llm()("warm up")  # the store is open and answering
        server.latency = 1.0
        before = unrecorded_counts().get("cache", 0)
        results = []
        thread = threading.Thread(target=lambda: results.append(get_llm()("paid for")))
        with caplog.at_level("ERROR", logger="myopto"):
            thread.start()
            while server.request_count < 2:  # the request reached the model
                time.sleep(0.005)
            redis.process.kill()  # SIGKILL: nothing said goodbye
            redis.process.wait()
            thread.join(timeout=60)
        assert results and results[0].text == "echo: paid for" and not results[0].cached
        assert unrecorded_counts().get("cache", 0) == before + 1
        assert any(
            "could not be recorded in the cache" in r.getMessage() and "CacheUnavailable" in r.getMessage()
            for r in caplog.records
        )
        server.latency = 0.0
        with pytest.raises(CacheUnavailable):  # with the store gone, a new call is refused before it is sent
            get_llm()("never sent")
        assert server.request_count == 2


async def test_redis_dying_during_an_async_call_returns_the_answer(server):
    import asyncio

    from myopto.testing import RedisServer

    with RedisServer() as redis:
        use_redis_cache(server, redis.url)
        await get_llm().acall("warm up")
        server.latency = 1.0
        before = unrecorded_counts().get("cache", 0)
        call = asyncio.create_task(get_llm().acall("paid for"))
        while server.request_count < 2:
            await asyncio.sleep(0.005)
        redis.process.kill()
        redis.process.wait()
        assert (await call).text == "echo: paid for"
        assert unrecorded_counts().get("cache", 0) == before + 1
