"""The listening socket: websocket upgrades to ``/ws`` go to the hub's own protocol, all other
HTTP to aiohttp.

Every accepted connection starts with :class:`FrontProtocol`. It is counted at accept against
the worker's connection caps (:mod:`signaling.connections`; refused there with 429 or 503), then
has ``limits.request_head_timeout_s`` to send its whole first request head (else it is closed,
with 408 if it sent part of one). A valid RFC 6455 upgrade for ``/ws`` from an allowed origin
is answered here and the transport handed to a
:class:`~signaling.client_socket.ClientSocket`; anything else (the API, the demo page, a bad or
forbidden upgrade) is handed, bytes and all, to aiohttp's request handler for that connection.
So one port serves both, and a websocket costs no aiohttp objects. Either way the connection
keeps its place in the count until it ends (:class:`_Handed`).

:class:`HubSite` is the aiohttp site that listens this way; :func:`run` serves an app until
SIGINT/SIGTERM (``connvo-rtc serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from .app import CONNECTIONS_KEY, HUB_KEY, LOCAL_URL_KEY, SETTINGS_KEY, local_ws_url
from .client_socket import ClientSocket, allowed_origins, origin_allowed
from .connections import Connections, Refusal
from .rfc6455 import accept_response, parse_upgrade, peer_address

logger = logging.getLogger(__name__)

WS_PATH = "/ws"
#: The longest request head read (nginx's default for a whole head); a longer one gets 431.
MAX_HEAD = 32 * 1024
_PREFIX = b"GET " + WS_PATH.encode()


def _answer(status: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


#: What a refused connection is told before it is closed (evicted ones are just closed).
_ANSWERS = {
    Refusal.PER_ADDRESS: _answer("429 Too Many Requests",
                                 "too many connections from your address\n"),
    Refusal.SERVER_FULL: _answer("503 Service Unavailable",
                                 "this server is at its connection limit: retry later\n"),
    Refusal.HEAD_TIMEOUT: _answer("408 Request Timeout", "the request head took too long\n"),
    Refusal.HEAD_TOO_LARGE: _answer("431 Request Header Fields Too Large",
                                    f"request heads are limited to {MAX_HEAD} bytes\n"),
}


class FrontProtocol(asyncio.Protocol):
    """Counts a new connection, reads its first request head within the deadline, and hands
    the connection to the websocket or to HTTP.

    ``connections`` counts and caps this worker's connections (default: uncapped, with the
    default head deadline); ``allowed_origins`` (normalised by
    :func:`~signaling.settings.web_origin`; empty: any) are the origins a browser's upgrade
    may come from: an upgrade from another goes to HTTP, which answers 403."""

    __slots__ = ("_address", "_buf", "_connections", "_http", "_origins", "_socket", "_timer",
                 "_transport")

    def __init__(self, http: Callable[[], asyncio.Protocol],
                 socket_factory: Callable[[], asyncio.Protocol],
                 connections: Connections | None = None,
                 allowed_origins: frozenset[str] = frozenset()) -> None:
        self._http = http
        self._socket = socket_factory
        self._connections = connections if connections is not None else Connections()
        self._origins = allowed_origins
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        #: The client's address while the connection is counted here (None: refused, cut or
        #: handed on).
        self._address: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        address = peer_address(transport)
        refusal = self._connections.admit(self, address)
        if refusal is not None:
            self._transport.write(_ANSWERS[refusal])
            self._transport.close()
            return
        self._address = address
        self._timer = asyncio.get_running_loop().call_later(
            self._connections.head_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._address is None:  # refused or cut: nothing more is read
            return
        buf = self._buf
        searched = max(0, len(buf) - 3)  # a dribbled head is scanned once, not once per byte
        buf += data
        end = buf.find(b"\r\n\r\n", searched)
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._cut(Refusal.HEAD_TOO_LARGE, f"request head over {MAX_HEAD} bytes")
            return
        request = parse_upgrade(bytes(buf[:end])) if buf.startswith(_PREFIX) else None
        if (request is not None and request.path == WS_PATH
                and origin_allowed(request.headers.get("origin"), self._origins)):
            assert self._transport is not None
            self._transport.write(accept_response(request.key))
            self._hand_over(self._socket(), bytes(buf[end + 4:]))
            return
        self._hand_over(self._http(), bytes(buf))

    def _hand_over(self, protocol: asyncio.Protocol, data: bytes) -> None:
        transport, address = self._transport, self._address
        assert transport is not None and address is not None
        self._stop_timer()
        self._connections.settled(self)
        self._address = None
        self._buf = bytearray()
        if isinstance(protocol, ClientSocket):  # it gives its place back itself when it ends
            transport.set_protocol(protocol)
            protocol.hold_place(self._connections)
        else:
            transport.set_protocol(cast(asyncio.BaseProtocol,
                                        _Handed(protocol, self._connections, address)))
        protocol.connection_made(transport)
        if data and not transport.is_closing():
            protocol.data_received(data)

    def _head_timed_out(self) -> None:
        self._timer = None
        self._cut(Refusal.HEAD_TIMEOUT,
                  f"no complete request head within {self._connections.head_timeout_s:g} s "
                  f"({len(self._buf)} bytes of it)", answer=bool(self._buf))

    def evict(self) -> None:
        """Cut this connection, still waiting for its head, to make room at the cap."""
        self._cut(Refusal.EVICTED, "still waiting for its request head at the connection cap",
                  answer=False)

    def close(self) -> None:
        """Close this connection, still waiting for its head: the server is shutting down."""
        self._cut(None, "", answer=False)

    def _cut(self, reason: Refusal | None, why: str, *, answer: bool = True) -> None:
        transport, address = self._transport, self._address
        if transport is None or address is None:
            return
        self._stop_timer()
        self._address = None
        self._buf = bytearray()
        self._connections.settled(self)
        self._connections.release(address)
        if reason is not None:
            self._connections.refuse(reason, address, why)
            if answer and reason in _ANSWERS:
                transport.write(_ANSWERS[reason])
        transport.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> bool | None:
        return None  # before a request head: just close

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self._address is not None:
            self._connections.settled(self)
            self._connections.release(self._address)
            self._address = None
        self._transport = None


class _Handed:
    """The transport's protocol once :class:`FrontProtocol` handed an HTTP connection to
    aiohttp. The transport calls aiohttp's own bound methods (nothing in between per read);
    only ``connection_lost`` passes through here, to give the connection's place in the count
    back when it ends. (A websocket gives its place back itself: this object and its four
    bound methods would be ~0.35 KiB more per idle websocket.)"""

    __slots__ = ("_address", "_connections", "_protocol", "data_received", "eof_received",
                 "pause_writing", "resume_writing")

    def __init__(self, protocol: asyncio.Protocol, connections: Connections,
                 address: str) -> None:
        self._protocol = protocol
        self._connections = connections
        self._address = address
        self.data_received = protocol.data_received
        self.eof_received = protocol.eof_received
        self.pause_writing = protocol.pause_writing
        self.resume_writing = protocol.resume_writing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Never called: the transport was connected before it was handed on."""

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._connections.release(self._address)


