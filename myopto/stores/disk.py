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

Its parts: `safe_disk` keeps the value files inside (and never unpickles), `cache_db` checks
`cache.db` before SQLite runs anything on it, `disk_database` opens it (read-only when it must).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from myopto.errors import CacheUnavailable, DamagedCacheEntry
from myopto.stores.cache_db import DATABASE, check_files, connect_read_only
from myopto.stores.disk_database import ReadOnlyDatabase, disk_is_full, make_directory, open_database
from myopto.stores.memory import DEFAULT_MEMORY_BYTES, DEFAULT_MEMORY_ENTRIES, MemoryFronted, MemoryLRU, damaged_entry
from myopto.stores.safe_disk import UnsafeCacheEntry as UnsafeCacheEntry


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
        make_directory(self.directory)
        # followed once, here: a directory linked to another disk is the user's own choice, and
        # where the link points later changes nothing for this store
        self.root = Path(os.path.realpath(self.directory))
        opened = open_database(self.directory, self.root, size_limit)
        self._cache: Any = opened.cache  # diskcache's Cache; None when read-only
        self._reader: ReadOnlyDatabase | None = opened.reader
        self._identity = opened.identity
        self.writable = opened.cache is not None
        self.read_only_reason: str | None = opened.read_only_reason
        self.memory = MemoryLRU(memory_entries, memory_bytes)
        self._lock = threading.Lock()
        self.disk_hits = 0
        self.misses = 0

    # -- the store interface -------------------------------------------------------------------
    @property
    def _database(self) -> Any:
        """diskcache's `Cache`, or the read-only reader when the directory cannot be written."""
        return self._cache if self._cache is not None else self._reader

    def _read(self, key: str) -> str | bytes | None:
        try:
            text: str | bytes | None = self._database.get(key)  # bytes: a value kept in its own file
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
            full = disk_is_full(self.root)
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
        check_files(self.directory, self.root, self._identity)
        connection = connect_read_only(str(self.root / DATABASE))
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
        check_files(self.directory, self.root, self._identity)  # never clear a file swapped in since it was opened
        self.memory.clear()
        removed: int = self._cache.clear()
        return removed

    def close(self) -> None:
        self._database.close()


_stores: dict[str, DiskStore] = {}
_stores_lock = threading.Lock()


def close_disk_stores(under: str | Path | None = None) -> int:
    """Close the process's stores of the directories under `under` (all of them when None), and
    forget them: a later call for one of those directories opens it afresh. Returns how many.
    For a long process that is done with a cache folder (and the suite, after each test)."""
    root = None if under is None else Path(under).expanduser().resolve()
    with _stores_lock:
        chosen = [path for path in _stores if root is None or Path(path).is_relative_to(root)]
        closing = [_stores.pop(path) for path in chosen]
    for store in closing:
        store.close()
    return len(closing)


def disk_store(directory: str | Path, size_limit: int | None = None) -> DiskStore:
    """The process-wide store of a directory (roles sharing a directory share its memory and flights)."""
    path = str(Path(directory).expanduser().resolve())
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = DiskStore(path, size_limit=size_limit)
        return store
