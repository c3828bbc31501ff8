"""`DiskStore`: cached answers in a diskcache directory, one machine's default store.

A cache directory is data, never authority, also when it comes from someone else:
- values are JSON text, never pickle: `SafeDisk` refuses to unpickle anything it finds, so the
  directory cannot run code;
- diskcache keeps large values in files and names them in `cache.db`; `SafeDisk` only reads,
  writes or removes a file whose name has diskcache's own form (`ab/cd/<28 hex>.val`) and whose
  path, symlinks resolved, is that same path inside the directory. A row naming anything else
  (`../x`, an absolute path, a symlink, a FIFO) is refused: a read raises `DamagedCacheEntry`,
  an overwrite or `clear()` leaves that file alone; empty folders are removed only inside;
- its `Settings` table may only hold diskcache's own settings (they become SQLite pragmas), each
  a number or a word;
- `cache.db` and the files SQLite keeps beside it (`-wal`, `-shm`, `-journal`) must be regular
  files with one name: SQLite opens them by name and follows a symlink (writing, creating and
  deleting where it leads) and a hard link is another file's content. Anything else is refused
  when the directory is opened, and checked again once SQLite has it open (still the same file);
- its schema must be exactly diskcache's own tables, indexes and triggers (type, name and SQL):
  a trigger or a view someone added would run inside myopto's own reads and writes. It is read
  from `sqlite_master` on a read-only connection before any other statement, and refused with
  nothing run and nothing changed.

The directory itself may be a symlink (a cache kept on another disk): it is resolved once, when
opened, and every file is opened inside the folder it led to then. The checks are made when the
directory is opened (and before `clear()` and an export), never per lookup; a directory that
someone else can change while you use it is theirs to rewrite, and is not defended against.

A directory that cannot be written (a read-only mount; a full disk when it is opened) is opened
read-only: `writable` is False, every entry is served, and writes raise `CacheUnavailable`.
A write that fails (the disk filled up) raises `CacheUnavailable` naming the directory. Nothing
is evicted unless a size limit is set. A directory whose database is damaged is reported with
its path and never deleted.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from myopto.errors import CacheUnavailable, DamagedCacheEntry
from myopto.stores.memory import DEFAULT_MEMORY_BYTES, DEFAULT_MEMORY_ENTRIES, MemoryFronted, MemoryLRU, damaged_entry

_log = logging.getLogger("myopto.cache")
DATABASE = "cache.db"
# the only value file names diskcache makes (Disk.filename): two folder levels, a random name
_VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")
_MODE_RAW, _MODE_BINARY, _MODE_TEXT, _MODE_PICKLE = 1, 2, 3, 4
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


class UnsafeCacheEntry(DamagedCacheEntry):
    """A cache entry myopto will not read: stored as pickle (unpickling could run code), or
    naming a file outside the cache directory. A `DamagedCacheEntry`: the cache middleware
    treats it as a miss, and `replay` raises it."""


@functools.cache
def _safe_disk() -> type:
    import diskcache

    class SafeDisk(diskcache.Disk):
        """diskcache's Disk that never unpickles and never touches a file outside its directory."""

        def __init__(self, directory: str, **settings: Any) -> None:
            super().__init__(directory, **settings)
            self.root = os.path.realpath(directory)
            self.refused_removals = 0

        def get(self, key: Any, raw: bool) -> Any:
            if not raw:
                raise UnsafeCacheEntry("refusing to unpickle a cache key; this directory was not written by myopto")
            return super().get(key, raw)

        def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
            if mode == _MODE_RAW:
                return super().fetch(mode, filename, value, read)
            if mode == _MODE_PICKLE:
                raise UnsafeCacheEntry("refusing to unpickle a cache value; this directory was not written by myopto")
            if mode not in (_MODE_TEXT, _MODE_BINARY) or read:
                raise UnsafeCacheEntry(f"its row has storage mode {mode!r}, which myopto never writes")
            return self._read_inside(filename)

        def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> tuple[int, int, Any, Any]:
            """Text only (myopto stores JSON text); a large one goes to a new file inside."""
            if read or not isinstance(value, str):
                raise TypeError(f"myopto stores JSON text only, got {type(value).__name__}")
            if len(value) < self.min_file_size:
                return 0, _MODE_RAW, None, value
            filename, _ = self.filename(key, value)
            data = value.encode("utf-8")
            self._write_inside(filename, data)
            return len(data), _MODE_TEXT, filename, None

        def remove(self, file_path: Any) -> None:
            """Remove a value file (and the emptied folders above it, up to the directory), only
            when it is one of ours inside; anything else a row names is left alone."""
            if file_path is None:
                return
            try:
                full = self._inside(file_path)
            except UnsafeCacheEntry as refused:
                self.refused_removals += 1
                _log.warning("cache directory %s: not removing %r: %s", self.root, file_path, refused)
                return
            try:
                os.remove(full)
            except OSError:  # another process removed it first
                pass
            parent = os.path.dirname(full)
            for folder in (parent, os.path.dirname(parent)):  # ab/cd, then ab: never above
                try:
                    os.rmdir(folder)
                except OSError:  # not empty, or gone
                    break

        # -- paths ---------------------------------------------------------------------------
        def _inside(self, filename: Any) -> str:
            """The full path of a value file named in a row, when it is diskcache's kind of name
            and resolves to itself inside the directory (no `..`, no absolute path, no symlink)."""
            if not isinstance(filename, str) or not _VALUE_FILE.fullmatch(filename.replace(os.sep, "/")):
                raise UnsafeCacheEntry(f"its row names the file {filename!r}, which is not a cache value file")
            full = os.path.join(self.root, *filename.replace(os.sep, "/").split("/"))
            if os.path.realpath(full) != full:
                raise UnsafeCacheEntry(
                    f"its value file {filename!r} is reached through a symlink (it resolves to "
                    f"{os.path.realpath(full)!r}); myopto never follows links out of a cache directory"
                )
            return full

        def _read_inside(self, filename: Any) -> bytes:
            full = self._inside(filename)
            # no link at the last step, and a FIFO must not block the open
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
            fd = os.open(full, flags)  # OSError when gone: diskcache reads that as a miss
            with os.fdopen(fd, "rb") as reader:
                if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
                    raise UnsafeCacheEntry(f"its value file {filename!r} is not a regular file")
                return reader.read()  # bytes: `decode_record` reads them as UTF-8 JSON

        def _write_inside(self, filename: str, data: bytes) -> None:
            """Write a new value file, creating its two folders, never through a symlink."""
            parts = filename.replace(os.sep, "/").split("/")
            folder = self.root
            for part in parts[:-1]:
                folder = os.path.join(folder, part)
                try:
                    os.mkdir(folder)
                except FileExistsError:
                    if not stat.S_ISDIR(os.lstat(folder).st_mode):
                        raise CacheUnavailable(
                            f"the cache directory {self.root} holds {folder}, which is not a folder (a "
                            "symlink?); myopto never writes through it. Remove it, or use another cache_dir",
                            location=self.root,
                        ) from None
            full = os.path.join(folder, parts[-1])
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                with os.fdopen(fd, "wb") as writer:
                    writer.write(data)
            except BaseException:
                try:  # a half-written file (a full disk) is nobody's value
                    os.remove(full)
                except OSError:
                    pass
                raise

    return SafeDisk


