"""DiskStore's own edges: a damaged directory is reported, never repaired by deleting."""

from __future__ import annotations

import pytest

from myopto import CacheUnavailable, get_llm, set_role_config
from myopto.stores.disk import DiskStore


def test_a_cache_db_that_is_not_a_database_is_a_clear_error_and_nothing_is_deleted(tmp_path, server, monkeypatch):
    directory = tmp_path / "cache"
    directory.mkdir()
    damaged = directory / "cache.db"
    damaged.write_bytes(b"these are my notes, not a database\n" * 100)
    (directory / "other-file.txt").write_text("keep me")
    with pytest.raises(CacheUnavailable) as error:
        DiskStore(directory)
    message = str(error.value)
    assert str(damaged) in message and "Nothing was deleted" in message and "MYOPTO_CACHE_DIR" in message
    assert error.value.location == str(directory)
    # through a role: refused when the chain is built, before anything is sent
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    with pytest.raises(CacheUnavailable):
        set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, cache_dir=str(directory))
        get_llm()("hello")
    assert server.request_count == 0
    assert damaged.read_bytes() == b"these are my notes, not a database\n" * 100
    assert sorted(p.name for p in directory.iterdir()) == ["cache.db", "other-file.txt"]


def test_a_cache_dir_that_is_a_file_is_refused_before_anything_is_sent(tmp_path, server, monkeypatch):
    a_file = tmp_path / "results.csv"
    a_file.write_text("a,b\n")
    with pytest.raises(CacheUnavailable, match="is a file, not a directory") as error:
        DiskStore(a_file)
    assert error.value.location == str(a_file)
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, cache_dir=str(a_file))
    with pytest.raises(CacheUnavailable, match="is a file"):
        get_llm()("hello")
    assert server.request_count == 0 and a_file.read_text() == "a,b\n"


def test_a_cache_dir_that_cannot_be_created_says_so(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(CacheUnavailable, match="does not exist and cannot be created"):
        DiskStore(tmp_path / "a-file" / "cache")


DAMAGE = {
    "not JSON": ("{'python': 'repr'}", "not JSON"),
    "a list": ("[]", "a JSON array, not a record object"),
    "no response": ('{"version": 1, "request": {}}', "no 'response' object"),
    "text not a string": ('{"version": 1, "response": {"text": null}}', "'response.text' is null"),
    "usage as strings": (
        '{"version": 1, "response": {"text": "a", "usage": {"total_tokens": "12"}}}',
        "not a whole number",
    ),
}


def damage_entry(directory, key, value):
    import sqlite3

    with sqlite3.connect(directory / "cache.db") as db:
        assert (
            db.execute("UPDATE Cache SET value = ?, mode = 1, filename = NULL WHERE key = ?", (value, key)).rowcount
            == 1
        )


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_a_damaged_cache_entry_error_never_a_raw_one(tmp_path, server, damage):
    from myopto.errors import DamagedCacheEntry
    from myopto.stores.disk import disk_store

    value, problem = DAMAGE[damage]
    directory = tmp_path / "c"
    set_role_config(
        "executor", backend="CustomLLM", model="m", base_url=server.url, cache="on", cache_dir=str(directory), retries=0
    )
    get_llm()("hello")
    (key,) = [key for key, _ in DiskStore(directory).items()]
    disk_store(directory).memory.clear()
    damage_entry(directory, key, value)

    with pytest.raises(DamagedCacheEntry) as error:
        DiskStore(directory).get(key)
    message = str(error.value)
    assert problem in message and key[:16] in message and str(directory) in message and "cache='refresh'" in message
    with pytest.raises(DamagedCacheEntry):
        get_llm()("hello", cache="replay")
    assert server.request_count == 1
    server.reply("a new answer")
    assert get_llm()("hello").text == "a new answer"  # on: a miss, and the new answer replaces it
    assert DiskStore(directory).get(key)["response"]["text"] == "a new answer"


def test_an_export_goes_past_damaged_entries_finishes_the_file_and_says_how_many(tmp_path, server, capsys):
    import json

    from myopto.cli import main

    directory = tmp_path / "c"
    set_role_config(
        "executor", backend="CustomLLM", model="m", base_url=server.url, cache="on", cache_dir=str(directory), retries=0
    )
    for prompt in ("a", "b", "c", "d"):
        get_llm()(prompt)
    keys = {record["request"]["messages"][0]["content"]: key for key, record in DiskStore(directory).items()}
    damage_entry(directory, keys["b"], "{truncated")
    damage_entry(directory, keys["c"], '{"version": 1}')
    out = tmp_path / "export.jsonl"
    assert main(["cache", "export", str(out), "--dir", str(directory)]) == 2
    err = capsys.readouterr().err
    assert "exported 2 entries" in err and "skipped 2 damaged entries" in err
    assert keys["b"][:16] in err and keys["c"][:16] in err
    assert sorted(json.loads(line)["key"] for line in out.read_text().splitlines()) == sorted([keys["a"], keys["d"]])
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".partial")] == []
