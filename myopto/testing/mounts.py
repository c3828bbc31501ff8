"""Run a Python snippet on a real read-only mount or a real small disk, for tests.

`unshare -rm` gives the child an unprivileged user and mount namespace of its own (no root
needed, nothing changes outside it), where it can mount a size-limited tmpfs (a disk that fills
up) or bind a directory onto itself read-only (a read-only filesystem: root cannot write there
either, unlike a chmod). The mounts vanish with the child.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping


@functools.cache
def mounts_unavailable() -> str | None:
    """Why this machine cannot make such mounts (for a skip reason), or None when it can."""
    try:
        done = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`unshare -rm` cannot run here: {error}"
    if done.returncode != 0:
        return f"`unshare -rm true` failed here (no unprivileged user namespaces?): {done.stderr.strip()}"
    return None


def run_mounted(
    code: str,
    *,
    tmpfs: Mapping[str | os.PathLike[str], str] | None = None,
    read_only: Iterable[str | os.PathLike[str]] = (),
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `code` with this interpreter in a mount namespace of its own.

    `tmpfs` maps existing directories to the size of an empty tmpfs mounted on each (`"256k"`);
    `read_only` directories are bound onto themselves read-only, keeping what they hold. The
    loopback network is the parent's, so a test server started by the test is reachable.
    """
    steps = ["set -e"]
    for directory, size in (tmpfs or {}).items():
        steps.append(f"mount -t tmpfs -o size={shlex.quote(size)} tmpfs {shlex.quote(str(directory))}")
    for directory in read_only:
        where = shlex.quote(str(directory))
        steps.append(f"mount --bind {where} {where}")
        steps.append(f"mount -o remount,bind,ro {where}")
    steps.append(f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", "\n".join(steps)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