class HubSite(web.BaseSite):
    """A TCP site (like :class:`aiohttp.web.TCPSite`) whose connections start with
    :class:`FrontProtocol`, so ``/ws`` upgrades reach the hub's :class:`ClientSocket`."""

    __slots__ = ("_connections", "_host", "_port", "_reuse_address", "_reuse_port", "_sock")

    def __init__(self, runner: web.AppRunner, host: str = "127.0.0.1", port: int = 8080, *,
                 reuse_address: bool | None = None, reuse_port: bool | None = None,
                 sock: socket.socket | None = None, backlog: int = 1024) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_address = reuse_address
        self._reuse_port = reuse_port
        self._sock = sock
        self._connections: Connections | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        http = runner.server
        assert http is not None and isinstance(runner, web.AppRunner)
        hub = runner.app[HUB_KEY]
        connections = self._connections = runner.app[CONNECTIONS_KEY]
        origins = allowed_origins(hub.settings.server)

        def front() -> FrontProtocol:
            return FrontProtocol(http, lambda: ClientSocket(hub), connections, origins)

        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {"backlog": self._backlog}
        if self._sock is not None:
            self._server = await loop.create_server(front, sock=self._sock, **kwargs)
        else:
            self._server = await loop.create_server(
                front, self._host, self._port, reuse_address=self._reuse_address,
                reuse_port=self._reuse_port, **kwargs)

    async def stop(self) -> None:
        """Stop listening, then close the connections that never sent a request head (the
        rest, websockets and HTTP, are closed by the hub's and aiohttp's staged shutdown)."""
        await super().stop()
        if self._connections is not None:
            self._connections.close_pending()


def run(app: web.Application, host: str, port: int, *, shutdown_timeout: float,
        reuse_port: bool | None = None,
        on_listening: Callable[[int], None] | None = None) -> None:
    """Serve ``app`` on ``host:port`` until SIGINT/SIGTERM, then shut down in stages (the hub
    closes every socket with 1001 first). Uses the current event loop policy (uvloop).
    Once listening, the in-process tap's URL gets the bound port (``port`` may be 0: any free
    one) and ``on_listening`` is called with it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runner = web.AppRunner(app, handle_signals=True, access_log=None,
                           shutdown_timeout=shutdown_timeout,
                           keepalive_timeout=app[SETTINGS_KEY].limits.keepalive_timeout_s)

    async def serve() -> None:
        await runner.setup()
        await HubSite(runner, host, port, reuse_port=reuse_port).start()
        bound = int(runner.addresses[0][1])
        app[LOCAL_URL_KEY].url = local_ws_url(host, bound)
        if on_listening is not None:
            on_listening(bound)
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
