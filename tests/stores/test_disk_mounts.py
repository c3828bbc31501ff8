"""A cache directory on a real read-only mount and on a real disk that fills up.

Each test runs a child Python in a mount namespace of its own (`unshare -rm`, see
`myopto.testing.mounts`): a directory bound onto itself read-only (root cannot write there
either), or a 1 MiB tmpfs. The child reaches the test server over loopback, so the parent counts
what was sent.
"""

from __future__ import annotations

import pytest
from testkit import cache_child, files_under, use_cache

from myopto import get_llm
from myopto.stores.disk import disk_store
from myopto.testing.mounts import mounts_unavailable

pytestmark = pytest.mark.skipif(mounts_unavailable() is not None, reason=str(mounts_unavailable()))


def record(server, directory) -> None:
    use_cache(server, directory)
    for prompt in ("one", "two"):
        get_llm()(prompt)
    server.reply("B" * 40_000)  # kept in a value file, not in cache.db
    get_llm()("big")
    server.reset()


REPLAY_READ_ONLY = """
out["replay"] = [get_llm()(p, cache="replay").text[:12] for p in ("one", "two", "big")]
out["read_only_hit"] = get_llm()("one", cache="read_only").cached
out["read_only_miss"] = get_llm()("new", cache="read_only").text
out["on_hit"] = get_llm()("two", cache="on").cached
out["on_miss"] = refused(lambda: get_llm()("another", cache="on"))
out["refresh"] = refused(lambda: get_llm()("one", cache="refresh"))
store = disk_store(DIR)
out["writable"] = store.writable
out["set"] = refused(lambda: store.set("k" * 64, {"version": 1, "response": {"text": "x"}}))
out["stats"] = main(["cache", "stats", "--dir", DIR])
out["clear"] = main(["cache", "clear", "--dir", DIR])
print(json.dumps(out))
"""


@pytest.mark.parametrize("writer", ["closed", "still open"])
def test_a_read_only_cache_folder_replays_and_refuses_to_record_before_sending(server, tmp_path, writer, capfd):
    directory = tmp_path / "dataset"
    record(server, directory)
    if writer == "closed":
        disk_store(directory).close()
    else:  # copied while its writer runs: cache.db-wal and -shm are there too
        assert (directory / "cache.db-wal").exists()
    before = files_under(directory)

    out = cache_child(REPLAY_READ_ONLY, directory, server, read_only=[directory])

    assert out["replay"] == ["echo: one", "echo: two", "B" * 12]
    assert out["read_only_hit"] is True and out["on_hit"] is True and out["writable"] is False
    assert out["read_only_miss"] == "echo: new"
    assert server.request_count == 1  # only the read_only miss was sent
    for refusal in ("on_miss", "refresh"):
        assert "cannot be written" in out[refusal] and "nothing was sent" in out[refusal]
    assert str(directory) in out["set"] and "read-only" in out["set"]
    assert out["stats"] == 0 and out["clear"] == 2
    assert files_under(directory) == before  # not a byte changed


FULL_DISK = """
for prompt in ("one", "two"):
    get_llm()(prompt)
get_llm()("big " + "x" * 40_000)
filler = os.open(os.path.join(os.path.dirname(DIR), "filler"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(filler, b"0" * 65536)
except OSError:
    os.close(filler)
reset_unrecorded()
out["paid"] = get_llm()("asked when the disk was full").text
out["unrecorded"] = unrecorded_counts()
store = disk_store(DIR)
store.memory.clear()  # the hits below come from disk
out["hits"] = [get_llm()(p, cache="replay").text[:10] for p in ("one", "two", "big " + "x" * 40_000)]
out["set"] = refused(lambda: store.set("k" * 64, {"version": 1, "response": {"text": "y" * 100}}))
out["set_big"] = refused(lambda: store.set("j" * 64, {"version": 1, "response": {"text": "y" * 100_000}}))
fresh = subprocess.run([sys.executable, "-c", '''
import json, os
from myopto import CacheUnavailable, get_llm, set_role_config
from myopto.stores.disk import disk_store
set_role_config("executor", backend="CustomLLM", model="m", base_url=os.environ["URL"], cache="on",
                cache_dir=os.environ["DIR"], retries=0)
hits = [get_llm()(p, cache="replay").text[:10] for p in ("one", "two")]
try:
    get_llm()("a miss in a new process", cache="on")
    refusal = "not refused"
except CacheUnavailable as error:
    refusal = str(error)
print(json.dumps({"hits": hits, "on_miss": refusal, "writable": disk_store(os.environ["DIR"]).writable}))
'''], capture_output=True, text=True)
out["fresh"] = json.loads(fresh.stdout) if fresh.returncode == 0 else fresh.stderr
print(json.dumps(out))
"""


def test_a_full_disk_still_serves_what_is_cached_and_a_failed_write_names_the_folder(server, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    out = cache_child(FULL_DISK, disk / "cache", server, tmpfs={disk: "1m"})

    assert out["paid"] == "echo: asked when the disk was full"  # the caller got what was paid for
    assert out["unrecorded"] == {"cache": 1}  # and the lost record was reported
    assert out["hits"] == ["echo: one", "echo: two", "echo: big "]
    for write in ("set", "set_big"):
        assert (
            f"could not store an answer in the cache directory {disk / 'cache'}: the disk holding it is full"
            in out[write]
        ), out[write]
    fresh = out["fresh"]
    assert isinstance(fresh, dict), fresh
    assert fresh["hits"] == ["echo: one", "echo: two"] and fresh["writable"] is False
    assert "cannot be written" in fresh["on_miss"] and "nothing was sent" in fresh["on_miss"]
    assert server.request_count == 4  # one, two, big, and the one asked when full; never the refused miss


def test_an_empty_read_only_folder_is_refused_with_what_to_fix(server, tmp_path):
    directory = tmp_path / "empty"
    directory.mkdir()
    out = cache_child(
        'out["open"] = refused(lambda: DiskStore(DIR))\nprint(json.dumps(out))',
        directory,
        server,
        read_only=[directory],
    )
    assert "cannot be written" in out["open"] and "holds no cache.db" in out["open"]
    assert list(directory.iterdir()) == []
