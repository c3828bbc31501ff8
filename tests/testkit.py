"""What several test modules share: pointing a role at the test server (with a disk or Redis cache
or none), a cache folder recorded by a real role, a child Python using a cache folder (in a mount
namespace of its own when asked), child processes that must finish, callers released together, a
small HTTP server on loopback, and a counter of the event loop's turns.

Test modules import it as `from testkit import ...`: pytest puts conftest.py's folder, tests/, on
sys.path, for the test modules in every folder below it too."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from myopto import get_llm, set_role_config
from myopto.stores.disk import disk_store
from myopto.testing.mounts import run_mounted

# The two backends that call over HTTP, each with a model their price maps know.
HTTP_BACKENDS = {"CustomLLM": "gpt-4o-mini", "LiteLLM": "openai/gpt-4o-mini"}

# The fields of a plain answer as it is stored (in a cache record, in `Response.to_dict()`).
PLAIN_ANSWER_FIELDS = {
    "text",
    "model",
    "usage",
    "cost",
    "parsed",
    "cached",
    "latency",
    "finish_reason",
    "id",
    "created",
}


def serve(server: Any, *, role: str = "executor", backend: str = "CustomLLM", model: str = "m", **options: Any) -> None:
    """Point `role` at the test server through `backend` as `model`, with the other role options given."""
    set_role_config(role, backend=backend, model=model, base_url=server.url, **options)


def use_cache(
    server: Any, directory: Path | str, mode: str | None = "on", *, api_key: str | None = "sk-x", **options: Any
) -> None:
    """Point the executor (or `role=`) at the test server with the disk cache in `mode` (None: as
    MYOPTO_CACHE says) at `directory` and no retries: a run that records its answers."""
    serve(server, api_key=api_key, retries=0, cache=mode, cache_dir=str(directory), **options)


def use_redis_cache(
    server: Any, url: str, mode: str | None = "on", *, api_key: str | None = "sk-x", **options: Any
) -> None:
    """`use_cache` with the cache on the Redis server at `url`."""
    serve(server, api_key=api_key, retries=0, cache=mode, cache_url=url, **options)


def record(server: Any, folder: Path, prompts: tuple[str, ...], answer: Callable[[str], str] | None = None) -> None:
    """A real role answers `prompts` into the cache at `folder` (each with `answer(prompt)` queued
    on the server first, if given); then the store is closed, as a finished run leaves it, and the
    server forgets the requests."""
    use_cache(server, folder)
    for prompt in prompts:
        if answer is not None:
            server.reply(answer(prompt))
        get_llm()(prompt)
    disk_store(folder).close()
    server.reset()


def recorded_copy(
    server: Any, tmp_path: Path, prompts: tuple[str, ...], answer: Callable[[str], str] | None = None
) -> Path:
    """A cache folder recorded by someone else's run (see `record`), copied to a path this process
    never opened."""
    record(server, tmp_path / "theirs", prompts, answer)
    folder = tmp_path / "handed-to-me"
    shutil.copytree(tmp_path / "theirs", folder)
    return folder


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`: name and content (a new file, a changed one, a removed one show)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# What a child started by `cache_child` runs first: the executor on the test server (URL) with the
# cache on at DIR, an `out` dict the code fills, and `refused(call)`, the CacheUnavailable message.
CACHE_CHILD = """
import json, os, subprocess, sys
from myopto import CacheUnavailable, get_llm, set_role_config
from myopto.cli import main
from myopto.recording import reset_unrecorded, unrecorded_counts
from myopto.stores.disk import DiskStore, disk_store
DIR = os.environ["DIR"]
set_role_config("executor", backend="CustomLLM", model="m", base_url=os.environ["URL"], api_key="sk-x",
                cache="on", cache_dir=DIR, retries=0)
out = {}
def refused(call):
    try:
        call()
    except CacheUnavailable as error:
        return str(error)
    return "not refused"
"""


def cache_child(
    code: str, folder: Path, server: Any, *, timeout: float = 120, hung: str = "the child hung", **mounts: Any
) -> dict[str, Any]:
    """Run `code` after CACHE_CHILD in a fresh Python, in a mount namespace of its own when
    `mounts` are given (`myopto.testing.mounts.run_mounted`'s `tmpfs` and `read_only`); a child
    still running after `timeout` seconds fails the test with `hung`. Its last stdout line, as JSON."""
    env = {"DIR": str(folder), "URL": server.url}
    try:
        if mounts:
            done = run_mounted(CACHE_CHILD + code, env=env, timeout=timeout, **mounts)
        else:
            done = subprocess.run(
                [sys.executable, "-c", CACHE_CHILD + code],
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, **env},
            )
    except subprocess.TimeoutExpired:
        pytest.fail(hung)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def modules_loaded_by(code: str, names: set[str]) -> list[str]:
    """Which of the top-level modules `names` a fresh Python has imported after running `code`."""
    probe = (
        f"{code}\nimport json as _json, sys as _sys\n"
        "loaded = {name.split('.')[0] for name in _sys.modules}\n"
        "print(_json.dumps(sorted(loaded & set(_json.loads(_sys.argv[1])))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(sorted(names))], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def start_worker(script: Path, spec: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[str]:
    """A real worker process running `script` with its `spec` as JSON, in this environment plus `env`."""
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(spec)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def worker_result(process: subprocess.Popen[str], timeout: float = 120) -> Any:
    """What a worker printed as JSON, once it exits with 0 (its stderr in the failure otherwise)."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return json.loads(out)


def finish_or_fail(process: subprocess.Popen[str], timeout: float, hung: str) -> tuple[str, str]:
    """The stdout and stderr of `process` once it ends; killed, and the test failed with `hung`, if
    it is still running after `timeout` seconds."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(hung)


def wait_for(condition: Callable[[], object], seconds: float = 3.0) -> None:
    """Poll `condition()` until it holds; fail the test after `seconds`."""
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def in_threads(count: int, call: Callable[[], Any]) -> list[Any]:
    """Run `call()` in `count` threads released together (a barrier); what each returned (or the
    exception it raised), in thread order. A thread still running after a minute fails the test."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the test, which inspects it
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a caller hung"
    return results


class LoopbackHTTP:
    """A real HTTP server on 127.0.0.1, in a daemon thread, answering with `handler`; `port` says where."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def send_json(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """Answer the request `handler` is serving with 200 and the JSON `body`."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class LoopTicks:
    """Counts the event loop's turns while entered (one every `every` seconds): a call that
    blocked the loop lets none happen."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopTicks:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.count += 1


# Two tools, as the local tool-call and streaming tests offer them.
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "minimum": 0, "maximum": 100}},
            "required": ["a", "b"],
        },
    },
}
