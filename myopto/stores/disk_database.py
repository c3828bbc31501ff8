"""Opening the database under a `DiskStore`: for writing when its directory can be, read-only when not.

The directory is made when missing. When it can be written, its `cache.db` is inspected on a
read-only connection (`cache_db.inspect_before_writing`) and then opened as diskcache's own
`Cache`, every setting spelled out (none is taken from a cache.db someone else wrote). When it
cannot (a read-only mount, no permission; a full disk when it is opened), it is served by a
`ReadOnlyDatabase` over a read-only SQLite connection, and the reason is kept. Either way the
files SQLite opens are checked before (`cache_db.check_files`) and once SQLite has them open
(still the same file). A directory whose database is damaged is reported with its path and never
deleted.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from myopto.errors import CacheUnavailable
from myopto.stores.cache_db import (
    DATABASE,
    check_files,
    connect_read_only,
    inspect,
    inspect_before_writing,
    not_a_database,
)
from myopto.stores.safe_disk import safe_disk

_log = logging.getLogger("myopto.cache")


class OpenedDatabase(NamedTuple):
    """What `open_database` opened: diskcache's `Cache` (`cache`) or, when the directory cannot be
    written, a `reader` and the `read_only_reason`; `identity` is cache.db's (device, inode)."""

    cache: Any
    reader: ReadOnlyDatabase | None
    identity: tuple[int, int] | None
    read_only_reason: str | None


def open_database(directory: Path, root: Path, size_limit: int | None) -> OpenedDatabase:
    """The database of a cache directory (`directory` as named, `root` with links resolved):
    for writing when it can be, read-only when not; `CacheUnavailable` when neither works."""
    identity = check_files(directory, root)
    disk = safe_disk()
    if not _can_write(root, root / DATABASE):
        return _open_read_only(directory, root, disk, identity, "a read-only filesystem, or no permission to write it")
    try:
        inspect_before_writing(directory, root)
        cache = _open_diskcache(root, disk, size_limit)
    except sqlite3.DatabaseError as error:
        if not isinstance(error, sqlite3.OperationalError):
            raise not_a_database(directory, error) from error
        return _open_read_only(directory, root, disk, identity, _unwritable(root, error))
    except OSError as error:
        return _open_read_only(directory, root, disk, identity, _unwritable(root, error))
    try:
        identity = check_files(directory, root, identity)
    except CacheUnavailable:
        cache.close()
        raise
    return OpenedDatabase(cache, None, identity, None)


def _open_read_only(
    directory: Path, root: Path, disk: type, identity: tuple[int, int] | None, reason: str
) -> OpenedDatabase:
    if not (root / DATABASE).exists():
        raise CacheUnavailable(
            f"the cache directory {directory} cannot be written ({reason}) and holds no {DATABASE}, "
            "so there is nothing to replay and nothing could be recorded. Point cache_dir= / "
            "MYOPTO_CACHE_DIR at a writable directory (or at the folder that holds the cache you meant)",
            location=str(directory),
        )
    try:
        reader = ReadOnlyDatabase(str(root), disk(str(root)))
    except sqlite3.DatabaseError as error:
        raise _unreadable(directory, reason, error) from error
    try:
        identity = check_files(directory, root, identity)
        inspect(reader.connection, directory, root)
        len(reader)
    except sqlite3.DatabaseError as error:
        reader.close()
        raise _unreadable(directory, reason, error) from error
    except BaseException:
        reader.close()
        raise
    _log.info("cache directory %s opened read-only: %s", directory, reason)
    return OpenedDatabase(None, reader, identity, reason)


def _unreadable(directory: Path, reason: str, error: sqlite3.DatabaseError) -> CacheUnavailable:
    if not isinstance(error, sqlite3.OperationalError):
        return not_a_database(directory, error)
    return CacheUnavailable(
        f"the cache directory {directory} cannot be written ({reason}), and reading it read-only "
        f"failed too ({error}). Nothing was changed. Free space or make it writable, or point "
        "cache_dir= / MYOPTO_CACHE_DIR elsewhere",
        location=str(directory),
    )


class ReadOnlyDatabase:
    """The reading side of a diskcache directory over a read-only SQLite connection.

    For a directory that cannot be written: diskcache's own `Cache` writes its settings on open.
    `mode=ro` reads a database whose write-ahead log is there; where SQLite cannot even create
    the shared-memory file (a read-only mount), `immutable=1` reads the database file alone.
    """

    def __init__(self, directory: str, disk: Any) -> None:
        self._disk = disk
        self._lock = threading.Lock()
        self.connection = connect_read_only(os.path.join(directory, DATABASE))

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
        count: int = self._rows("SELECT count(*) FROM Cache")[0][0]
        return count

    def volume(self) -> int:
        pages: int = self._rows("PRAGMA page_count")[0][0] * self._rows("PRAGMA page_size")[0][0]
        values: int = self._rows("SELECT coalesce(sum(size), 0) FROM Cache")[0][0] or 0
        return pages + values

    def close(self) -> None:
        self.connection.close()


def make_directory(directory: Path) -> None:
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


def disk_is_full(directory: Path) -> bool:
    """Whether the disk holding `directory` has no space left (False when that cannot be told)."""
    try:
        return os.statvfs(directory).f_bavail == 0
    except (OSError, AttributeError):  # no statvfs on Windows
        return False


def _unwritable(directory: Path, error: BaseException) -> str:
    """Why a directory that looked writable could not be opened for writing."""
    return (
        f"the disk holding it is full ({error})"
        if disk_is_full(directory)
        else f"opening it for writing failed ({error})"
    )
