"""Support code for tests and benchmarks: a real hub in the caller's event loop.

:func:`start_hub` listens on a free loopback port; :func:`start_hub_on` on a given port with a
given store, so a *restart* (what a client sees when its hub worker is redeployed) keeps the
address and the state and clients can resume their seats. The :class:`HubHandle` has the
URLs, mints tokens and makes meetings through the API.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from signaling.app import LOCAL_URL_KEY, create_app
from signaling.memory_store import MemoryStore
from signaling.server import HubSite
from signaling.settings import Settings, load_settings
from signaling.tokens import TokenService

#: The auth secret of :func:`test_settings` (and of ``hub_process``'s workers).
SECRET = "test-secret-0123456789abcdef-0123456789"


@functools.cache
def _scratch_recordings() -> str:
    """One temporary recordings directory per test process (tests that look at recordings
    pass their own ``recording.dir``)."""
    return tempfile.mkdtemp(prefix="connvo-recordings-")


def test_settings(**sections: dict[str, Any]) -> Settings:
    """Settings for tests: a fixed secret, loopback, quick timeouts; override per section."""
    overrides: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_timeout_s": 2.0},
        "auth": {"secrets": SECRET},
        # Tests that transcribe turn the in-process tap on; the rest need no recogniser.
        "tap": {"enabled": False},
        # Never the working directory: recorded meetings' mixes would land in the checkout.
        "recording": {"dir": _scratch_recordings()},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(None, env={}, overrides=overrides)


@dataclass
class HubHandle:
    """A running hub: URLs, its app, and shortcuts to mint tokens and make rooms."""

    runner: web.AppRunner
    app: web.Application
    settings: Settings
    base_url: str
    tokens: TokenService
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/ws"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/run/meetings"

    def user_token(self, user_id: str, email: str = "", name: str = "") -> str:
        return self.tokens.mint_user(user_id, email or f"{user_id}@example.com", name or user_id)

    def mint_token(self, room_id: str, user_id: str, role: str = "participant",
                   ttl: int = 600, name: str = "") -> str:
        return self.tokens.mint_join(room_id, user_id, role, name=name or user_id, ttl_s=ttl)[0]

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def call(self, path: str, args: dict[str, Any], user: str | None = "host",
                   email: str = "") -> tuple[int, dict[str, Any]]:
        """POST ``{"args": args}`` to ``/api/run/meetings/<path>`` as ``user``."""
        headers = {}
        if user is not None:
            headers["Authorization"] = f"Bearer {self.user_token(user, email)}"
        session = await self.session()
        async with session.post(f"{self.api_url}/{path}", json={"args": args},
                                headers=headers) as resp:
            return resp.status, await resp.json()

    async def create_room(self, *, host: str = "host", invite: tuple[str, ...] = (),
                          transcription: bool = False, **extra: Any) -> tuple[str, str]:
        """Create and start a meeting as ``host``; return ``(meeting_id, room_id)``."""
        emails = [f"{u}@example.com" for u in invite]
        status, body = await self.call("lifecycle/createMeeting", {
            "title": "test meeting", "participantEmails": emails,
            "transcriptionEnabled": transcription, **extra}, user=host)
        assert status == 200, body
        meeting_id = body["value"]["meetingId"]
        status, body = await self.call("lifecycle/startMeeting", {"meetingId": meeting_id},
                                       user=host)
        assert status == 200, body
        return meeting_id, body["value"]["roomInfo"]["roomId"]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.runner.cleanup()


async def start_hub(settings: Settings | None = None, **kwargs: Any) -> HubHandle:
    """Start a hub on 127.0.0.1 with a free port."""
    settings = settings or test_settings()
    app = create_app(settings, **kwargs)
    runner = web.AppRunner(app, handle_signals=False,
                           shutdown_timeout=settings.server.shutdown_timeout_s)
    await runner.setup()
    site = HubSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    app[LOCAL_URL_KEY].url = f"ws://127.0.0.1:{port}/ws"
    tokens = TokenService(secrets=settings.auth.secrets, max_ttl_s=settings.auth.max_token_ttl_s)
    return HubHandle(runner, app, dataclasses.replace(settings), f"http://127.0.0.1:{port}",
                     tokens)


async def start_hub_on(port: int, *, store: MemoryStore,
                       settings: Settings | None = None) -> HubHandle:
    """Start a hub on ``127.0.0.1:port`` backed by ``store`` (shared across restarts)."""
    settings = settings or test_settings()
    app = create_app(settings, store=store)
    runner = web.AppRunner(app, handle_signals=False,
                           shutdown_timeout=settings.server.shutdown_timeout_s)
    await runner.setup()
    site = HubSite(runner, "127.0.0.1", port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    tokens = TokenService(secrets=settings.auth.secrets, max_ttl_s=settings.auth.max_token_ttl_s)
    return HubHandle(runner, app, dataclasses.replace(settings), f"http://127.0.0.1:{port}",
                     tokens)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test
