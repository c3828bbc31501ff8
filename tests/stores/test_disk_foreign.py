"""A cache folder from someone else, attacked as an attacker would: rows of its cache.db edited
with sqlite3 and symlinks planted inside, then used as a victim would (a normal call, an
overwrite, `myopto cache clear`). Nothing outside the folder is read, written or removed."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from testkit import recorded_copy, use_cache

from myopto import CacheUnavailable, get_llm
from myopto.cli import main
from myopto.errors import DamagedCacheEntry
from myopto.recording import reset_unrecorded, unrecorded_counts
from myopto.stores.disk import DiskStore, UnsafeCacheEntry, disk_store

PROMPTS = ("alpha", "beta", "gamma")


def record_folder(server, tmp_path: Path, prompts=PROMPTS, size: int = 40_000) -> Path:
    """A folder recorded by a real role (answers of `size` characters: over 32 KB diskcache keeps
    them in files named in cache.db), closed and handed over as a copy, now the executor's cache."""
    folder = recorded_copy(server, tmp_path, prompts, answer=lambda prompt: prompt.upper() * (size // len(prompt)))
    use_cache(server, folder)
    return folder


def rows(folder: Path) -> dict[str, tuple[str, str]]:
    """prompt -> (cache key, value file name) of each recorded answer."""
    found = {}
    with sqlite3.connect(folder / "cache.db") as db:
        for key, filename in db.execute("SELECT key, filename FROM Cache"):
            record = json.loads((folder / filename).read_text())
            found[record["request"]["messages"][0]["content"]] = (key, filename)
    return found


def point_row(folder: Path, key: str, filename: str) -> None:
    with sqlite3.connect(folder / "cache.db") as db:
        db.execute("UPDATE Cache SET filename = ? WHERE key = ?", (filename, key))


def planted_record(key: str, text: str) -> str:
    """What an attacker puts outside: a well-formed record, so a store that followed the row
    would serve it as the answer."""
    return json.dumps({"version": 1, "request": {}, "response": {"text": text}}) + " " * 40_000


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def atime_is_kept(tmp_path: Path) -> bool:
    """Whether this filesystem records reads in atime (not under noatime), so 'unread' is checkable."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    os.utime(probe, (0, 1000))
    probe.read_text()
    return os.stat(probe).st_atime != 0


def untouched(path: Path, content: str, check_atime: bool) -> None:
    if check_atime:
        assert os.stat(path).st_atime == 0, f"{path} was read"
    assert path.read_text() == content
    unread_from_now(path)  # this check itself just read it


def unread_from_now(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (0, 1000))


@pytest.mark.parametrize("how", ["absolute path", "../ path", "symlink inside"])
def test_a_row_pointing_outside_is_never_read_and_never_removed(server, tmp_path, outside, how):
    folder = record_folder(server, tmp_path)
    key, filename = rows(folder)["alpha"]
    secret = outside / "secret.json"
    secret.write_text(planted_record(key, "ANSWER PLANTED OUTSIDE"))
    content = secret.read_text()
    if how == "absolute path":
        point_row(folder, key, str(secret))
    elif how == "../ path":
        point_row(folder, key, os.path.relpath(secret, folder))
    else:  # the row keeps its well-formed name; the file it names became a link out
        (folder / filename).unlink()
        (folder / filename).symlink_to(secret)
    check_atime = atime_is_kept(tmp_path)
    unread_from_now(secret)

    with pytest.raises(UnsafeCacheEntry) as refused:  # replay cannot call: it says why
        get_llm()("alpha", cache="replay")
    assert refused.value.key == key and refused.value.location == str(folder)
    assert "cache='refresh'" in str(refused.value) and isinstance(refused.value, DamagedCacheEntry)
    assert server.request_count == 0
    untouched(secret, content, check_atime)

    server.reply("a fresh answer")
    answer = get_llm()("alpha")  # a normal call: the entry is a miss, the new answer replaces the row
    assert answer.text == "a fresh answer" and not answer.cached
    assert server.request_count == 1
    untouched(secret, content, check_atime)  # the overwrite removed the old file only if it was ours
    assert get_llm()("alpha", cache="replay").text == "a fresh answer"

    assert get_llm()("beta", cache="replay").text.startswith("BETA")  # the others still serve


def test_refresh_over_a_row_pointing_outside_leaves_that_file(server, tmp_path, outside):
    folder = record_folder(server, tmp_path)
    key, _ = rows(folder)["beta"]
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    point_row(folder, key, os.path.relpath(victim, folder))
    server.reply("refreshed")
    assert get_llm()("beta", cache="refresh").text == "refreshed"
    assert victim.read_text() == "keep me"


def test_cache_clear_removes_every_entry_and_nothing_outside(server, tmp_path, outside, capsys):
    folder = record_folder(server, tmp_path)
    found = rows(folder)
    nested = outside / "project"
    nested.mkdir()
    third = nested / "notes.txt"
    third.write_text("mine")
    absolute = outside / "absolute.txt"
    absolute.write_text("mine too")
    point_row(folder, found["alpha"][0], os.path.relpath(third, folder))
    point_row(folder, found["beta"][0], str(absolute))
    ours = folder / found["gamma"][1]

    code = main(["cache", "clear", "--dir", str(folder)])
    assert third.read_text() == "mine" and nested.is_dir() and absolute.read_text() == "mine too"
    captured = capsys.readouterr()
    assert "removed 3 entries" in captured.out
    assert "left alone 2 file(s)" in captured.err and code == 2  # said, and flagged
    assert not ours.exists() and not ours.parent.exists()  # our own file, and its emptied folders
    assert len(disk_store(folder)) == 0 and folder.is_dir() and (folder / "cache.db").exists()


def test_no_new_answer_is_written_through_a_planted_symlink(server, tmp_path, outside):
    folder = record_folder(server, tmp_path, prompts=("small",), size=10)  # no value files yet
    for high in range(256):  # every first-level folder a value could go to leads outside
        (folder / f"{high:02x}").symlink_to(outside, target_is_directory=True)
    reset_unrecorded()
    server.reply("B" * 50_000)
    answer = get_llm()("a long answer")
    assert answer.text == "B" * 50_000  # paid for: the caller has it
    assert unrecorded_counts().get("cache") == 1  # and the failure to store it was reported
    assert list(outside.iterdir()) == []
    store = DiskStore(folder)
    with pytest.raises(CacheUnavailable, match="never writes through it"):
        store.set("k" * 64, {"version": 1, "response": {"text": "C" * 50_000}})
    assert list(outside.iterdir()) == []


def test_a_row_naming_a_fifo_is_refused_without_blocking(server, tmp_path):
    folder = record_folder(server, tmp_path)
    key, filename = rows(folder)["gamma"]
    (folder / filename).unlink()
    os.mkfifo(folder / filename)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: _catch(outcome, lambda: DiskStore(folder).get(key)), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO named by a row blocked"
    assert isinstance(outcome[0], UnsafeCacheEntry) and "not a regular file" in str(outcome[0])


def _catch(into: list[BaseException], call) -> None:
    try:
        call()
    except BaseException as error:  # noqa: BLE001 - handed to the test
        into.append(error)


def test_a_settings_row_that_would_become_a_pragma_is_refused_before_sending(server, tmp_path, outside):
    folder = record_folder(server, tmp_path, prompts=("x",), size=10)
    with sqlite3.connect(folder / "cache.db") as db:
        db.execute("INSERT INTO Settings VALUES ('sqlite_temp_store_directory', ?)", (f"'{outside}'",))
    with pytest.raises(CacheUnavailable, match="sqlite_temp_store_directory"):
        get_llm()("x")
    assert server.request_count == 0


def test_pickled_keys_and_values_of_a_foreign_folder_are_skipped_by_export(tmp_path, capsys):
    import diskcache

    folder = tmp_path / "foreign"
    with diskcache.Cache(str(folder)) as foreign:
        foreign.set(("a", "tuple", "key"), "text")  # a pickled key
        foreign.set("pickled-value", {"a": 1})  # a pickled value
        foreign.set("good", json.dumps({"version": 1, "response": {"text": "fine"}}))
    out = tmp_path / "out.jsonl"
    assert main(["cache", "export", str(out), "--dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "skipped 2 damaged entries" in err and "unpickle" in err
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == ["good"]
