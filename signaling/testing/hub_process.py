"""Support code for tests and benchmarks: hub worker processes (``connvo-rtc serve``) on free
loopback ports against one Redis, stopped by PID (SIGTERM, or SIGKILL to simulate a crash).
Their auth secret is :data:`signaling.testing.hub.SECRET`, so :mod:`signaling.testing.meetings`
can call them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import aiohttp

from signaling.testing.hub import SECRET
from signaling.testing.ports import free_port


@dataclass
class HubProcess:
    """One hub worker process: ``start()``, ``await wait_ready()``, then ``kill()`` or
    ``cleanup()`` (which also deletes its log)."""

    port: int
    redis_url: str
    extra: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    #: Run the hub from this source tree instead of the installed one (a benchmark's baseline).
    tree: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        fd, self.log_path = tempfile.mkstemp(prefix=f"hub-{self.port}-", suffix=".log")
        args = [sys.executable, "-m", "signaling.cli", "serve", "--port", str(self.port),
                "--redis", self.redis_url, *self.extra]
        env = {**os.environ, "CONNVO_RTC_AUTH_SECRET": SECRET, "CONNVO_RTC_TAP_ENABLED": "false",
               **self.env}
        if self.tree:  # `python -m` puts the working directory first on sys.path
            env["PYTHONPATH"] = self.tree
        self.proc = subprocess.Popen(args, stdout=fd, stderr=fd, env=env, cwd=self.tree)
        os.close(fd)

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited {self.proc.returncode}:\n{self.log()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(self.base_url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"hub on {self.port} not ready:\n{self.log()}")

    def log(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path) as f:
            return f.read()[-100000:]
        return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        self.kill(signal.SIGTERM)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


@contextlib.asynccontextmanager
async def run_workers(redis_url: str, count: int = 2, *, extra: Sequence[str] = (),
                      env: dict[str, str] | None = None) -> AsyncIterator[list[HubProcess]]:
    """``count`` hub workers on their own ports sharing ``redis_url``."""
    workers = [HubProcess(free_port(), redis_url, extra, env=dict(env or {}))
               for _ in range(count)]
    try:
        for w in workers:
            w.start()
        await asyncio.gather(*(w.wait_ready() for w in workers))
        yield workers
    finally:
        for w in workers:
            w.cleanup()
