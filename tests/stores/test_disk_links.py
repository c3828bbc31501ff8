"""A cache folder whose `cache.db`, or a file SQLite keeps beside it (`-wal`, `-shm`, `-journal`),
is a link. SQLite opens those files by name: it follows a symlink (writing, creating and deleting
where it leads) and a hard link is another file's content. myopto refuses such a folder when it
opens it, before anything is sent, and nothing the link leads to changes. The folder itself may
be a symlink (a cache kept on another disk): it is resolved once, when opened."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest
from testkit import files_under, record, recorded_copy, use_cache

from myopto import CacheUnavailable, get_llm
from myopto.cli import main
from myopto.stores.disk import DiskStore

RECORD = {"version": 1, "request": {}, "response": {"text": "stored"}}
PROMPTS = ("alpha", "beta", "gamma")


def entries(folder: Path) -> int:
    db = sqlite3.connect(folder / "cache.db")
    try:
        return db.execute("SELECT count(*) FROM Cache").fetchone()[0]
    finally:
        db.close()


def link(kind: str, target: Path, name: Path) -> None:
    (os.symlink if kind == "symlink" else os.link)(target, name)


@pytest.fixture
def outside(tmp_path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("mode", ["on", "replay"])
def test_a_cache_db_linked_to_another_database_is_refused_and_that_database_untouched(server, tmp_path, outside, mode):
    app = outside / "app.sqlite"
    with sqlite3.connect(app) as db:
        db.execute("CREATE TABLE users (name)")
        db.execute("INSERT INTO users VALUES ('alice')")
    before = files_under(outside)
    folder = tmp_path / "handed-to-me"
    folder.mkdir()
    (folder / "cache.db").symlink_to(app)
    use_cache(server, folder)
    with pytest.raises(CacheUnavailable, match="is a symlink") as refused:
        get_llm()("hello", cache=mode)
    assert str(app) in str(refused.value) and "nothing was changed" in str(refused.value)
    assert server.request_count == 0
    assert files_under(outside) == before  # no table added, no -wal or -shm made beside it
    with sqlite3.connect(app) as db:
        assert [row[0] for row in db.execute("SELECT name FROM sqlite_master")] == ["users"]


def test_a_dangling_cache_db_link_creates_nothing_where_it_points(server, tmp_path, outside):
    folder = tmp_path / "handed-to-me"
    folder.mkdir()
    (folder / "cache.db").symlink_to(outside / "new.db")
    with pytest.raises(CacheUnavailable, match="is a symlink") as refused:
        DiskStore(folder)
    assert refused.value.location == str(folder)
    use_cache(server, folder)
    with pytest.raises(CacheUnavailable, match="is a symlink"):
        get_llm()("hello")
    assert server.request_count == 0
    assert list(outside.iterdir()) == []
    assert sorted(path.name for path in folder.iterdir()) == ["cache.db"]


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_cache_clear_on_a_folder_linked_to_my_cache_leaves_my_cache(server, tmp_path, kind, capsys):
    mine = tmp_path / "my-cache"
    record(server, mine, PROMPTS)
    before = files_under(mine)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    link(kind, mine / "cache.db", foreign / "cache.db")

    assert main(["cache", "clear", "--dir", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert ("is a symlink" if kind == "symlink" else "has 2 hard links") in err
    assert files_under(mine) == before and entries(mine) == 3
    use_cache(server, mine)
    assert get_llm()("beta", cache="replay").cached  # still served


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
@pytest.mark.parametrize("name", ["cache.db-wal", "cache.db-shm", "cache.db-journal"])
def test_a_linked_file_beside_cache_db_is_refused_and_its_target_untouched(server, tmp_path, outside, name, kind):
    folder = recorded_copy(server, tmp_path, PROMPTS)  # from someone else's run
    precious = outside / "precious.txt"
    precious.write_text("precious data " * 10)
    link(kind, precious, folder / name)
    with pytest.raises(CacheUnavailable, match=name) as refused:
        DiskStore(folder)
    assert ("is a symlink" if kind == "symlink" else "has 2 hard links") in str(refused.value)
    use_cache(server, folder)
    with pytest.raises(CacheUnavailable, match=name):
        get_llm()("alpha", cache="replay")
    assert server.request_count == 0
    assert precious.read_text() == "precious data " * 10
    assert sorted(path.name for path in outside.iterdir()) == ["precious.txt"]


def test_a_cache_db_that_is_a_folder_is_refused(tmp_path):
    folder = tmp_path / "handed-to-me"
    (folder / "cache.db").mkdir(parents=True)
    with pytest.raises(CacheUnavailable, match="is a folder, not a regular file"):
        DiskStore(folder)


def test_a_cache_db_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    folder = tmp_path / "handed-to-me"
    folder.mkdir()
    os.mkfifo(folder / "cache.db")
    outcome: list[BaseException] = []

    def open_it() -> None:
        try:
            DiskStore(folder)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    opener.join(10)
    assert not opener.is_alive(), "opening a folder whose cache.db is a FIFO blocked"
    assert isinstance(outcome[0], CacheUnavailable) and "is a FIFO, not a regular file" in str(outcome[0])


def test_a_cache_folder_that_is_a_symlink_is_followed_once_when_opened(server, tmp_path):
    real = tmp_path / "other-disk" / "cache"
    real.mkdir(parents=True)
    linked = tmp_path / "home" / "cache"
    linked.parent.mkdir()
    linked.symlink_to(real, target_is_directory=True)
    record(server, linked, prompts=("alpha",))  # the user's own MYOPTO_CACHE_DIR, on another disk
    assert (real / "cache.db").is_file() and linked.is_symlink()
    use_cache(server, linked)
    assert get_llm()("alpha", cache="replay").cached

    store = DiskStore(linked)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked.unlink()
    linked.symlink_to(elsewhere, target_is_directory=True)  # repointed while the store is open
    writer = threading.Thread(target=store.set, args=("k" * 64, RECORD))  # a new thread: a new connection
    writer.start()
    writer.join(30)
    assert list(elsewhere.iterdir()) == []
    assert DiskStore(real).get("k" * 64) == RECORD


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_clear_refuses_a_cache_db_swapped_for_a_link_after_opening(server, tmp_path, kind):
    mine = tmp_path / "my-cache"
    record(server, mine, PROMPTS)
    before = files_under(mine)
    foreign = tmp_path / "foreign"
    record(server, foreign, prompts=("delta",))
    store = DiskStore(foreign)
    (foreign / "cache.db").unlink()
    link(kind, mine / "cache.db", foreign / "cache.db")
    outcome: list[BaseException] = []

    def clear() -> None:  # from a thread of its own: diskcache opens the file by name again
        try:
            store.clear()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    clearer = threading.Thread(target=clear)
    clearer.start()
    clearer.join(30)
    assert files_under(mine) == before and entries(mine) == 3
    assert outcome and isinstance(outcome[0], CacheUnavailable), outcome
    assert ("is a symlink" if kind == "symlink" else "has 2 hard links") in str(outcome[0])
