"""Timeouts of the hub link against servers that misbehave: nothing hangs.

The real hub answers every join; these stand-ins (real servers on loopback) do not, so the
client's own deadlines are what end the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from media import HubUnreachableError, JoinTimeoutError, PeerClient, PeerClientConfig, TokenError


@pytest.fixture
async def silent_ws_server() -> AsyncIterator[str]:
    """Upgrades to a websocket, then never says anything (and sends an error frame + 4401
    for a token of ``refuse``)."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT and '"refuse"' in msg.data:
                await ws.send_str('{"type":"error","code":"unauthenticated","message":"no"}')
                await ws.close(code=4401, message=b"bad token")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"
    finally:
        await runner.cleanup()


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """Accepts TCP connections and never answers the HTTP upgrade."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def test_no_joined_frame_is_a_join_timeout(silent_ws_server: str) -> None:
    client = PeerClient(PeerClientConfig(ws_url=silent_ws_server, token="t", audio=None,
                                         join_timeout_s=0.3))
    with pytest.raises(JoinTimeoutError) as caught:  # the client's deadline ended the wait
        await client.connect()
    assert "within 0.3 s" in str(caught.value)
    assert caught.value.retryable
    await client.aclose()
    assert client.state == "closed"


async def test_refusal_maps_the_close_code(silent_ws_server: str) -> None:
    with pytest.raises(TokenError) as caught:
        async with PeerClient(PeerClientConfig(ws_url=silent_ws_server, token="refuse",
                                               audio=None)):
            pass
    assert caught.value.close_code == 4401


async def test_unanswered_upgrade_is_unreachable_after_the_connect_timeout(
    black_hole: str,
) -> None:
    with pytest.raises(HubUnreachableError) as caught:
        async with PeerClient(PeerClientConfig(ws_url=black_hole, token="t", audio=None,
                                               connect_timeout_s=0.3)):
            pass
    assert "no websocket within 0.3 s" in str(caught.value)  # the connect deadline, not a reset


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        PeerClientConfig(ws_url="http://x/ws", token="t")
    with pytest.raises(ValueError):
        PeerClientConfig(ws_url="ws://x/ws", token="t", ice_transport_policy="none")
    with pytest.raises(ValueError):
        PeerClientConfig(ws_url="ws://x/ws", token="t", pin_host_addresses=("lo",))
    assert "secret" not in repr(PeerClientConfig(ws_url="ws://x/ws", token="secret"))
