"""A raw protocol client for tests: send frames, read decoded server messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp

from signaling import protocol as p

if TYPE_CHECKING:
    from signaling.testing.hub import HubHandle


class WsClient:
    """One websocket to the hub, with helpers to join and to wait for message types."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws
        self.joined: p.Joined | None = None
        self.inbox: list[p.ServerMessage] = []

    @classmethod
    async def connect(cls, url: str) -> WsClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, max_msg_size=0, autoclose=False)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    @property
    def peer_id(self) -> str:
        assert self.joined is not None
        return self.joined.peer_id

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            await self.ws.send_str(json.dumps(frame))
        elif isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def recv(self, timeout: float = 5.0) -> p.ServerMessage | None:
        """The next message, or ``None`` when the socket closed."""
        msg = await self.ws.receive(timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            message = p.decode_server(msg.data)
            self.inbox.append(message)
            return message
        if msg.type == aiohttp.WSMsgType.CLOSE:
            await self.ws.close()
        return None

    async def expect(self, kind: type, timeout: float = 5.0) -> Any:
        """Read until a message of ``kind`` arrives (other messages are kept in ``inbox``)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.recv(timeout)
                if message is None:
                    raise AssertionError(f"socket closed ({self.ws.close_code}) waiting for "
                                         f"{kind.__name__}; inbox={self.inbox}")
                if isinstance(message, kind):
                    return message

    async def expect_close(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; return its close code."""
        async with asyncio.timeout(timeout):
            while await self.recv(timeout) is not None:
                pass
        return self.ws.close_code

    async def join(self, token: str, **extra: Any) -> p.Joined:
        await self.send({"type": "join", "token": token, **extra})
        self.joined = await self.expect(p.Joined)
        return self.joined

    def seen(self, kind: type) -> list[Any]:
        return [m for m in self.inbox if isinstance(m, kind)]

    async def aclose(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        await self.session.close()


@asynccontextmanager
async def seated(hub: HubHandle, room_id: str, count: int = 4) -> AsyncIterator[list[WsClient]]:
    """``count`` participants (``user0``, ``user1``, ...) joined to ``room_id`` (by default
    filling it), all closed on exit."""
    clients: list[WsClient] = []
    try:
        for i in range(count):
            client = await WsClient.connect(hub.ws_url)
            clients.append(client)
            await client.join(hub.mint_token(room_id, f"user{i}"))
        yield clients
    finally:
        for client in clients:
            await client.aclose()
