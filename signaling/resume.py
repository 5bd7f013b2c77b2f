"""Resume: a peer whose socket dropped keeps its seat and ``peerId`` for the grace period.

A dropped socket detaches its seat and starts the seat's grace timer; ``join {resume}`` with the
resume token (``<peerId>.<secret>``; only the secret's hash is stored) within the grace period
gives the seat back, on any worker, and the room sees no ``peer-left``. When the grace ends the
seat is removed and the room told. A socket still holding the seat when it is resumed elsewhere
is closed with 4411 (taken over).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import TYPE_CHECKING

from .clock import now_ms
from .codes import Close
from .errors import Unavailable
from .settings import RoomSettings
from .store import Seat, Store
from .tasks import Timers

if TYPE_CHECKING:
    from .client_socket import ClientSocket
    from .lifecycle import RoomLifecycle
    from .routing import Router

logger = logging.getLogger(__name__)


def hash_secret(secret: str) -> str:
    """What the store keeps of a resume secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_resume_secret() -> tuple[str, str]:
    """A fresh resume secret and its hash."""
    secret = secrets.token_urlsafe(18)
    return secret, hash_secret(secret)


class Resume:
    """Grace timers of dropped seats, and giving a seat back to its owner."""

    def __init__(self, *, rooms: RoomSettings, store: Store, router: Router, grace: Timers,
                 lifecycle: RoomLifecycle) -> None:
        self.rooms = rooms
        self.store = store
        self.router = router
        self.worker_id = router.worker_id
        self.grace = grace
        self.lifecycle = lifecycle

    async def reattach(self, conn: ClientSocket, room_id: str, resume_token: str,
                       user_id: str) -> Seat | None:
        """The seat ``resume_token`` names, given back to ``conn``; ``None`` when it is gone
        (grace over) or the token or user does not match."""
        peer_id, _, secret = resume_token.partition(".")
        seat = await self.store.reattach(room_id, peer_id, hash_secret(secret), user_id,
                                         self.worker_id)
        if seat is None:
            return None
        self.grace.cancel(peer_id)
        stale = self.router.socket_of(peer_id)
        if stale is not None and stale is not conn:
            stale.finished = True  # its close must not detach the resumed seat
            stale.close_soon(Close.TAKEN_OVER, "resumed elsewhere")
        return seat

    async def disconnected(self, conn: ClientSocket) -> None:
        """The socket closed. A joined peer that did not leave keeps its seat for the grace
        period; others see ``peer-left`` only when it ends."""
        self.router.detach(conn)
        if not conn.peer_id or conn.finished:
            return
        grace = self.rooms.resume_grace_s
        if conn.page_closing:
            grace = min(grace, self.rooms.closing_grace_s)
        if grace <= 0:
            seat = await self.store.remove_seat(conn.room_id, conn.peer_id)
            if seat is not None:
                await self.lifecycle.after_removal(seat, "disconnected")
            return
        try:
            seat = await self.store.detach(conn.room_id, conn.peer_id, now_ms=now_ms(),
                                           worker_id=self.worker_id)
        except Unavailable:
            self.lifecycle.needs_repair = True
            # The seat stays bound to this worker with no socket: reconcile() removes it once
            # the store is back, so no ghost peer outlives the outage.
            logger.warning("%s dropped while the store is unreachable", conn.label)
            return
        if seat is None or seat.detached_at is None:
            return
        self.router.update_seat(seat)
        logger.info("%s socket %s, seat kept %.0f s for resume", conn.label,
                    "closed by its closing page" if conn.page_closing else "dropped", grace)
        self.arm(seat, grace)

    def arm(self, seat: Seat, grace: float | None = None) -> None:
        """Start (or restart) a detached seat's grace timer for what is left of its grace
        (``grace`` seconds from its detach; the resume grace by default)."""
        if seat.detached_at is None:  # an attached seat has no grace to run
            return
        total = self.rooms.resume_grace_s if grace is None else grace
        left = total - (now_ms() - seat.detached_at) / 1e3
        self.grace.start(seat.peer_id, max(0.0, left), lambda: self._expire(seat))

    async def _expire(self, seat: Seat) -> None:
        try:
            removed = await self.store.remove_seat(seat.room_id, seat.peer_id,
                                                   only_if_detached_since=seat.detached_at)
            if removed is not None:
                logger.info("room=%s peer=%s resume grace over: removed", seat.room_id,
                            seat.peer_id)
                await self.lifecycle.after_removal(removed, "disconnected")
        except Unavailable:
            # The seat stays detached with no timer; reconcile() re-arms it when the store is back.
            self.lifecycle.needs_repair = True
            logger.warning("room=%s peer=%s grace expiry deferred: store unreachable",
                           seat.room_id, seat.peer_id)
