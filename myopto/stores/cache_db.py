"""`cache.db`: what a cache directory's database must be before myopto lets SQLite run anything on it.

- `cache.db` and the files SQLite keeps beside it (`-wal`, `-shm`, `-journal`) must be regular
  files with one name (`check_files`): SQLite opens them by name and follows a symlink (writing,
  creating and deleting where it leads) and a hard link is another file's content;
- its schema must be exactly diskcache's own tables, indexes and triggers (type, name and SQL):
  a trigger or a view someone added would run inside myopto's own reads and writes. It is read
  from `sqlite_master` before any other statement (`inspect`);
- its `Settings` table may only hold diskcache's own settings (they become SQLite pragmas), each
  a number or a word.

Anything else is refused with `CacheUnavailable`, nothing run and nothing changed. `connect` and
`connect_read_only` open a cache.db by URI (the read-only one never creates or changes it). The
whole promise of a cache directory is in `myopto.stores.disk`.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from myopto.errors import CacheUnavailable

_log = logging.getLogger("myopto.cache")
DATABASE = "cache.db"
_DISKCACHE_SETTINGS = frozenset(
    {
        "statistics",
        "tag_index",
        "eviction_policy",
        "size_limit",
        "cull_limit",
        "sqlite_auto_vacuum",
        "sqlite_cache_size",
        "sqlite_journal_mode",
        "sqlite_mmap_size",
        "sqlite_synchronous",
        "disk_min_file_size",
        "disk_pickle_protocol",
        "count",
        "size",
        "hits",
        "misses",
    }
)
# the files SQLite opens by name for a database: each must be a plain file of the directory
_SQLITE_FILES = (DATABASE, DATABASE + "-wal", DATABASE + "-shm", DATABASE + "-journal")
_SETTING_WORD = re.compile(r"[A-Za-z]{1,16}")  # a pragma value diskcache writes: `wal`, or a number
_INSPECT_SECONDS = 10.0  # reading a schema and a settings table is instant; a bound, not a budget


def _normal_sql(sql: Any) -> Any:
    """SQL text with runs of whitespace made one space and none around brackets and commas."""
    if not isinstance(sql, str):  # None for an automatic index; anything else never matches
        return sql
    return re.sub(r" ?([(),;]) ?", r"\1", re.sub(r"\s+", " ", sql).strip())


# Every schema object diskcache 5.6 creates, as SQLite keeps it in sqlite_master (type, name,
# table, SQL): `Cache.__init__`, the index of each eviction policy and the tag index.
_DISKCACHE_SCHEMA = frozenset(
    (kind, name, table, _normal_sql(sql))
    for kind, name, table, sql in (
        ("table", "Settings", "Settings", "CREATE TABLE Settings ( key TEXT NOT NULL UNIQUE, value)"),
        ("index", "sqlite_autoindex_Settings_1", "Settings", None),
        (
            "table",
            "Cache",
            "Cache",
            "CREATE TABLE Cache ( rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER, store_time REAL,"
            " expire_time REAL, access_time REAL, access_count INTEGER DEFAULT 0, tag BLOB,"
            " size INTEGER DEFAULT 0, mode INTEGER DEFAULT 0, filename TEXT, value BLOB)",
        ),
        ("index", "Cache_key_raw", "Cache", "CREATE UNIQUE INDEX Cache_key_raw ON Cache(key, raw)"),
        ("index", "Cache_expire_time", "Cache", "CREATE INDEX Cache_expire_time ON Cache (expire_time)"),
        ("index", "Cache_store_time", "Cache", "CREATE INDEX Cache_store_time ON Cache (store_time)"),
        ("index", "Cache_access_time", "Cache", "CREATE INDEX Cache_access_time ON Cache (access_time)"),
        ("index", "Cache_access_count", "Cache", "CREATE INDEX Cache_access_count ON Cache (access_count)"),
        ("index", "Cache_tag_rowid", "Cache", "CREATE INDEX Cache_tag_rowid ON Cache(tag, rowid)"),
        (
            "trigger",
            "Settings_count_insert",
            "Cache",
            "CREATE TRIGGER Settings_count_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN"
            ' UPDATE Settings SET value = value + 1 WHERE key = "count"; END',
        ),
        (
            "trigger",
            "Settings_count_delete",
            "Cache",
            "CREATE TRIGGER Settings_count_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN"
            ' UPDATE Settings SET value = value - 1 WHERE key = "count"; END',
        ),
        (
            "trigger",
            "Settings_size_insert",
            "Cache",
            "CREATE TRIGGER Settings_size_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN"
            ' UPDATE Settings SET value = value + NEW.size WHERE key = "size"; END',
        ),
        (
            "trigger",
            "Settings_size_update",
            "Cache",
            "CREATE TRIGGER Settings_size_update AFTER UPDATE ON Cache FOR EACH ROW BEGIN"
            ' UPDATE Settings SET value = value + NEW.size - OLD.size WHERE key = "size"; END',
        ),
        (
            "trigger",
            "Settings_size_delete",
            "Cache",
            "CREATE TRIGGER Settings_size_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN"
            ' UPDATE Settings SET value = value - OLD.size WHERE key = "size"; END',
        ),
    )
)
_DISKCACHE_NAMES = frozenset(name for _, name, _, _ in _DISKCACHE_SCHEMA)
_RISK_ORDER = {"view": 0, "trigger": 1, "table": 2, "index": 3}


def check_files(directory: Path, root: Path, expected: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """`cache.db` and the files SQLite keeps beside it are each absent or a regular file with
    one name (SQLite follows a link; a hard link is another file's content). Returns cache.db's
    (device, inode), None when absent; with `expected`, it must still be that file.

    `directory` is the cache directory as named (for messages), `root` that directory with
    symlinks resolved when it was opened (where the files are looked at)."""
    identity = None
    for name in _SQLITE_FILES:
        path = root / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise CacheUnavailable(
                f"the cache directory {directory}: cannot look at {path} ({error.strerror or error}). "
                "Make it readable, or point cache_dir= / MYOPTO_CACHE_DIR elsewhere",
                location=str(directory),
            ) from error
        problem = _not_a_plain_file(path, info)
        if problem:
            raise CacheUnavailable(
                f"the cache directory {directory} holds {path}, which {problem}. SQLite would read, "
                "write, create or delete files through it, so myopto does not open this directory; nothing "
                "was changed. If it is a cache of yours, point cache_dir= / MYOPTO_CACHE_DIR at the folder "
                "that holds the file itself (or put a plain copy here); otherwise move this directory aside",
                location=str(directory),
            )
        if name == DATABASE:
            identity = (info.st_dev, info.st_ino)
    if expected is not None and identity != expected:
        raise CacheUnavailable(
            f"the cache directory {directory}: its {DATABASE} was replaced by another file while "
            "myopto had it open, so nothing more is done with it. Something else is changing this "
            "directory; open it again once it is left alone",
            location=str(directory),
        )
    return identity


def _not_a_plain_file(path: Path, info: os.stat_result) -> str | None:
    """What is wrong with a file SQLite would open by name, from its lstat; None when nothing."""
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"is a symlink (to {target!r})"
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a special file"
        )
        return f"is {kind}, not a regular file"
    if info.st_nlink > 1:
        return (
            f"has {info.st_nlink} hard links: the same file has another name, perhaps outside this "
            "directory, and writing here would change it there"
        )
    return None


def inspect_before_writing(directory: Path, root: Path) -> None:
    """An existing cache.db is inspected on a read-only connection first: diskcache's own
    constructor writes (its settings, its `CREATE ... IF NOT EXISTS`), and SQLite would run a
    foreign trigger inside those writes. A connection that cannot open raises OperationalError."""
    database = root / DATABASE
    if not database.exists():
        return
    connection = connect(uri(str(database)) + "?mode=ro")
    try:
        inspect(connection, directory, root)
    finally:
        connection.close()


def inspect(connection: sqlite3.Connection, directory: Path, root: Path) -> None:
    """Refuse a cache.db holding anything diskcache does not write, before any statement that
    could run it: its schema first (reading sqlite_master runs nothing), then, from a table now
    known to be plain, its settings. Bounded in time all the same."""
    deadline = time.monotonic() + _INSPECT_SECONDS
    stopped: list[bool] = []

    def past_deadline() -> bool:
        if time.monotonic() > deadline:
            stopped.append(True)
        return bool(stopped)

    connection.set_progress_handler(past_deadline, 1000)
    try:
        schema = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        _check_schema(schema, directory, root)
        if any(kind == "table" and name == "Settings" for kind, name, _, _ in schema):
            _check_settings(connection.execute("SELECT key, value FROM Settings").fetchall(), directory, root)
    except sqlite3.OperationalError as error:
        if not stopped:
            raise
        raise CacheUnavailable(
            f"the cache directory {directory}: reading the schema and settings of its {DATABASE} "
            f"took over {_INSPECT_SECONDS:g} s, so it was not opened. Nothing was changed; move it aside or "
            "point cache_dir= / MYOPTO_CACHE_DIR elsewhere",
            location=str(directory),
        ) from error
    finally:
        connection.set_progress_handler(None, 0)


def _check_schema(schema: list[tuple[Any, ...]], directory: Path, root: Path) -> None:
    """Only diskcache's own tables, indexes and triggers, each exactly as diskcache writes it."""
    found = sorted(
        (row for row in schema if (*row[:3], _normal_sql(row[3])) not in _DISKCACHE_SCHEMA),
        key=lambda row: _RISK_ORDER.get(row[0], 0),
    )  # what runs code first
    foreign = [_describe(kind, name, table) for kind, name, table, _ in found]
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise CacheUnavailable(
            f"the cache directory {directory} holds a {root / DATABASE} with "
            f"{', '.join(foreign[:5])}{more}, which diskcache never creates (SQLite runs a trigger or a view "
            "inside myopto's own reads and writes). Nothing was run and nothing was changed: this directory was "
            "not written by myopto; move it aside or point cache_dir= / MYOPTO_CACHE_DIR elsewhere",
            location=str(directory),
        )


def _check_settings(settings: list[tuple[Any, Any]], directory: Path, root: Path) -> None:
    """A foreign cache.db's settings become SQLite pragmas when diskcache opens it: only
    diskcache's own are let through (e.g. `temp_store_directory` would point SQLite outside),
    and a pragma's value only as a number or a word (it is pasted into the statement)."""
    unknown = sorted(repr(str(key)[:60]) for key, _ in settings if key not in _DISKCACHE_SETTINGS)
    odd = sorted(
        f"{str(key)[:30]}={str(value)[:30]!r}"
        for key, value in settings
        if str(key).startswith("sqlite_")
        and key in _DISKCACHE_SETTINGS
        and not (isinstance(value, int) or (isinstance(value, str) and _SETTING_WORD.fullmatch(value)))
    )
    if unknown or odd:
        what = (
            f"settings diskcache never writes ({', '.join(unknown[:5])})"
            if unknown
            else f"settings with values diskcache never writes ({', '.join(odd[:5])})"
        )
        raise CacheUnavailable(
            f"the cache directory {directory} holds a {root / DATABASE} with {what}; myopto does "
            "not apply them. Nothing was changed: this directory was not written by myopto; move it aside "
            "or point cache_dir= / MYOPTO_CACHE_DIR elsewhere",
            location=str(directory),
        )


def _describe(kind: Any, name: Any, table: Any) -> str:
    """A schema object for a message: `a trigger 'p' on Cache`."""
    described = f"{'an' if kind == 'index' else 'a'} {str(kind)[:10]} {str(name)[:60]!r}"
    if kind in ("index", "trigger"):
        described += f" on {str(table)[:60]}"
    return described + (" unlike diskcache's own" if name in _DISKCACHE_NAMES else "")


def not_a_database(directory: Path, error: Exception) -> CacheUnavailable:
    """The error for a cache.db SQLite cannot read as a database (nothing is deleted)."""
    return CacheUnavailable(
        f"the cache directory {directory} holds a {directory / DATABASE} that is not a "
        f"usable SQLite database ({error}). Nothing was deleted: move that directory aside (or "
        "delete it if it holds nothing you need), or point MYOPTO_CACHE_DIR / cache_dir= elsewhere",
        location=str(directory),
    )


# -- connections -------------------------------------------------------------------------------
def connect_read_only(path: str) -> sqlite3.Connection:
    """A read-only connection to an existing SQLite file (never creates or changes it)."""
    address = uri(path)
    try:
        return connect(address + "?mode=ro")
    except sqlite3.OperationalError:  # no -shm file and none can be made: read the file alone
        if os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 0:
            _log.warning(
                "%s-wal holds writes not yet merged into %s, and this read-only copy cannot merge "
                "them: entries recorded last may be missing",
                path,
                path,
            )
        return connect(address + "?immutable=1")


def uri(path: str) -> str:
    """The `file:` URI of a path, for `connect`."""
    return "file:" + quote(os.path.abspath(path))


def connect(address: str) -> sqlite3.Connection:
    """A connection to a `file:` URI, opened now (SQLite opens lazily): an error raises here."""
    connection = sqlite3.connect(address, uri=True, check_same_thread=False)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchall()  # opening is lazy: open now
    except BaseException:
        connection.close()
        raise
    return connection
