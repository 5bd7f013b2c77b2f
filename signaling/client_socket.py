"""One websocket client of the hub: who it is, its limits, and a send that never blocks.

A :class:`ClientSocket` *is* the socket's protocol (:class:`~signaling.rfc6455.WebSocketProtocol`
does the RFC 6455 framing), so an idle client costs one object, not a task, a queue and a timer.

Reading: it enforces the limits (frame size, join timeout, message rate, abuse strikes,
connections per worker) and hands decoded messages to the :class:`~signaling.hub.Hub`. Bad input
is answered with an ``error`` frame; repeated abuse or a fatal error closes the socket with its
4xxx code. Nothing a client sends can raise out of it. Relays (offer/answer/candidate), nearly
all of the traffic, are handled inline as their frame is parsed: no task, no await. Other
messages (join, chat, media, kick, ...) may wait on the store; they run in a task while later
frames of the same client queue behind them in order (reading pauses when ``INBOX_PAUSE`` are
waiting).

Writing: frames go straight to the transport while the client reads; while it does not, at most
``send_queue_frames`` frames are kept and one more cuts the client off (``slow-consumer``)
instead of buffering without bound.

The upgrade request is answered by :mod:`signaling.server` (or, on a kept-alive HTTP
connection, by :func:`upgrade_handler` here).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from . import protocol as p
from .codes import Close, ErrorCode
from .connections import Refusal
from .errors import BadJoin, HubError, JoinTimeout, ProtocolError, RateLimited, Unavailable
from .protocol import Features
from .ratelimit import TokenBucket
from .rfc6455 import WebSocketProtocol, accept_response, sweep, upgrade_key
from .settings import ServerSettings, web_origin

if TYPE_CHECKING:
    from .connections import Connections
    from .hub import Hub

logger = logging.getLogger(__name__)

#: A client's frames waiting behind a message that waits on the store; reading pauses at this.
INBOX_PAUSE = 32

_RELAYED = frozenset(p.RELAYED)


class ClientSocket(WebSocketProtocol):
    """A joined (or joining) websocket client of this worker's hub."""

    __slots__ = (
        "_bucket",
        "_held",
        "_inbox",
        "_join_timer",
        "_joined",
        "_paused_reading",
        "_place",
        "_strikes",
        "_task",
        "_tracked",
        "features",
        "finished",
        "hub",
        "name",
        "page_closing",
        "peer_id",
        "role",
        "room_id",
        "user_id",
        "waiting",
    )

    def __init__(self, hub: Hub) -> None:
        limits = hub.settings.limits
        super().__init__(max_size=limits.max_frame_bytes, backlog_frames=limits.send_queue_frames,
                         max_fragments=limits.max_fragments)
        self.hub = hub
        self.peer_id = ""
        self.room_id = ""
        self.user_id = ""
        self.role = ""
        self.name = ""
        self.features = Features()
        #: Set once the client said ``leave`` or was kicked/ended: no resume grace on close.
        self.finished = False
        #: Set by ``leave {closing: true}``: the page is closing or reloading; a short grace.
        self.page_closing = False
        #: True while the peer waits in a waiting room for a host to let it in (no seat).
        self.waiting = False
        self._held: list[bytes] | None = None
        self._bucket = TokenBucket(limits.messages_per_second, limits.message_burst)
        self._strikes = 0
        self._joined = False
        #: Frames that arrived while a message was being handled (None: nothing in flight).
        self._inbox: deque[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._join_timer: asyncio.TimerHandle | None = None
        self._paused_reading = False
        self._tracked = False
        #: The connection count this socket gives its place back to when it ends (None: it was
        #: counted by whoever held the connection before, e.g. aiohttp's kept-alive protocol).
        self._place: Connections | None = None

    @property
    def label(self) -> str:
        """For log lines: room and peer."""
        return f"room={self.room_id or '-'} peer={self.peer_id or '-'}"

    # --------------------------------------------------------------- lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        hub = self.hub
        limits = hub.settings.limits
        if hub.closing:
            self.close(Close.GOING_AWAY, "server shutting down")
            return
        if hub.socket_count >= limits.max_connections:
            # Logged at a bounded rate: a flood of upgrades is a few lines, not one each.
            hub.metrics.refusals.refuse(
                Refusal.WEBSOCKETS_FULL, self.remote,
                f"{hub.socket_count} websockets open (limits.max_connections)")
            self._refuse(Unavailable("this worker is at its connection limit",
                                     code=ErrorCode.SERVER_FULL))
            return
        hub.track(self)
        self._tracked = True
        self._join_timer = asyncio.get_running_loop().call_later(
            limits.join_timeout_s, self._join_timed_out)

    def hold_place(self, connections: Connections) -> None:
        """This socket now holds the connection's place in ``connections`` (from accept)."""
        self._place = connections

    def on_closed(self) -> None:
        if self._place is not None:
            self._place.release(self.remote)
            self._place = None
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
            if (self.client_close_code == Close.NORMAL and self._joined and not self.finished
                    and not self.page_closing and not self.waiting and not hub.closing
                    and self.close_code in (None, Close.NORMAL)):
                await hub.lifecycle.leave(self, "left")
            await hub.disconnected(self)
        except HubError as exc:  # e.g. the store became unreachable while the peer left
            hub.lifecycle.needs_repair = True
            logger.warning("%s cleanup after close failed: %s", self.label, exc)

    def _refuse(self, exc: HubError) -> None:
        """Tell the client why, then close with the error's code."""
        self.hub.send_error(self, exc)
        self.close(exc.close_code or Close.BAD_JOIN, exc.code)

    def _join_timed_out(self) -> None:
        self._join_timer = None
        if not self._joined and self._task is None:
            self._refuse(JoinTimeout("no join within the join timeout"))

    def close_soon(self, code: int, reason: str) -> None:
        """Close after the frames already sent (kicks, room end, leave, shutdown)."""
        self.close(code, reason)

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until the socket is closed, e.g. after :meth:`close_soon`."""
        await self.wait_closed(timeout)

    async def aclose(self, code: int = Close.NORMAL, reason: str = "") -> None:
        """Close the socket (if still open) and wait up to 1 s for it to end. Idempotent."""
        self.close(code, reason, timeout=1.0)
        await self.wait_closed(1.5)

    # --------------------------------------------------------------- frames out

    def hold(self) -> None:
        """Keep frames back until :meth:`release`: a joining peer must see ``joined`` first,
        while other peers may already address it."""
        self._held = []

    def release(self, first: bytes, keep: Callable[[bytes], bool]) -> None:
        """Send ``first`` (the ``joined`` frame), then the held frames that ``keep`` accepts."""
        held, self._held = self._held or [], None
        if first:
            self.send(first)
        for frame in held:
            if keep(frame):
                self.send(frame)

    def send(self, frame: bytes) -> None:
        """Send one encoded frame now, or keep it while the client is not reading; cut the
        client off when it has ``send_queue_frames`` frames waiting."""
        if self._held is not None:
            if len(self._held) < self.backlog_frames:
                self._held.append(frame)
            return
        self.send_text(frame)

    def on_slow_consumer(self, frames: int) -> None:
        logger.warning("%s slow consumer: %d frames unsent, disconnecting", self.label, frames)
        self.close_code = Close.POLICY

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
                self.hub.router.relay(self, message)  # type: ignore[arg-type]
            except HubError as exc:
                self.hub.send_error(self, exc)
            return
        self._start(self._handle(message))

    def on_binary(self, data: bytes) -> None:
        if not self._joined and self._task is None:
            self._refuse(BadJoin("send JSON text frames"))
            return
        self._strike(ProtocolError("binary frames are not accepted; send JSON text"))

    def on_extra_frame(self) -> None:
        # A fragment, ping or pong takes a token as a message does, before join too: they were
        # free, and endless empty continuations grew memory by ~8 bytes each (issue 13). Over
        # the rate each is a strike (the frame itself is kept: max_fragments bounds a message).
        if not self._bucket.take() and not self.closing:
            limits = self.hub.settings.limits
            self._strike(RateLimited(f"over {limits.messages_per_second:g} frames/s"),
                         fatal=RateLimited("frame rate limit exceeded"))

    def on_protocol_error(self, code: int) -> None:
        if code == Close.FRAME_TOO_LARGE:
            logger.info("%s message over %d bytes or %d fragments", self.label, self.max_size,
                        self.max_fragments)

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

    def _start(self, work: Awaitable[None]) -> None:
        self._inbox = deque()
        self._task = asyncio.create_task(self._run(work))

    async def _run(self, work: Awaitable[None]) -> None:
        """Run ``work``, then the frames that queued behind it, in order."""
        try:
            await work
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
            self.close(Close.INTERNAL_ERROR, "internal-error")
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
        try:
            join = p.decode_client(data)
            if not isinstance(join, p.Join):
                raise BadJoin(f"the first frame must be join, not {p.message_type(join)}")
            await self.hub.admission.join(self, join)
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


async def liveness_sweeps(hub: Hub) -> None:
    """Ping silent clients and drop the ones that stay silent: one sweep for every socket,
    every ``limits.liveness_sweep_s``; a ping after ``limits.ping_after_s`` of silence."""
    limits = hub.settings.limits
    sweeps = max(1, round(limits.ping_after_s / limits.liveness_sweep_s))
    while True:
        await asyncio.sleep(limits.liveness_sweep_s)
        sweep(hub.sockets(), sweeps)


def allowed_origins(settings: ServerSettings) -> frozenset[str]:
    """``server.allowed_origins`` as :func:`origin_allowed` compares them."""
    return frozenset(o for o in map(web_origin, settings.allowed_origins) if o)


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """Whether a websocket upgrade with this ``Origin`` header may proceed: any when
    ``allowed`` (origins normalised by :func:`~signaling.settings.web_origin`) is empty; else a
    request without one (not a browser: browsers always send it on an upgrade) or from a
    listed origin. A page on another site cannot open a websocket on its visitor's behalf."""
    return not allowed or origin is None or web_origin(origin) in allowed


def upgrade_handler(hub: Hub) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of ``GET /ws``. A websocket upgrade arrives there when it is not the
    first request on its connection (a proxy reusing a kept-alive upstream connection, as nginx
    does with ``keepalive``): the hub takes the connection over from aiohttp for the socket's
    lifetime. An upgrade from an origin not in ``server.allowed_origins`` is 403 (the first
    request of a connection comes here for that too); anything else is a bad upgrade: 400."""
    origins = allowed_origins(hub.settings.server)

    async def upgrade_on_http(request: web.Request) -> web.StreamResponse:
        headers = {name.lower(): ", ".join(request.headers.getall(name))
                   for name in request.headers}
        key = upgrade_key(headers) if request.method == "GET" and request.version == (1, 1) \
            else None
        transport = request.transport
        if key is None or transport is None or request.protocol is None:
            return web.Response(
                status=400, headers={"Sec-WebSocket-Version": "13"},
                text="/ws is the websocket endpoint: send an RFC 6455 upgrade (Upgrade: "
                     "websocket, Connection: Upgrade, Sec-WebSocket-Version: 13, "
                     "Sec-WebSocket-Key)\n")
        if not origin_allowed(request.headers.get("Origin"), origins):
            return web.Response(status=403, text="websocket upgrades from this origin are not "
                                                 "allowed (server.allowed_origins)\n")
        sock = ClientSocket(hub)
        transport.write(accept_response(key))
        request.protocol.set_parser(sock.attach_behind(transport))  # type: ignore[arg-type]
        await sock.wait_closed(float("inf"))
        return web.Response(status=101)  # never sent: the connection is closed by now

    return upgrade_on_http
