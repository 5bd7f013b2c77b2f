"""The listening socket: websocket upgrades to ``/ws`` go to the hub's own protocol, all other
HTTP to aiohttp.

Every accepted connection starts with :class:`FrontProtocol`. It reads the first request head;
a valid RFC 6455 upgrade for ``/ws`` is answered here and the transport handed to a
:class:`~signaling.client_socket.ClientSocket`; anything else (the API, the demo page, a bad upgrade) is handed,
bytes and all, to aiohttp's request handler for that connection. So one port serves both, and
a websocket costs no aiohttp objects.

:class:`HubSite` is the aiohttp site that listens this way; :func:`run` serves an app until
SIGINT/SIGTERM (``connvo-rtc serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from .app import HUB_KEY
from .client_socket import ClientSocket
from .rfc6455 import accept_response, parse_upgrade

logger = logging.getLogger(__name__)

WS_PATH = "/ws"
#: The longest upgrade request head we read; longer heads go to aiohttp (which limits them).
MAX_HEAD = 8192
_PREFIX = b"GET " + WS_PATH.encode()


class FrontProtocol(asyncio.Protocol):
    """Reads the first request head and hands the connection to the websocket or to HTTP."""

    __slots__ = ("_buf", "_http", "_socket", "_transport")

    def __init__(self, http: Callable[[], asyncio.Protocol],
                 socket_factory: Callable[[], asyncio.Protocol]) -> None:
        self._http = http
        self._socket = socket_factory
        self._transport: asyncio.Transport | None = None
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        n = min(len(buf), len(_PREFIX))
        if buf[:n] != _PREFIX[:n]:  # not "GET /ws...": HTTP, without waiting for the head
            return self._hand_over(self._http(), buf)
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                return self._hand_over(self._http(), buf)
            self._buf = buf
            return
        self._buf = b""
        request = parse_upgrade(buf[:end])
        if request is None or request.path != WS_PATH:
            return self._hand_over(self._http(), buf)
        assert self._transport is not None
        self._transport.write(accept_response(request.key))
        self._hand_over(self._socket(), buf[end + 4:])

    def _hand_over(self, protocol: asyncio.Protocol, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data and not transport.is_closing():
            protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return None  # before a request head: just close

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


class HubSite(web.BaseSite):
    """A TCP site (like :class:`aiohttp.web.TCPSite`) whose connections start with
    :class:`FrontProtocol`, so ``/ws`` upgrades reach the hub's :class:`ClientSocket`."""

    __slots__ = ("_host", "_port", "_reuse_address", "_reuse_port", "_sock")

    def __init__(self, runner: web.AppRunner, host: str = "127.0.0.1", port: int = 8080, *,
                 reuse_address: bool | None = None, reuse_port: bool | None = None,
                 sock: socket.socket | None = None, backlog: int = 1024) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_address = reuse_address
        self._reuse_port = reuse_port
        self._sock = sock

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        http = runner.server
        assert http is not None and isinstance(runner, web.AppRunner)
        hub = runner.app[HUB_KEY]

        def front() -> FrontProtocol:
            return FrontProtocol(http, lambda: ClientSocket(hub))

        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {"backlog": self._backlog}
        if self._sock is not None:
            self._server = await loop.create_server(front, sock=self._sock, **kwargs)
        else:
            self._server = await loop.create_server(
                front, self._host, self._port, reuse_address=self._reuse_address,
                reuse_port=self._reuse_port, **kwargs)


def run(app: web.Application, host: str, port: int, *, shutdown_timeout: float,
        reuse_port: bool | None = None) -> None:
    """Serve ``app`` on ``host:port`` until SIGINT/SIGTERM, then shut down in stages (the hub
    closes every socket with 1001 first). Uses the current event loop policy (uvloop)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runner = web.AppRunner(app, handle_signals=True, access_log=None,
                           shutdown_timeout=shutdown_timeout)

    async def serve() -> None:
        await runner.setup()
        await HubSite(runner, host, port, reuse_port=reuse_port).start()
        await asyncio.Event().wait()

    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError, GracefulExit):
            loop.run_until_complete(main)
        loop.run_until_complete(runner.cleanup())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
