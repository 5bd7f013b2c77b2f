"""Hub worker processes (``connvo-rtc serve``) for multi-worker tests: started on free loopback
ports against one Redis, stopped by PID (SIGTERM, or SIGKILL to simulate a crash)."""

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
from typing import Any

import aiohttp

from signaling.tokens import TokenService
from tests.support.hub import SECRET
from tests.support.redis import free_port


@dataclass
class HubProcess:
    """One hub worker process."""

    port: int
    redis_url: str
    extra: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""

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
        self.proc = subprocess.Popen(args, stdout=fd, stderr=fd, env=env)
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


_tokens = TokenService(secrets=(SECRET,))


async def api(base_url: str, path: str, args: dict[str, Any], user: str = "host",
              session: aiohttp.ClientSession | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``{"args": args}`` to ``/api/run/meetings/<path>`` on a hub process as ``user``."""
    headers = {"Authorization": "Bearer " + _tokens.mint_user(user, f"{user}@example.com", user)}
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.post(f"{base_url}/api/run/meetings/{path}", json={"args": args},
                                headers=headers) as resp:
            return resp.status, await resp.json()
    finally:
        if own:
            await session.close()


async def start_meeting(base_url: str, invite: Sequence[str] = (), host: str = "host",
                        session: aiohttp.ClientSession | None = None) -> tuple[str, str]:
    """Create and start a meeting on a hub process; ``(meeting_id, room_id)``."""
    status, body = await api(base_url, "lifecycle/createMeeting", {
        "title": "multi-worker", "participantEmails": [f"{u}@example.com" for u in invite]},
        host, session)
    assert status == 200, body
    meeting_id = body["value"]["meetingId"]
    status, body = await api(base_url, "lifecycle/startMeeting", {"meetingId": meeting_id}, host,
                             session)
    assert status == 200, body
    return meeting_id, body["value"]["roomInfo"]["roomId"]


def join_token(room_id: str, user: str, role: str = "participant") -> str:
    return _tokens.mint_join(room_id, user, role, name=user, ttl_s=600)[0]
