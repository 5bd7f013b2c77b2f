"""``GET /ws``: the websocket endpoint.

Reads frames, enforces the limits (frame size, join timeout, message rate, abuse strikes) and hands
decoded messages to the :class:`~signaling.hub.Hub`. Bad input is answered with an ``error``
frame; repeated abuse or a fatal error closes the socket with its 4xxx code. Nothing a client sends
can raise out of this handler.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from . import protocol as p
from .connection import Connection, TokenBucket
from .errors import BadJoin, HubError, JoinTimeout, ProtocolError, RateLimited, Unavailable
from .hub import Hub

logger = logging.getLogger(__name__)

HUB_KEY = web.AppKey("hub", Hub)


async def _close_with(conn: Connection, hub: Hub, exc: HubError) -> None:
    hub.send_error(conn, exc)
    conn.close_soon(exc.close_code or p.CLOSE_BAD_JOIN, exc.code)
    await conn.drain(2.0)


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[HUB_KEY]
    limits = hub.settings.limits
    ws = web.WebSocketResponse(
        max_msg_size=limits.max_frame_bytes, heartbeat=20.0, autoping=True, compress=False
    )
    await ws.prepare(request)
    conn = Connection(ws, queue_frames=limits.send_queue_frames, remote=request.remote or "?",
                      transport=request.transport)
    conn.start()
    if hub.socket_count >= limits.max_connections:
        logger.warning("refusing websocket from %s: %d connections", conn.remote,
                       hub.socket_count)
        await _close_with(conn, hub, Unavailable("this worker is at its connection limit",
                                                 code="server-full"))
        await conn.aclose()
        return ws
    hub.track(conn)
    try:
        if await _join_phase(hub, conn):
            await _message_loop(hub, conn)
    finally:
        try:
            await hub.disconnected(conn)
        except HubError as exc:  # e.g. the store became unreachable while the peer left
            logger.warning("%s cleanup after close failed: %s", conn.label, exc)
        await conn.aclose(conn.close_code or 1000)
    return ws


async def _join_phase(hub: Hub, conn: Connection) -> bool:
    ws = conn.ws
    try:
        msg = await asyncio.wait_for(ws.receive(), hub.settings.limits.join_timeout_s)
    except TimeoutError:
        await _close_with(conn, hub, JoinTimeout("no join within the join timeout"))
        return False
    if msg.type != WSMsgType.TEXT:
        if msg.type == WSMsgType.ERROR:
            logger.info("websocket from %s failed before join: %s", conn.remote, ws.exception())
        elif msg.type == WSMsgType.BINARY:
            await _close_with(conn, hub, BadJoin("send JSON text frames"))
        return False
    try:
        join = p.decode_client(msg.data)
        if not isinstance(join, p.Join):
            raise BadJoin(f"the first frame must be join, not {p.message_type(join)}")
        await hub.join(conn, join)
    except ProtocolError as exc:
        await _close_with(conn, hub, BadJoin(f"bad join: {exc.message}"))
        return False
    except HubError as exc:
        if exc.close_code is None:
            exc = BadJoin(exc.message, code=exc.code)
        logger.info("join from %s refused: %s %s", conn.remote, exc.code, exc.message)
        await _close_with(conn, hub, exc)
        return False
    return True


async def _message_loop(hub: Hub, conn: Connection) -> None:
    ws = conn.ws
    limits = hub.settings.limits
    bucket = TokenBucket(limits.messages_per_second, limits.message_burst)
    strikes = 0
    counters = hub.metrics.message_counters  # per-type children, looked up once
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.TEXT:
            if not bucket.take():
                strikes += 1
                if strikes >= limits.abuse_strikes:
                    await _close_with(conn, hub, RateLimited("message rate limit exceeded"))
                    return
                hub.send_error(conn, RateLimited(
                    f"over {limits.messages_per_second:g} messages/s: message dropped"))
                continue
            try:
                message = p.decode_client(msg.data)
            except ProtocolError as exc:
                strikes += 1
                if strikes >= limits.abuse_strikes:
                    await _close_with(conn, hub, BadJoin(f"too many bad frames; last: "
                                                         f"{exc.message}", code=exc.code))
                    return
                hub.send_error(conn, exc)
                continue
            counters[type(message)].inc()
            try:
                await hub.dispatch(conn, message)
            except HubError as exc:
                hub.send_error(conn, exc)
            if conn.finished:
                # leave/kick/end: the writer sends the close; wait for the client's reply.
                await conn.drain(2.0)
                return
        elif msg.type == WSMsgType.BINARY:
            strikes += 1
            hub.send_error(conn, ProtocolError("binary frames are not accepted; send JSON text"))
        elif msg.type == WSMsgType.ERROR:
            logger.info("%s websocket error: %s", conn.label, ws.exception())
            if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                conn.close_code = p.CLOSE_FRAME_TOO_LARGE
            return
        else:  # CLOSE / CLOSING / CLOSED
            # Only the client's own close frame with 1000 means "I left"; a close we started
            # (shutdown 1001, kick) or a dropped connection keeps the seat for resume.
            if msg.type == WSMsgType.CLOSE and msg.data == 1000 and not hub.closing:
                await hub.leave(conn, "left")
            return
