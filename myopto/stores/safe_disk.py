"""`SafeDisk`: diskcache's `Disk` for a cache directory that is data, never authority.

diskcache unpickles what it finds and keeps large values in files named in `cache.db`. This
`Disk` never unpickles (myopto's values are JSON text; anything else is an `UnsafeCacheEntry`)
and only reads, writes or removes a file whose name has diskcache's own form
(`ab/cd/<28 hex>.val`) and whose path, symlinks resolved, is that same path inside the
directory. A row naming anything else (`../x`, an absolute path, a symlink, a FIFO) is refused:
a read raises `UnsafeCacheEntry`, an overwrite or `clear()` leaves that file alone (and counts it
in `refused_removals`); empty folders are removed only inside. The whole promise of a cache
directory is in `myopto.stores.disk`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import stat
from typing import Any

from myopto.errors import CacheUnavailable, DamagedCacheEntry

_log = logging.getLogger("myopto.cache")
# the only value file names diskcache makes (Disk.filename): two folder levels, a random name
_VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")
_MODE_RAW, _MODE_BINARY, _MODE_TEXT, _MODE_PICKLE = 1, 2, 3, 4


class UnsafeCacheEntry(DamagedCacheEntry):
    """A cache entry myopto will not read: stored as pickle (unpickling could run code), or
    naming a file outside the cache directory. A `DamagedCacheEntry`: the cache middleware
    treats it as a miss, and `replay` raises it."""


@functools.cache
def safe_disk() -> type:
    """The `SafeDisk` class (made on first use: diskcache is imported only then)."""
    import diskcache

    class SafeDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache has no type information: its Disk is Any
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
            with contextlib.suppress(OSError):  # another process removed it first
                os.remove(full)
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
                with contextlib.suppress(OSError):  # a half-written file (a full disk) is nobody's value
                    os.remove(full)
                raise

    return SafeDisk
