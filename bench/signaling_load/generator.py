"""The orchestrator's handle on the generator processes (see :mod:`bench.signaling_load.clients`)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from .clients import process_main


class Generator:
    """The orchestrator's handle on ``procs`` generator processes for one server ``kind``
    (``hub`` or ``peerjs``). Every call is bounded by a timeout; :meth:`aclose` stops the
    processes (politely, then by PID)."""

    def __init__(self, procs: int, kind: str) -> None:
        self.kind = kind
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self._count = procs

    def start(self) -> None:
        for _ in range(self._count):
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(target=process_main, args=(child, self.kind), daemon=True)
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def __len__(self) -> int:
        return self._count

    async def call(self, command: str, per_process: list[dict[str, Any]],
                   timeout: float) -> list[Any]:
        """Send ``command`` with one kwargs dict per process; the replies, in process order."""
        for conn, kwargs in zip(self._conns, per_process, strict=True):
            conn.send((command, kwargs))
        replies = [await _recv(conn, timeout) for conn in self._conns]
        for status, value in replies:
            if status != "ok":
                raise RuntimeError(f"generator {command} failed: {value}")
        return [value for _, value in replies]

    async def aclose(self) -> None:
        """Stop every process: a ``stop`` command (it finishes a running phase first), then
        SIGKILL by PID after 10 s. Uses no threads, so it also works while being cancelled.
        Idempotent."""
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop", {}))
        deadline = time.monotonic() + 10.0
        while any(p.is_alive() for p in self._procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for proc in self._procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            proc.join(1.0)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []


async def _recv(conn: Connection, timeout: float) -> Any:
    # Polling keeps the wait cancellable (a thread blocked in recv() would outlive a Ctrl-C);
    # once bytes arrive the rest of the reply follows at once.
    deadline = time.monotonic() + timeout
    while not conn.poll():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no reply from a generator process within {timeout:.0f} s")
        await asyncio.sleep(0.005)
    return conn.recv()


def loop_name() -> str:
    """The event loop the generator processes use."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
