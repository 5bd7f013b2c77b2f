"""``GET /ws``: the websocket endpoint.

:class:`HubSocket` reads a client's frames, enforces the limits (frame size, join timeout,
message rate, abuse strikes, connections per worker) and hands decoded messages to the
:class:`~signaling.hub.Hub`. Bad input is answered with an ``error`` frame; repeated abuse or a
fatal error closes the socket with its 4xxx code. Nothing a client sends can raise out of it.

Relays (offer/answer/candidate), nearly all of the traffic, are handled inline as their frame is
parsed: no task, no await. Other messages (join, chat, media, kick, ...) may wait on the store;
they run in a task while later frames of the same client queue behind them in order (reading
pauses when ``INBOX_PAUSE`` are waiting).

The upgrade request is answered by :mod:`signaling.server`; the aiohttp route for ``/ws`` only
answers requests that are not a valid websocket upgrade.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from aiohttp import web

from . import protocol as p
from .connection import Connection, TokenBucket
from .errors import BadJoin, HubError, JoinTimeout, ProtocolError, RateLimited, Unavailable
from .hub import Hub
from .websocket import CLOSE_TOO_BIG, accept_response, sweep, upgrade_key

logger = logging.getLogger(__name__)

HUB_KEY = web.AppKey("hub", Hub)

#: A client's frames waiting behind a message that waits on the store; reading pauses at this.
INBOX_PAUSE = 32
#: Ping a client silent this long; drop it if it does not answer within half of it.
HEARTBEAT_S = 20.0
#: How often the liveness sweep runs over every socket.
SWEEP_S = 5.0

_RELAYED = frozenset(p.RELAYED)


class HubSocket(Connection):
    """A client socket of this worker's hub."""

    __slots__ = (
        "_bucket",
        "_inbox",
        "_join_timer",
        "_joined",
        "_paused_reading",
        "_strikes",
        "_task",
        "_tracked",
        "hub",
    )

    def __init__(self, hub: Hub) -> None:
        limits = hub.settings.limits
        super().__init__(max_frame_bytes=limits.max_frame_bytes,
                         queue_frames=limits.send_queue_frames)
        self.hub = hub
        self._bucket = TokenBucket(limits.messages_per_second, limits.message_burst)
        self._strikes = 0
        self._joined = False
        #: Frames that arrived while a message was being handled (None: nothing in flight).
        self._inbox: deque[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._join_timer: asyncio.TimerHandle | None = None
        self._paused_reading = False
        self._tracked = False

    # --------------------------------------------------------------- lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        hub = self.hub
        limits = hub.settings.limits
        if hub.closing:
            self.close(p.CLOSE_GOING_AWAY, "server shutting down")
            return
        if hub.socket_count >= limits.max_connections:
            logger.warning("refusing websocket from %s: %d connections", self.remote,
                           hub.socket_count)
            self._refuse(Unavailable("this worker is at its connection limit",
                                     code="server-full"))
            return
        hub.track(self)
        self._tracked = True
        self._join_timer = asyncio.get_running_loop().call_later(
            limits.join_timeout_s, self._join_timed_out)

    def on_closed(self) -> None:
        if self._join_timer is not None:
            self._join_timer.cancel()
            self._join_timer = None
        if self._tracked:
            self.hub.spawn_cleanup(self._gone())

    async def _gone(self) -> None:
        """The socket is closed: finish what is in flight, then leave or keep the seat."""
        if self._task is not None:  # it logs its own errors
            await asyncio.wait([self._task])
        hub = self.hub
        try:
            # Only the client's own close frame with 1000 means "I left"; a close we started
            # (shutdown 1001, kick) or a dropped connection keeps the seat for resume.
            if (self.client_close_code == 1000 and self._joined and not self.finished
                    and not hub.closing and self.close_code in (None, 1000)):
                await hub.leave(self, "left")
            await hub.disconnected(self)
        except HubError as exc:  # e.g. the store became unreachable while the peer left
            hub.needs_repair = True
            logger.warning("%s cleanup after close failed: %s", self.label, exc)

    def _refuse(self, exc: HubError) -> None:
        """Tell the client why, then close with the error's code."""
        self.hub.send_error(self, exc)
        self.close(exc.close_code or p.CLOSE_BAD_JOIN, exc.code)

    def _join_timed_out(self) -> None:
        self._join_timer = None
        if not self._joined and self._task is None:
            self._refuse(JoinTimeout("no join within the join timeout"))

    # --------------------------------------------------------------- frames in

    def on_text(self, data: bytes) -> None:
        if self.finished:
            return
        inbox = self._inbox
        if inbox is not None:  # a message is being handled: keep the order
            inbox.append(data)
            if len(inbox) >= INBOX_PAUSE and not self._paused_reading:
                self._paused_reading = True
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        if not self._joined:
            if self._join_timer is not None:
                self._join_timer.cancel()
                self._join_timer = None
            self._start(self._join(data))
            return
        message = self._admit(data)
        if message is None:
            return
        if type(message) in _RELAYED:  # the hot path: inline, no task
            try:
                self.hub.relay(self, message)  # type: ignore[arg-type]
            except HubError as exc:
                self.hub.send_error(self, exc)
            return
        self._start(self._handle(message))

    def on_binary(self, data: bytes) -> None:
        if not self._joined and self._task is None:
            self._refuse(BadJoin("send JSON text frames"))
            return
        self._strike(ProtocolError("binary frames are not accepted; send JSON text"))

    def on_protocol_error(self, code: int) -> None:
        if code == CLOSE_TOO_BIG:
            logger.info("%s frame over %d bytes", self.label, self.max_size)

    def _admit(self, data: bytes) -> p.ClientMessage | None:
        """Rate limit and decode one frame of a joined client (None: refused, answered)."""
        if not self._bucket.take():
            limits = self.hub.settings.limits
            self._strike(RateLimited(
                f"over {limits.messages_per_second:g} messages/s: message dropped"),
                fatal=RateLimited("message rate limit exceeded"))
            return None
        try:
            message = p.decode_client(data)
        except ProtocolError as exc:
            self._strike(exc, fatal=BadJoin(f"too many bad frames; last: {exc.message}",
                                            code=exc.code))
            return None
        self.hub.metrics.message_counters[type(message)].inc()
        return message

    def _strike(self, exc: HubError, fatal: HubError | None = None) -> None:
        self._strikes += 1
        if fatal is not None and self._strikes >= self.hub.settings.limits.abuse_strikes:
            self._refuse(fatal)
        else:
            self.hub.send_error(self, exc)

    # --------------------------------------------------------------- messages that wait

    def _start(self, work: object) -> None:
        self._inbox = deque()
        self._task = asyncio.create_task(self._run(work))  # type: ignore[arg-type]

    async def _run(self, work: object) -> None:
        """Run ``work``, then the frames that queued behind it, in order."""
        try:
            await work  # type: ignore[misc]
            inbox = self._inbox
            while inbox and self._joined and not self.finished and not self.closing:
                data = inbox.popleft()
                if self._paused_reading and len(inbox) < INBOX_PAUSE // 2:
                    self._resume_reading()
                message = self._admit(data)
                if message is not None:
                    await self._handle(message)
        except Exception:
            logger.exception("%s internal error handling a message", self.label)
            self.close(1011, "internal-error")
        finally:
            self._inbox = None
            self._task = None
            if self._paused_reading:
                self._resume_reading()

    def _resume_reading(self) -> None:
        self._paused_reading = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def _join(self, data: bytes) -> None:
        hub = self.hub
        try:
            join = p.decode_client(data)
            if not isinstance(join, p.Join):
                raise BadJoin(f"the first frame must be join, not {p.message_type(join)}")
            await hub.join(self, join)
        except ProtocolError as exc:
            self._refuse(BadJoin(f"bad join: {exc.message}"))
            return
        except HubError as exc:
            if exc.close_code is None:
                exc = BadJoin(exc.message, code=exc.code)
            logger.info("join from %s refused: %s %s", self.remote, exc.code, exc.message)
            self._refuse(exc)
            return
        self._joined = True

    async def _handle(self, message: p.ClientMessage) -> None:
        try:
            await self.hub.dispatch(self, message)
        except HubError as exc:
            self.hub.send_error(self, exc)


async def heartbeat(hub: Hub, every_s: float = SWEEP_S, idle_s: float = HEARTBEAT_S) -> None:
    """Ping silent clients and drop the ones that stay silent: one sweep for every socket."""
    sweeps = max(1, round(idle_s / every_s))
    while True:
        await asyncio.sleep(every_s)
        sweep(hub.sockets(), sweeps)


async def upgrade_on_http(request: web.Request) -> web.StreamResponse:
    """``GET /ws`` that reached aiohttp. A websocket upgrade arrives here when it is not the
    first request on its connection (a proxy reusing a kept-alive upstream connection, as
    nginx does with ``keepalive``): the hub takes the connection over from aiohttp for the
    socket's lifetime. Anything else is a bad upgrade: 400."""
    headers = {name.lower(): ", ".join(request.headers.getall(name))
               for name in request.headers}
    key = upgrade_key(headers) if request.method == "GET" and request.version == (1, 1) \
        else None
    transport = request.transport
    if key is None or transport is None or request.protocol is None:
        return web.Response(
            status=400, headers={"Sec-WebSocket-Version": "13"},
            text="/ws is the websocket endpoint: send an RFC 6455 upgrade (Upgrade: websocket, "
                 "Connection: Upgrade, Sec-WebSocket-Version: 13, Sec-WebSocket-Key)\n")
    sock = HubSocket(request.app[HUB_KEY])
    transport.write(accept_response(key))
    request.protocol.set_parser(sock.attach_behind(transport))  # type: ignore[arg-type]
    await sock.wait_closed(float("inf"))
    return web.Response(status=101)  # never sent: the connection is closed by now
