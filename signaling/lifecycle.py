"""Room lifecycle: a peer leaving, kicks, a room ending (by the host, the API or when it stays
empty), and the upkeep that repairs what a store outage left half-done (reconcile).

Every seat removal ends in :meth:`RoomLifecycle.after_removal`: the room is told ``peer-left``,
the person's presence becomes ``left``, and a room left with no person starts its empty timer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from . import protocol as p
from .clock import now_ms
from .codes import Close, ErrorCode
from .errors import BadRequest, Forbidden, HubError, NotFound, Unavailable
from .settings import RoomSettings
from .store import Room, Seat, Store
from .tasks import Timers
from .transcripts import Transcripts
from .webhooks import NO_WEBHOOKS, Webhooks
from .workers import WorkerRegistry

if TYPE_CHECKING:
    from .client_socket import ClientSocket
    from .deadlines import Deadlines
    from .resume import Resume
    from .routing import Router

logger = logging.getLogger(__name__)


class RoomLifecycle:
    """Leaving, kicking, ending rooms, and reconcile."""

    def __init__(self, *, rooms: RoomSettings, store: Store, router: Router, grace: Timers,
                 transcripts: Transcripts, registry: WorkerRegistry | None,
                 webhooks: Webhooks = NO_WEBHOOKS) -> None:
        self.rooms = rooms
        self.store = store
        self.router = router
        self.worker_id = router.worker_id
        self.grace = grace
        self.transcripts = transcripts
        self.registry = registry
        self.webhooks = webhooks
        self.empty = Timers("empty-room", logger=logger)
        #: The rooms' deadlines (set by the hub; forgotten when a room ends).
        self.deadlines: Deadlines | None = None
        #: Called with every room this worker ended (the recordings' mix starts there).
        self.on_room_ended: Callable[[Room], Awaitable[None]] | None = None
        #: Set when a store call failed half-way (outage): the next tick runs reconcile().
        self.needs_repair = True
        self._ticks = 0

    async def aclose(self) -> None:
        await self.empty.aclose()

    # ------------------------------------------------------------------ leaving

    async def leave(self, conn: ClientSocket, reason: str) -> None:
        """The peer leaves for good: seat freed, others told, socket closed normally."""
        conn.finished = True
        self.router.detach(conn)
        conn.close_soon(Close.NORMAL, reason)
        try:
            seat = await self.store.remove_seat(conn.room_id, conn.peer_id)
            if seat is not None:
                await self.after_removal(seat, reason)
        except Unavailable:
            # reconcile() removes the seat (and tells the room) once the store is back.
            self.needs_repair = True
            logger.warning("%s left while the store is unreachable", conn.label)

    async def after_removal(self, seat: Seat, reason: str) -> None:
        """A seat is gone: tell the room, mark the person left, and end an empty room later."""
        router = self.router
        room = router.room(seat.room_id) or await self.store.get_room(seat.room_id)
        router.forget_seat(seat.room_id, seat.peer_id)
        self.transcripts.note_left(seat)
        await router.broadcast(seat.room_id, p.PeerLeft(peer_id=seat.peer_id, reason=reason))
        router.notify_roster(seat.room_id)
        if room is not None and seat.role != "tap":
            await self.store.set_presence(room.meeting_id, seat.user_id, "left")
            await self.webhooks.participant_left(room, seat, reason)
        remaining = await router.refresh_roster(seat.room_id)
        if not any(s.role not in p.SERVER_ROLES for s in remaining) and room is not None:
            room_id = seat.room_id
            self.empty.start(room_id, self.rooms.empty_timeout_s,
                             lambda: self._end_if_empty(room_id))

    async def _end_if_empty(self, room_id: str) -> None:
        try:
            seats = await self.store.seats(room_id)
        except Unavailable:
            logger.warning("room=%s empty-room check skipped: store unreachable", room_id)
            return
        if not any(s.role not in p.SERVER_ROLES for s in seats):  # the agent alone is empty
            logger.info("room=%s empty for %.0f s: ending", room_id, self.rooms.empty_timeout_s)
            await self.end_room(room_id, "empty")

    async def on_reaped(self, room_id: str, seats: list[Seat]) -> None:
        """Seats of a dead worker were removed by this worker's reaper: tell the room."""
        for seat in seats:
            await self.after_removal(seat, "disconnected")

    # ------------------------------------------------------------------ kick and end

    async def kick(self, room_id: str, peer_id: str, *, by: ClientSocket | None) -> None:
        """Remove a peer (host's ``kick`` or the API); the user may not rejoin."""
        if by is not None and by.role != "host":
            raise Forbidden("only the host can remove peers")
        if by is not None and by.peer_id == peer_id:
            raise BadRequest("the host cannot kick itself; use leave or end")
        seats = {s.peer_id: s for s in await self.store.seats(room_id)}
        target = seats.get(peer_id)
        if target is None:
            raise NotFound(f"no peer {peer_id} in this room", code=ErrorCode.UNKNOWN_PEER)
        await self.store.ban(room_id, target.user_id)
        await self.remove_user_seats(room_id, [target], "kicked")

    async def remove_user_seats(self, room_id: str, targets: Iterable[Seat], reason: str) -> None:
        """Close and remove the given seats (used by kick and the removeParticipant API)."""
        for target in targets:
            self.grace.cancel(target.peer_id)
            removed = await self.store.remove_seat(room_id, target.peer_id)
            self.router.close_peers(room_id, (target,), p.Kicked(reason=f"{reason} by host"),
                                    Close.FORBIDDEN, reason)
            if removed is not None:
                await self.after_removal(removed, reason)

    async def end_room(self, room_id: str, reason: str) -> bool:
        """End a room everywhere: everyone (and everyone in its waiting room) gets
        ``room-ended`` and a 4410 close; the meeting is concluded. Returns False when it had
        already ended. The one place every end of a meeting goes through (host, API, empty
        room, deadline)."""
        seats = await self.store.seats(room_id)
        knocking = await self.store.knocking(room_id)
        room = await self.store.end_room(room_id, reason, now_ms=now_ms())
        if room is None:
            return False
        self.empty.cancel(room_id)
        if self.deadlines is not None:
            self.deadlines.forget(room_id)
        for seat in seats:
            self.grace.cancel(seat.peer_id)
        self.router.close_peers(room_id, [*seats, *knocking], p.RoomEndedMsg(reason=reason),
                                Close.ROOM_ENDED, "room-ended")
        with contextlib.suppress(HubError):
            await self.store.transition_meeting(room.meeting_id, "concluded",
                                                from_states=("scheduled", "active"),
                                                now_ms=now_ms())
        for seat in seats:
            if seat.role != "tap":
                await self.store.set_presence(room.meeting_id, seat.user_id, "left")
        self.router.forget_room(room_id)
        await self.webhooks.room_ended(room, seats)
        if self.on_room_ended is not None:
            await self.on_room_ended(room)
        logger.info("room=%s ended (%s), %d peers closed", room_id, reason, len(seats))
        return True

    # ------------------------------------------------------------------ shared-state upkeep

    async def tick(self, resume: Resume, full_every: int = 12) -> None:
        """The periodic upkeep (every ``redis`` reconcile interval): reconcile() after a store
        failure, and every ``full_every`` ticks in any case. Reading every room's seats costs
        Redis round trips, so a healthy worker does not do it every few seconds."""
        self._ticks += 1
        if self.registry is not None and self.registry.beat_failed:
            self.registry.beat_failed = False
            self.needs_repair = True
        if not self.needs_repair and self._ticks % full_every:
            return
        self.needs_repair = False
        try:
            await self.reconcile(resume)
        except BaseException:
            self.needs_repair = True
            raise

    async def reconcile(self, resume: Resume) -> None:
        """Repair what an outage may have left half-done: seats bound to this worker with no
        socket and no grace timer are removed (others told), detached seats get their timer."""
        registry = self.registry
        rooms = self.router.rooms() | (registry.rooms if registry else set())
        for room_id in rooms:
            mine = [s for s in await self.store.seats(room_id) if s.worker_id == self.worker_id]
            if not mine and registry is not None and room_id not in self.router.rooms():
                registry.forget_room(room_id)
            for seat in mine:
                if self.router.socket_of(seat.peer_id) is not None or seat.peer_id in self.grace:
                    continue
                if seat.connected or seat.detached_at is None:
                    removed = await self.store.remove_seat(room_id, seat.peer_id,
                                                           only_if_worker=self.worker_id)
                    if removed is not None:
                        logger.info("room=%s peer=%s ghost seat removed", room_id, seat.peer_id)
                        await self.after_removal(removed, "disconnected")
                else:
                    resume.arm(seat)
