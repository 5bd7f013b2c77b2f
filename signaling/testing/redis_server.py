"""Support code for tests and benchmarks: real ``redis-server`` processes on free loopback
ports, a single server and a 3-master Cluster. Started and stopped by PID; nothing is persisted
(``--save "" --appendonly no``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from signaling.testing.ports import free_port


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cluster_port() -> int:
    """A free loopback port whose Cluster bus port (port + 10000) is free too."""
    while True:
        port = 20000 + free_port() % 30000
        if _bindable(port) and _bindable(port + 10000):
            return port


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not listen on {port}")


@dataclass
class RedisServer:
    """One redis-server; ``stop()``/``start()`` simulate an outage on the same port."""

    port: int
    workdir: str
    cluster: bool = False
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.workdir,
                "--protected-mode", "no", "--loglevel", "warning"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     f"nodes-{self.port}.conf", "--cluster-node-timeout", "2000"]
        args += self.extra_args
        args += ["--logfile", os.path.join(self.workdir, f"redis-{self.port}.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def _workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="connvo-redis-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A server for the caller's ``with`` block."""
    with _workdir() as path:
        server = RedisServer(free_port(), path)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.asynccontextmanager
async def run_redis() -> AsyncIterator[RedisServer]:
    """A private server for one test (e.g. one the test stops and restarts)."""
    with _workdir() as path:
        server = RedisServer(free_port(), path)
        await asyncio.to_thread(server.start)
        try:
            yield server
        finally:
            server.stop()


@dataclass
class RedisCluster:
    """The nodes of a Cluster (every node a master, no replicas)."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"


def _create_cluster(nodes: list[RedisServer]) -> None:
    addrs = [f"127.0.0.1:{n.port}" for n in nodes]
    subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0",
                    "--cluster-yes"], check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = subprocess.run(["redis-cli", "-p", str(nodes[0].port), "cluster", "info"],
                             capture_output=True, text=True, timeout=5, check=False).stdout
        if "cluster_state:ok" in out:
            return
        time.sleep(0.1)
    raise RuntimeError("redis cluster did not become ready")


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisCluster]:
    """A Cluster of ``masters`` nodes, slots spread over them, for the caller's ``with`` block."""
    with _workdir() as path:
        nodes = [RedisServer(_cluster_port(), path, cluster=True)
                 for _ in range(masters)]
        try:
            for node in nodes:
                node.start()
            _create_cluster(nodes)
            yield RedisCluster(nodes)
        finally:
            for node in nodes:
                node.stop()


def flush(server: RedisServer | RedisCluster) -> None:
    """Empty every node (between tests sharing one server)."""
    nodes = server.nodes if isinstance(server, RedisCluster) else [server]
    for node in nodes:
        subprocess.run(["redis-cli", "-p", str(node.port), "flushall"], check=True,
                       capture_output=True, timeout=10)
