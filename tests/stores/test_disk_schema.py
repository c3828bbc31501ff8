"""A foreign cache.db whose schema holds more than diskcache's own. SQLite runs a trigger inside
myopto's writes and a view inside its reads, so such a folder is refused when it is opened,
before any of its statements runs and before anything is sent. What could hang runs in a child
process with a timeout: a regression fails the test instead of hanging the suite."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from testkit import cache_child, recorded_copy, use_cache

from myopto import CacheUnavailable, get_llm
from myopto.stores.disk import DiskStore
from myopto.testing.mounts import mounts_unavailable

RECORD = {"version": 1, "request": {}, "response": {"text": "stored"}}
ENDLESS = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r)"


def handed_over(server, tmp_path: Path, prompts=("seed",)) -> Path:
    """A folder recorded by a real role, closed, copied to a path this process never opened, and
    the executor's cache."""
    folder = recorded_copy(server, tmp_path, prompts)
    use_cache(server, folder)
    return folder


def edit(folder: Path, script: str) -> None:
    """What an attacker does to a cache.db with the sqlite3 shell."""
    db = sqlite3.connect(folder / "cache.db")
    db.executescript(script)
    db.close()


def stored(folder: Path) -> list[tuple]:
    with sqlite3.connect(folder / "cache.db") as db:
        return db.execute("SELECT key, value FROM Cache ORDER BY rowid").fetchall()


def child(code: str, folder: Path, server, *, read_only: bool = False) -> dict:
    """Run `code` in a fresh process using `folder` (on a read-only mount of it if asked); a hang
    fails the test."""
    mounts = {"read_only": [folder]} if read_only else {}
    return cache_child(code, folder, server, timeout=30, hung="hung: the foreign cache.db's own SQL ran", **mounts)


@pytest.mark.parametrize("mode", ["on", "replay"])
def test_a_trigger_that_rewrites_new_answers_is_refused_before_sending(server, tmp_path, mode):
    folder = handed_over(server, tmp_path)
    edit(
        folder,
        """CREATE TRIGGER poison AFTER INSERT ON Cache BEGIN
        UPDATE Cache SET value = json_set(value, '$.response.text', 'ATTACKER ANSWER') WHERE rowid = NEW.rowid;
        END;""",
    )
    before = stored(folder)
    with pytest.raises(CacheUnavailable, match="a trigger 'poison' on Cache") as refused:
        get_llm()("what is 2+2 (never cached)", cache=mode)
    assert "Nothing was run and nothing was changed" in str(refused.value)
    assert refused.value.location == str(folder)
    assert server.request_count == 0
    assert stored(folder) == before


def test_a_trigger_that_hangs_every_write_is_refused_at_once(server, tmp_path):
    folder = handed_over(server, tmp_path)
    edit(
        folder,
        f"CREATE TRIGGER stall AFTER INSERT ON Cache BEGIN SELECT count(*) FROM ({ENDLESS} SELECT x FROM r); END;",
    )
    out = child(
        """
out["call"] = refused(lambda: get_llm()("a new prompt"))
print(json.dumps(out))
""",
        folder,
        server,
    )
    assert "a trigger 'stall' on Cache" in out["call"]
    assert server.request_count == 0


ENDLESS_CACHE_VIEW = f"""
DROP TABLE Cache;
CREATE VIEW Cache AS {ENDLESS}
  SELECT x AS rowid, 'k' AS key, 1 AS raw, 0 AS store_time, NULL AS expire_time, 0 AS access_time,
         0 AS access_count, NULL AS tag, 0 AS size, 1 AS mode, NULL AS filename, 'v' AS value FROM r;
"""
REPLAY_AND_STATS = """
out["replay"] = refused(lambda: get_llm()("seed", cache="replay"))
out["stats"] = main(["cache", "stats", "--dir", DIR])
print(json.dumps(out))
"""


def test_a_cache_table_that_is_an_endless_view_is_refused_not_followed(server, tmp_path):
    folder = handed_over(server, tmp_path)
    edit(folder, ENDLESS_CACHE_VIEW)
    out = child(REPLAY_AND_STATS, folder, server)
    assert "a view 'Cache' unlike diskcache's own" in out["replay"]
    assert out["stats"] == 2
    assert server.request_count == 0


