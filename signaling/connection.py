"""One websocket client: a bounded send queue drained by one writer task, and rate limiting.

Nothing else writes to the socket, so frames never interleave and a slow reader costs at most
``send_queue_frames`` frames of memory: when the queue is full the client is disconnected
(``slow-consumer``) instead of being buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from .protocol import Features

logger = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 1008  # policy violation: the client does not read its frames


@dataclass
class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` stored."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Connection:
    """A joined (or joining) websocket client of this worker."""

    def __init__(self, ws: web.WebSocketResponse, *, queue_frames: int, remote: str,
                 transport: asyncio.Transport | None = None) -> None:
        self.ws = ws
        self._transport = transport
        self.remote = remote
        self.peer_id = ""
        self.room_id = ""
        self.user_id = ""
        self.role = ""
        self.name = ""
        self.features = Features()
        #: Set once the client said ``leave`` or was kicked/ended: no resume grace on close.
        self.finished = False
        self.close_code: int | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(queue_frames)
        self._writer: asyncio.Task[None] | None = None
        self._aborter: asyncio.Task[None] | None = None
        self._closing = False
        self._close_reason = ""
        self._held: list[bytes] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.remote}")

    @property
    def label(self) -> str:
        """For log lines: room and peer."""
        return f"room={self.room_id or '-'} peer={self.peer_id or '-'}"

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
        """Queue one encoded frame; disconnect the client if its queue is full."""
        if self._closing:
            return
        if self._held is not None:
            if len(self._held) < self._queue.maxsize:
                self._held.append(frame)
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            logger.warning("%s slow consumer: %d frames unsent, disconnecting",
                           self.label, self._queue.qsize())
            self.close_soon(CLOSE_SLOW_CONSUMER, "slow-consumer")

    def close_soon(self, code: int, reason: str) -> None:
        """Close after the frames already queued (used for kicks, room end, slow consumers)."""
        if self._closing:
            return
        self._closing = True
        self.close_code = code
        if self._queue.full():
            # The client is not reading: drop what it has not taken and close now.
            self._aborter = asyncio.create_task(self._abort(code, reason))
            return
        self._queue.put_nowait(None)
        self._close_reason = reason

    async def _abort(self, code: int, reason: str) -> None:
        # The client is not reading, so it would not answer a close handshake either (and
        # aiohttp's close() waits on the same full buffer): cut the TCP connection so the
        # reader side ends and the peer is detached now.
        logger.info("%s aborting connection (%s, %d)", self.label, reason, code)
        if self._writer is not None:
            self._writer.cancel()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    async def _write_loop(self) -> None:
        ws = self.ws
        try:
            while True:
                frame = await self._queue.get()
                if frame is None:
                    await ws.close(code=self.close_code or 1000,
                                   message=self._close_reason.encode())
                    return
                await ws.send_frame(frame, WSMsgType.TEXT)
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            logger.debug("%s write failed: %s", self.label, exc)

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for the writer to send what is queued, including a pending close."""
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (if still open) and stop the writer. Idempotent."""
        self._closing = True
        if self._aborter is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._aborter
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), 1.0)