class _ReadOnlyDatabase:
    """The reading side of a diskcache directory over a read-only SQLite connection.

    For a directory that cannot be written: diskcache's own `Cache` writes its settings on open.
    `mode=ro` reads a database whose write-ahead log is there; where SQLite cannot even create
    the shared-memory file (a read-only mount), `immutable=1` reads the database file alone.
    """

    def __init__(self, directory: str, disk: Any) -> None:
        self._disk = disk
        self._lock = threading.Lock()
        self.connection = _connect_read_only(os.path.join(directory, DATABASE))

    def _rows(self, query: str, arguments: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.connection.execute(query, arguments).fetchall()

    def get(self, key: str) -> Any:
        rows = self._rows(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1 "
            "AND (expire_time IS NULL OR expire_time > ?)",
            (key, time.time()),
        )
        if not rows:
            return None
        mode, filename, value = rows[0]
        try:
            return self._disk.fetch(mode, filename, value, False)
        except OSError:  # its value file is gone: as diskcache does, a miss
            return None

    def __len__(self) -> int:
        return self._rows("SELECT count(*) FROM Cache")[0][0]

    def volume(self) -> int:
        pages = self._rows("PRAGMA page_count")[0][0] * self._rows("PRAGMA page_size")[0][0]
        return pages + (self._rows("SELECT coalesce(sum(size), 0) FROM Cache")[0][0] or 0)

    def close(self) -> None:
        self.connection.close()


def _connect_read_only(path: str) -> sqlite3.Connection:
    """A read-only connection to an existing SQLite file (never creates or changes it)."""
    uri = _uri(path)
    try:
        return _connect(uri + "?mode=ro")
    except sqlite3.OperationalError:  # no -shm file and none can be made: read the file alone
        if os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 0:
            _log.warning(
                "%s-wal holds writes not yet merged into %s, and this read-only copy cannot merge "
                "them: entries recorded last may be missing",
                path,
                path,
            )
        return _connect(uri + "?immutable=1")


def _uri(path: str) -> str:
    return "file:" + quote(os.path.abspath(path))


def _connect(uri: str) -> sqlite3.Connection:
    connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchall()  # opening is lazy: open now
    except BaseException:
        connection.close()
        raise
    return connection


class DiskStore(MemoryFronted):
    """A diskcache directory holding one JSON record per key, with an in-memory LRU in front.

    Safe for many threads and many processes writing one directory (SQLite transactions).
    `size_limit` (bytes) turns on least-recently-stored eviction; by default nothing is evicted.
    `writable` is False when the directory could only be opened read-only (`read_only_reason`
    says why). `memory_entries` and `memory_bytes` bound the memory front. `root` is the
    directory with symlinks resolved when it was opened: every file is opened inside it.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        size_limit: int | None = None,
        memory_entries: int = DEFAULT_MEMORY_ENTRIES,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.location = str(self.directory)
        self.writable = True
        self.read_only_reason: str | None = None
        self._cache: Any = None
        self._reader: _ReadOnlyDatabase | None = None
        _make_directory(self.directory)
        # followed once, here: a directory linked to another disk is the user's own choice, and
        # where the link points later changes nothing for this store
        self.root = Path(os.path.realpath(self.directory))
        self._identity = self._check_files()
        disk = _safe_disk()
        if _can_write(self.root, self.root / DATABASE):
            try:
                self._inspect_before_writing()
                self._cache = _open_diskcache(self.root, disk, size_limit)
            except sqlite3.DatabaseError as error:
                if not isinstance(error, sqlite3.OperationalError):
                    raise self._not_a_database(error) from error
                self._open_read_only(disk, _unwritable(self.root, error))
            except OSError as error:
                self._open_read_only(disk, _unwritable(self.root, error))
            else:
                try:
                    self._identity = self._check_files(self._identity)
                except CacheUnavailable:
                    self._cache.close()
                    raise
        else:
            self._open_read_only(disk, "a read-only filesystem, or no permission to write it")
        self.memory = MemoryLRU(memory_entries, memory_bytes)
        self._lock = threading.Lock()
        self.disk_hits = 0
        self.misses = 0

    # -- opening -------------------------------------------------------------------------------
    def _open_read_only(self, disk: type, reason: str) -> None:
        database = self.root / DATABASE
        if not database.exists():
            raise CacheUnavailable(
                f"the cache directory {self.directory} cannot be written ({reason}) and holds no {DATABASE}, "
                "so there is nothing to replay and nothing could be recorded. Point cache_dir= / "
                "MYOPTO_CACHE_DIR at a writable directory (or at the folder that holds the cache you meant)",
                location=self.location,
            )
        try:
            self._reader = _ReadOnlyDatabase(str(self.root), disk(str(self.root)))
        except sqlite3.DatabaseError as error:
            raise self._unreadable(reason, error) from error
        try:
            self._identity = self._check_files(self._identity)
            self._inspect(self._reader.connection)
            len(self._reader)
        except sqlite3.DatabaseError as error:
            self._reader.close()
            raise self._unreadable(reason, error) from error
        except BaseException:
            self._reader.close()
            raise
        self.writable = False
        self.read_only_reason = reason
        _log.info("cache directory %s opened read-only: %s", self.directory, reason)

    def _unreadable(self, reason: str, error: sqlite3.DatabaseError) -> CacheUnavailable:
        if not isinstance(error, sqlite3.OperationalError):
            return self._not_a_database(error)
        return CacheUnavailable(
            f"the cache directory {self.directory} cannot be written ({reason}), and reading it read-only "
            f"failed too ({error}). Nothing was changed. Free space or make it writable, or point "
            "cache_dir= / MYOPTO_CACHE_DIR elsewhere",
            location=self.location,
        )

    def _check_files(self, expected: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """`cache.db` and the files SQLite keeps beside it are each absent or a regular file with
        one name (SQLite follows a link; a hard link is another file's content). Returns cache.db's
        (device, inode), None when absent; with `expected`, it must still be that file."""
        identity = None
        for name in _SQLITE_FILES:
            path = self.root / name
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as error:
                raise CacheUnavailable(
                    f"the cache directory {self.directory}: cannot look at {path} ({error.strerror or error}). "
                    "Make it readable, or point cache_dir= / MYOPTO_CACHE_DIR elsewhere",
                    location=self.location,
                ) from error
            problem = _not_a_plain_file(path, info)
            if problem:
                raise CacheUnavailable(
                    f"the cache directory {self.directory} holds {path}, which {problem}. SQLite would read, "
                    "write, create or delete files through it, so myopto does not open this directory; nothing "
                    "was changed. If it is a cache of yours, point cache_dir= / MYOPTO_CACHE_DIR at the folder "
                    "that holds the file itself (or put a plain copy here); otherwise move this directory aside",
                    location=self.location,
                )
            if name == DATABASE:
                identity = (info.st_dev, info.st_ino)
        if expected is not None and identity != expected:
            raise CacheUnavailable(
                f"the cache directory {self.directory}: its {DATABASE} was replaced by another file while "
                "myopto had it open, so nothing more is done with it. Something else is changing this "
                "directory; open it again once it is left alone",
                location=self.location,
            )
        return identity

    def _inspect_before_writing(self) -> None:
        """An existing cache.db is inspected on a read-only connection first: diskcache's own
        constructor writes (its settings, its `CREATE ... IF NOT EXISTS`), and SQLite would run a
        foreign trigger inside those writes. A connection that cannot open raises OperationalError."""
        database = self.root / DATABASE
        if not database.exists():
            return
        connection = _connect(_uri(str(database)) + "?mode=ro")
        try:
            self._inspect(connection)
        finally:
            connection.close()

    def _inspect(self, connection: sqlite3.Connection) -> None:
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
            self._check_schema(schema)
            if any(kind == "table" and name == "Settings" for kind, name, _, _ in schema):
                self._check_settings(connection.execute("SELECT key, value FROM Settings").fetchall())
        except sqlite3.OperationalError as error:
            if not stopped:
                raise
            raise CacheUnavailable(
                f"the cache directory {self.directory}: reading the schema and settings of its {DATABASE} "
                f"took over {_INSPECT_SECONDS:g} s, so it was not opened. Nothing was changed; move it aside or "
                "point cache_dir= / MYOPTO_CACHE_DIR elsewhere",
                location=self.location,
            ) from error
        finally:
            connection.set_progress_handler(None, 0)

    def _check_schema(self, schema: list[tuple[Any, ...]]) -> None:
        """Only diskcache's own tables, indexes and triggers, each exactly as diskcache writes it."""
        found = sorted(
            (row for row in schema if (*row[:3], _normal_sql(row[3])) not in _DISKCACHE_SCHEMA),
            key=lambda row: _RISK_ORDER.get(row[0], 0),
        )  # what runs code first
        foreign = [_describe(kind, name, table) for kind, name, table, _ in found]
        if foreign:
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise CacheUnavailable(
                f"the cache directory {self.directory} holds a {self.root / DATABASE} with "
                f"{', '.join(foreign[:5])}{more}, which diskcache never creates (SQLite runs a trigger or a view "
                "inside myopto's own reads and writes). Nothing was run and nothing was changed: this directory was "
                "not written by myopto; move it aside or point cache_dir= / MYOPTO_CACHE_DIR elsewhere",
                location=self.location,
            )

    def _check_settings(self, settings: list[tuple[Any, Any]]) -> None:
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
                f"the cache directory {self.directory} holds a {self.root / DATABASE} with {what}; myopto does "
                "not apply them. Nothing was changed: this directory was not written by myopto; move it aside "
                "or point cache_dir= / MYOPTO_CACHE_DIR elsewhere",
                location=self.location,
            )

    def _not_a_database(self, error: Exception) -> CacheUnavailable:
        return CacheUnavailable(
            f"the cache directory {self.directory} holds a {self.directory / DATABASE} that is not a "
            f"usable SQLite database ({error}). Nothing was deleted: move that directory aside (or "
            "delete it if it holds nothing you need), or point MYOPTO_CACHE_DIR / cache_dir= elsewhere",
            location=self.location,
        )

    # -- the store interface -------------------------------------------------------------------
    @property
    def _database(self) -> Any:
        """diskcache's `Cache`, or the read-only reader when the directory cannot be written."""
        return self._cache if self._cache is not None else self._reader

    def _read(self, key: str) -> str | None:
        try:
            text = self._database.get(key)
        except UnsafeCacheEntry as refused:
            raise damaged_entry(key, self.location, str(refused), kind=UnsafeCacheEntry) from None
        with self._lock:
            if text is None:
                self.misses += 1
            else:
                self.disk_hits += 1
        return text

    def _write(self, key: str, text: str) -> None:
        if self._cache is None:
            raise CacheUnavailable(
                f"the cache directory {self.directory} is read-only here ({self.read_only_reason}): its answers "
                "are served, nothing new can be recorded. Use cache='read_only' or 'replay', or point "
                "cache_dir= / MYOPTO_CACHE_DIR at a writable directory",
                location=self.location,
            )
        import diskcache

        try:
            self._cache.set(key, text)
        except (sqlite3.Error, OSError, diskcache.Timeout) as error:
            full = _disk_is_full(self.root)
            raise CacheUnavailable(
                f"could not store an answer in the cache directory {self.directory}"
                f"{': the disk holding it is full' if full else ''} ({type(error).__name__}: {error})",
                location=self.location,
            ) from error

    def items(
        self, *, on_damaged: Callable[[DamagedCacheEntry], None] | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (key, record). A damaged one raises `DamagedCacheEntry`, or, with `on_damaged`,
        is handed to it and skipped (an export goes on past it)."""
        for key, raw in self._keys():
            try:
                if not raw or not isinstance(key, str):
                    problem = "a pickled key" if not raw else f"a {type(key).__name__} key"
                    raise damaged_entry(
                        str(key), self.location, f"{problem}, which myopto never writes", kind=UnsafeCacheEntry
                    )
                text = self._read(key)
                if text is None:  # removed meanwhile
                    continue
                record = self._remember(key, text)
            except DamagedCacheEntry as damage:
                if on_damaged is None:
                    raise
                on_damaged(damage)
                continue
            yield key, record

    def _keys(self) -> list[tuple[Any, int]]:
        """Every stored key with its raw flag, in the order stored (read in one go, so a writer
        meanwhile does not disturb the listing)."""
        reader = self._reader
        if reader is not None:
            return [(key, raw) for key, raw in reader.connection.execute("SELECT key, raw FROM Cache ORDER BY rowid")]
        self._check_files(self._identity)
        connection = _connect_read_only(str(self.root / DATABASE))
        try:
            return list(connection.execute("SELECT key, raw FROM Cache ORDER BY rowid"))
        finally:
            connection.close()

    def __len__(self) -> int:
        return len(self._database)

    def stats(self) -> dict[str, Any]:
        volume = self._database.volume()
        stats: dict[str, Any] = {
            "directory": str(self.directory),
            "entries": len(self),
            "size_bytes": volume,
            "writable": self.writable,
            "memory_entries": len(self.memory),
            "memory_bytes": self.memory.size_bytes,
            "memory_hits": self.memory.hits,
            "disk_hits": self.disk_hits,
            "misses": self.misses,
        }
        if self.read_only_reason:
            stats["read_only_reason"] = self.read_only_reason
        return stats

    @property
    def refused_removals(self) -> int:
        """Files named by rows that `clear()` or an overwrite left alone (not ours, or outside)."""
        return self._cache.disk.refused_removals if self._cache is not None else 0

    def clear(self) -> int:
        if self._cache is None:
            raise CacheUnavailable(
                f"the cache directory {self.directory} is read-only here ({self.read_only_reason}); nothing was "
                "removed",
                location=self.location,
            )
        self._check_files(self._identity)  # never clear a file swapped in since it was opened
        self.memory.clear()
        return self._cache.clear()

    def close(self) -> None:
        self._database.close()


def _make_directory(directory: Path) -> None:
    """The cache directory exists (made when missing), or `CacheUnavailable` says what to fix."""
    if directory.is_dir():
        return
    if directory.exists() or directory.is_symlink():
        raise CacheUnavailable(
            f"the cache directory {directory} is a file, not a directory (or a link to nothing). Point "
            "cache_dir= / MYOPTO_CACHE_DIR at a directory (it is created when missing)",
            location=str(directory),
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CacheUnavailable(
            f"the cache directory {directory} does not exist and cannot be created ({error.strerror or error}). "
            "Create it, or point cache_dir= / MYOPTO_CACHE_DIR at a directory you can write",
            location=str(directory),
        ) from error


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


def _describe(kind: Any, name: Any, table: Any) -> str:
    """A schema object for a message: `a trigger 'p' on Cache`."""
    described = f"{'an' if kind == 'index' else 'a'} {str(kind)[:10]} {str(name)[:60]!r}"
    if kind in ("index", "trigger"):
        described += f" on {str(table)[:60]}"
    return described + (" unlike diskcache's own" if name in _DISKCACHE_NAMES else "")


def _can_write(directory: Path, database: Path) -> bool:
    """Whether this process may write the directory (False on a read-only mount, even as root)."""
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    return not database.exists() or os.access(database, os.W_OK)


def _open_diskcache(directory: Path, disk: type, size_limit: int | None) -> Any:
    import diskcache

    # every setting spelled out: none is taken from a cache.db someone else wrote
    settings: dict[str, Any] = {
        **diskcache.DEFAULT_SETTINGS,
        "statistics": 0,
        "tag_index": 0,
        "eviction_policy": "none",
        "size_limit": 2**62,
    }
    if size_limit is not None:
        settings.update(eviction_policy="least-recently-stored", size_limit=int(size_limit))
    return diskcache.Cache(str(directory), disk=disk, **settings)


def _disk_is_full(directory: Path) -> bool:
    try:
        return os.statvfs(directory).f_bavail == 0
    except (OSError, AttributeError):  # no statvfs on Windows
        return False


def _unwritable(directory: Path, error: BaseException) -> str:
    """Why a directory that looked writable could not be opened for writing."""
    return (
        f"the disk holding it is full ({error})"
        if _disk_is_full(directory)
        else f"opening it for writing failed ({error})"
    )


_stores: dict[str, DiskStore] = {}
_stores_lock = threading.Lock()


def disk_store(directory: str | Path, size_limit: int | None = None) -> DiskStore:
    """The process-wide store of a directory (roles sharing a directory share its memory and flights)."""
    path = str(Path(directory).expanduser().resolve())
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = DiskStore(path, size_limit=size_limit)
        return store
