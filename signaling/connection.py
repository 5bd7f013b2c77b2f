"""One websocket client as the hub sees it: who it is, and a send that never blocks.

A :class:`Connection` *is* the socket's protocol (:class:`~signaling.websocket.WebSocketProtocol`),
so an idle client costs one object, not a task, a queue and a timer. Frames go straight to the
transport while the client reads; while it does not, at most ``send_queue_frames`` frames are
kept and one more cuts the client off (``slow-consumer``) instead of buffering without bound.
Reading the client's frames is :class:`signaling.ws.HubSocket`'s job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .protocol import Features
from .websocket import WebSocketProtocol

logger = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 1008  # policy violation: the client does not read its frames


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` stored."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Connection(WebSocketProtocol):
    """A joined (or joining) websocket client of this worker."""

    __slots__ = (
        "_held",
        "features",
        "finished",
        "name",
        "peer_id",
        "role",
        "room_id",
        "user_id",
    )

    def __init__(self, *, max_frame_bytes: int, queue_frames: int) -> None:
        super().__init__(max_size=max_frame_bytes, backlog_frames=queue_frames)
        self.peer_id = ""
        self.room_id = ""
        self.user_id = ""
        self.role = ""
        self.name = ""
        self.features = Features()
        #: Set once the client said ``leave`` or was kicked/ended: no resume grace on close.
        self.finished = False
        self._held: list[bytes] | None = None

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
        """Send one encoded frame now, or keep it while the client is not reading; cut the
        client off when it has ``send_queue_frames`` frames waiting."""
        if self._held is not None:
            if len(self._held) < self.backlog_frames:
                self._held.append(frame)
            return
        self.send_text(frame)

    def on_slow_consumer(self, frames: int) -> None:
        logger.warning("%s slow consumer: %d frames unsent, disconnecting", self.label, frames)
        self.close_code = CLOSE_SLOW_CONSUMER

    def close_soon(self, code: int, reason: str) -> None:
        """Close after the frames already sent (kicks, room end, leave, shutdown)."""
        self.close(code, reason)

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until the socket is closed, e.g. after :meth:`close_soon`."""
        await self.wait_closed(timeout)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (if still open) and wait up to 1 s for it to end. Idempotent."""
        self.close(code, reason, timeout=1.0)
        await self.wait_closed(1.5)