@pytest.mark.skipif(mounts_unavailable() is not None, reason=str(mounts_unavailable()))
def test_on_a_read_only_mount_an_endless_view_is_refused_too(server, tmp_path):
    folder = handed_over(server, tmp_path)
    edit(folder, ENDLESS_CACHE_VIEW)
    out = child(REPLAY_AND_STATS, folder, server, read_only=True)
    assert "a view 'Cache' unlike diskcache's own" in out["replay"]
    assert out["stats"] == 2


def test_a_settings_table_that_is_an_endless_view_is_refused_not_followed(server, tmp_path):
    folder = handed_over(server, tmp_path)
    edit(folder, f"DROP TABLE Settings; CREATE VIEW Settings AS {ENDLESS} SELECT 'count' AS key, x AS value FROM r;")
    out = child(
        """
out["open"] = refused(lambda: DiskStore(DIR))
print(json.dumps(out))
""",
        folder,
        server,
    )
    assert "a view 'Settings'" in out["open"]


def test_a_trigger_kept_only_in_the_write_ahead_log_is_seen(server, tmp_path):
    folder = handed_over(server, tmp_path)
    attacker = sqlite3.connect(folder / "cache.db")
    attacker.execute("CREATE TRIGGER late AFTER INSERT ON Cache BEGIN DELETE FROM Cache; END")
    attacker.commit()
    copy = tmp_path / "copied-while-open"  # the trigger is in cache.db-wal, not yet in cache.db
    copy.mkdir()
    for name in ("cache.db", "cache.db-wal"):
        shutil.copy(folder / name, copy / name)
    attacker.close()
    alone = sqlite3.connect(f"file:{copy / 'cache.db'}?immutable=1", uri=True)
    assert "late" not in [row[0] for row in alone.execute("SELECT name FROM sqlite_master")]
    alone.close()
    with pytest.raises(CacheUnavailable, match="a trigger 'late' on Cache"):
        DiskStore(copy)


@pytest.mark.parametrize(
    "script, named",
    [
        ("CREATE TABLE notes (x);", "a table 'notes'"),
        ("CREATE INDEX Cache_size ON Cache (size);", "an index 'Cache_size' on Cache"),
        (
            "DROP TRIGGER Settings_count_insert; CREATE TRIGGER Settings_count_insert AFTER INSERT ON Cache "
            "FOR EACH ROW BEGIN UPDATE Settings SET value = value + 1 WHERE key = 'count'; "
            "UPDATE Cache SET value = 'x'; END;",
            "a trigger 'Settings_count_insert' on Cache unlike diskcache's own",
        ),
    ],
)
def test_anything_diskcache_does_not_create_is_refused_and_named(server, tmp_path, script, named):
    folder = handed_over(server, tmp_path)
    edit(folder, script)
    before = (folder / "cache.db").read_bytes()
    with pytest.raises(CacheUnavailable) as refused:
        DiskStore(folder)
    assert named in str(refused.value)
    assert (folder / "cache.db").read_bytes() == before


def test_a_pragma_setting_that_is_not_a_number_or_a_word_is_refused(server, tmp_path):
    folder = handed_over(server, tmp_path)
    edit(folder, "UPDATE Settings SET value = '0; ATTACH DATABASE ''elsewhere'' AS x' WHERE key = 'sqlite_mmap_size';")
    with pytest.raises(CacheUnavailable, match=r"settings with values diskcache never writes .*sqlite_mmap_size"):
        get_llm()("seed")
    assert server.request_count == 0


@pytest.mark.parametrize(
    "options",
    [
        {"eviction_policy": "none"},
        {"eviction_policy": "least-recently-stored"},
        {"eviction_policy": "least-recently-used"},
        {"eviction_policy": "least-frequently-used"},
        {"tag_index": True},
    ],
)
def test_a_folder_written_by_diskcache_itself_is_opened(tmp_path, options):
    import diskcache

    folder = tmp_path / "plain-diskcache"
    with diskcache.Cache(str(folder), **options) as written:
        written.set("k" * 64, json.dumps(RECORD))
    store = DiskStore(folder, size_limit=10**9)
    assert store.writable and store.get("k" * 64) == RECORD
    store.set("j" * 64, RECORD)
    store.close()
    assert DiskStore(folder).get("j" * 64) == RECORD


def test_diskcache_schema_written_with_other_spacing_is_still_its_own(tmp_path):
    store = DiskStore(tmp_path / "cache")
    store.set("k" * 64, RECORD)
    store.close()
    edit(tmp_path / "cache", "DROP INDEX Cache_expire_time;CREATE INDEX Cache_expire_time ON Cache(\n  expire_time\n);")
    assert DiskStore(tmp_path / "cache").get("k" * 64) == RECORD
