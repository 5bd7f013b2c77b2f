"""One websocket connection to the hub: open, join, read, write, close.

:meth:`HubLink.open` connects, sends the ``join`` frame and waits for ``joined``, turning every
way that can fail into a typed :class:`~media.errors.PeerClientError` within the configured
timeouts (connection refused is immediate). :meth:`HubLink.run` then reads frames until the
socket closes and reports how it ended; one writer task, fed by a bounded queue, sends (a hub
that stops reading makes :meth:`HubLink.send` raise :class:`SendQueueFullError` instead of
buffering forever).

The link knows nothing about rooms or peer connections; :class:`~media.peer.PeerClient` decides
what a close means (resume or give up).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from signaling import protocol
from signaling.codes import FATAL_CLOSES
from signaling.errors import ProtocolError

from .errors import (
    HubProtocolError,
    HubUnreachableError,
    JoinTimeoutError,
    PeerClientError,
    SendQueueFullError,
    error_for_close,
    error_for_code,
)

logger = logging.getLogger(__name__)

#: Largest frame accepted from the hub (an SDP is at most 128 KiB; leave room for JSON).
MAX_FRAME_BYTES = 512 * 1024


@dataclass(frozen=True)
class LinkOptions:
    """How to reach the hub (copied from :class:`~media.peer.PeerClientConfig`)."""

    ws_url: str
    connect_timeout_s: float
    """Websocket connect + upgrade, seconds."""
    join_timeout_s: float
    """From the socket being open to ``joined``, seconds."""
    heartbeat_s: float | None
    """Websocket ping interval; a hub that stops answering is detected within about this."""
    send_queue_size: int
    """Frames waiting for the writer before the link is considered stuck."""


@dataclass(frozen=True)
class LinkEnd:
    """How a link ended."""

    close_code: int | None
    reason: str
    by_us: bool
    """True when :meth:`HubLink.aclose` (or a send overflow) closed it."""
    error: PeerClientError | None = None
    """Set when the link ended because of something on our side (overflow, bad frames)."""


class HubLink:
    """An open, joined websocket to the hub. Create with :meth:`open`."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, options: LinkOptions, *, connect_s: float,
        join_s: float, log_prefix: str,
    ) -> None:
        self._ws = ws
        self._options = options
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=options.send_queue_size)
        self._closed_by_us = False
        self._overflow: SendQueueFullError | None = None
        self._close_task: asyncio.Task[bool] | None = None
        #: Seconds from starting to connect to the socket being open.
        self.connect_s = connect_s
        #: Seconds from the socket being open to ``joined``.
        self.join_s = join_s
        self.log_prefix = log_prefix

    # ------------------------------------------------------------------ open + join

    @classmethod
    async def open(
        cls, session: aiohttp.ClientSession, options: LinkOptions, join: protocol.Join, *,
        log_prefix: str = "",
    ) -> tuple[HubLink, protocol.Joined]:
        """Connect and join. Raises a :class:`PeerClientError` subclass on every failure."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(options.connect_timeout_s):
                ws = await session.ws_connect(
                    options.ws_url,
                    heartbeat=options.heartbeat_s,
                    max_msg_size=MAX_FRAME_BYTES,
                    autoping=True,
                    # We answer the hub's close ourselves, echoing its code (RFC 6455 5.5.1):
                    # aiohttp's autoclose would answer 1000, which a hub may read as "left".
                    autoclose=False,
                    # Bound the wait for the hub's close reply (aiohttp's default is 10 s).
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                )
        except TimeoutError:
            raise HubUnreachableError(
                f"{options.ws_url}: no websocket within {options.connect_timeout_s} s"
            ) from None
        except aiohttp.WSServerHandshakeError as exc:
            raise HubUnreachableError(
                f"{options.ws_url}: websocket upgrade refused (HTTP {exc.status})"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HubUnreachableError(f"{options.ws_url}: {exc}") from None
        opened = time.monotonic()
        try:
            async with asyncio.timeout(options.join_timeout_s):
                await ws.send_str(protocol.encode_text(join))
                joined = await _await_joined(ws)
        except TimeoutError:
            await ws.close()
            raise JoinTimeoutError(f"no 'joined' within {options.join_timeout_s} s") from None
        except BaseException:
            await ws.close()
            raise
        link = cls(
            ws, options, connect_s=opened - started, join_s=time.monotonic() - opened,
            log_prefix=log_prefix or f"room={joined.room_id} peer={joined.peer_id}",
        )
        return link, joined

    # ------------------------------------------------------------------ running

    def send(self, message: protocol._Msg) -> None:
        """Queue one frame. Raises :class:`SendQueueFullError` (and drops the link) when the
        writer is hopelessly behind."""
        if self._overflow is not None or self._closed_by_us:
            raise self._overflow or SendQueueFullError("link is closing")
        try:
            self._queue.put_nowait(protocol.encode_text(message))
        except asyncio.QueueFull:
            self._overflow = SendQueueFullError(
                f"{self._queue.maxsize} frames waiting for the hub; dropping the socket"
            )
            logger.warning("%s send queue full; closing the socket", self.log_prefix)
            self._start_close(aiohttp.WSCloseCode.POLICY_VIOLATION)
            raise self._overflow from None

    async def run(self, on_message: Callable[[protocol.ServerMessage], None]) -> LinkEnd:
        """Read frames, calling ``on_message`` for each, until the socket closes."""
        writer = asyncio.create_task(self._write(), name=f"hub-writer {self.log_prefix}")
        try:
            return await self._read(on_message)
        finally:
            writer.cancel()
            # The writer's own CancelledError comes back as a result; ours propagates.
            await asyncio.gather(writer, return_exceptions=True)

    async def _read(self, on_message: Callable[[protocol.ServerMessage], None]) -> LinkEnd:
        bad_frames = 0
        while True:
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    message = protocol.decode_server(msg.data)
                except ProtocolError as exc:
                    bad_frames += 1
                    logger.warning("%s undecodable frame from hub: %s", self.log_prefix, exc)
                    if bad_frames >= 20:
                        await self._ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR)
                        return self._end(HubProtocolError(f"hub sent bad frames: {exc}"))
                    continue
                on_message(message)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                logger.warning("%s ignoring a binary frame from the hub", self.log_prefix)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                await _answer_close(self._ws, msg)
                if msg.type is aiohttp.WSMsgType.ERROR:
                    logger.info("%s websocket error: %s", self.log_prefix, msg.data)
                return self._end(self._overflow, _close_reason(self._ws, msg))

    def _end(self, error: PeerClientError | None, reason: str = "") -> LinkEnd:
        return LinkEnd(
            close_code=self._ws.close_code,
            reason=reason,
            by_us=self._closed_by_us,
            error=error,
        )

    async def _write(self) -> None:
        while True:
            frame = await self._queue.get()
            try:
                await self._ws.send_str(frame)
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                # The reader sees the close and ends the link; nothing more to send.
                logger.info("%s send failed: %s", self.log_prefix, exc)
                return

    # ------------------------------------------------------------------ closing

    def _start_close(self, code: int) -> None:
        self._closed_by_us = True
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(
                self._ws.close(code=code), name=f"hub-close {self.log_prefix}"
            )

    async def flush(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) until queued frames have been handed to the socket."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self._queue.empty() and not self._ws.closed:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            pass

    async def aclose(self, code: int = aiohttp.WSCloseCode.OK) -> None:
        """Close the socket (idempotent). ``run`` returns once the close completes."""
        self._start_close(code)
        if self._close_task is None:  # pragma: no cover - _start_close always sets it
            return
        try:
            await asyncio.shield(self._close_task)
        except (ConnectionError, aiohttp.ClientError) as exc:
            logger.debug("%s close: %s", self.log_prefix, exc)


async def _await_joined(ws: aiohttp.ClientWebSocketResponse) -> protocol.Joined:
    """Read until ``joined`` or a close; map a refusal to its error."""
    refusal: protocol.Error | None = None
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            try:
                message = protocol.decode_server(msg.data)
            except ProtocolError as exc:
                raise HubProtocolError(f"bad frame while joining: {exc}") from None
            if isinstance(message, protocol.Joined):
                return message
            if isinstance(message, protocol.Error):
                refusal = message  # the close that follows carries the verdict
                continue
            logger.debug("ignoring %s before joined", type(message).__name__)
            continue
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            await _answer_close(ws, msg)
            code = ws.close_code
            reason = _close_reason(ws, msg)
            if refusal is not None and code not in _VERDICT_CLOSE_CODES:
                by_frame = error_for_code(refusal.code, refusal.message)
                if by_frame is not None:
                    by_frame.close_code = code
                    raise by_frame
            error = error_for_close(code, refusal.message if refusal is not None else reason)
            raise error
        # binary frames before joined: ignore


#: The hub's verdicts: a close with one of these is final, whatever came before it.
_VERDICT_CLOSE_CODES = frozenset(FATAL_CLOSES)


async def _answer_close(ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> None:
    """Complete a close the hub started by echoing its code (1000 when it sent none)."""
    if msg.type is not aiohttp.WSMsgType.CLOSE or ws.closed:
        return
    code = msg.data if isinstance(msg.data, int) and 1000 <= msg.data < 5000 else 1000
    if code in (1005, 1006, 1015):  # reserved: never sent on the wire
        code = 1000
    try:
        await ws.close(code=code)
    except (ConnectionError, aiohttp.ClientError) as exc:
        logger.debug("answering the hub's close failed: %s", exc)


def _close_reason(ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> str:
    # aiohttp keeps the close frame's reason only on the CLOSE message; otherwise the socket's
    # exception (if any) is the best explanation.
    if msg.type is aiohttp.WSMsgType.CLOSE and msg.extra:
        return str(msg.extra)
    exc = ws.exception()
    return str(exc) if exc is not None else ""
