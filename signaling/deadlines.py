"""Meeting deadlines: a meeting with ``maxDurationMinutes`` ends at its start plus that.

The deadline is not a timer anyone owns but a fact of the stored meeting: its ``started_at``
(set once, atomically, when it becomes active) plus its ``max_duration_minutes``. Every worker
that has a hand in the room arms its own timers from it: the worker that starts the meeting,
and each worker a peer joins or resumes on (so the deadline holds when the worker that started
the meeting dies or restarts). At ``ends_at - rooms.ending_warning_s`` each worker tells its own
peers ``room-ending {endsAt}`` (every peer is on exactly one worker, so each hears it once);
at ``ends_at`` each calls :meth:`RoomLifecycle.end_room`, of which exactly one wins (the store
ends a room once) and tells everyone ``room-ended {reason: "max-duration"}``; the meeting is
concluded.

``rooms.duration_minute_s`` is the length of one of those minutes: 60, shortened by tests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from . import protocol as p
from .clock import now_ms
from .errors import HubError
from .settings import RoomSettings
from .store import Meeting, Room, Store
from .tasks import Timers

if TYPE_CHECKING:
    from .client_socket import ClientSocket
    from .routing import Router

logger = logging.getLogger(__name__)

#: The ``room-ended`` reason of a meeting that reached its ``maxDurationMinutes``.
MAX_DURATION = "max-duration"
#: Seconds before trying again to end a room whose end failed (store unreachable).
RETRY_S = 2.0

EndRoom = Callable[[str, str], Awaitable[bool]]


def deadline_of(meeting: Meeting, minute_s: float) -> int | None:
    """When ``meeting`` must end (unix ms), or ``None``: no limit, or not started."""
    if meeting.max_duration_minutes is None or meeting.started_at is None:
        return None
    return meeting.started_at + int(meeting.max_duration_minutes * minute_s * 1000)


class Deadlines:
    """This worker's timers for the deadlines of the rooms it has a hand in."""

    def __init__(self, *, rooms: RoomSettings, store: Store, router: Router,
                 end_room: EndRoom) -> None:
        self.rooms = rooms
        self.store = store
        self.router = router
        self.end_room = end_room
        self.timers = Timers("meeting-deadline", logger=logger)
        self._armed: dict[str, int] = {}  # room id -> ends_at (unix ms)

    def ends_at(self, room_id: str) -> int | None:
        """The deadline armed for ``room_id`` on this worker."""
        return self._armed.get(room_id)

    async def watch(self, room: Room) -> int | None:
        """Arm the room's deadline on this worker (once) and return it: ``None`` when the
        meeting has no limit or has not started."""
        if room.features.max_duration_minutes is None:
            return None
        armed = self._armed.get(room.room_id)
        if armed is not None:
            return armed
        meeting = await self.store.get_meeting(room.meeting_id)
        ends_at = None if meeting is None else deadline_of(meeting, self.rooms.duration_minute_s)
        if ends_at is not None:
            self.arm(room.room_id, ends_at)
        return ends_at

    async def passed(self, room: Room) -> bool:
        """Whether the room's deadline has passed (arming it here if it had not been)."""
        ends_at = await self.watch(room)
        return ends_at is not None and ends_at <= now_ms()

    def arm(self, room_id: str, ends_at: int) -> None:
        self._armed[room_id] = ends_at
        warn_at = ends_at - int(self.rooms.ending_warning_s * 1000)
        now = now_ms()
        if warn_at > now:
            self.timers.start(f"{room_id}:warn", (warn_at - now) / 1000,
                              lambda: self._warn(room_id, ends_at))
        self.timers.start(f"{room_id}:end", max(0.0, (ends_at - now) / 1000),
                          lambda: self._end(room_id))
        logger.info("room=%s ends at %d (in %.0f s)", room_id, ends_at, (ends_at - now) / 1000)

    def warn_if_near(self, conn: ClientSocket, ends_at: int) -> None:
        """A peer joining within the warning period hears ``room-ending`` at once."""
        if now_ms() >= ends_at - int(self.rooms.ending_warning_s * 1000):
            conn.send(p.encode(p.RoomEnding(ends_at=ends_at)))

    def forget(self, room_id: str) -> None:
        """The room ended (for whatever reason): its timers go."""
        self._armed.pop(room_id, None)
        self.timers.cancel(f"{room_id}:warn")
        self.timers.cancel(f"{room_id}:end")

    async def _warn(self, room_id: str, ends_at: int) -> None:
        frame = p.encode(p.RoomEnding(ends_at=ends_at))
        peers = self.router.local_peers(room_id)
        for peer_id in peers:
            conn = self.router.socket_of(peer_id)
            if conn is not None:
                conn.send(frame)
        logger.info("room=%s ends in %.0f s: %d peers here told", room_id,
                    self.rooms.ending_warning_s, len(peers))

    async def _end(self, room_id: str) -> None:
        try:
            ended = await self.end_room(room_id, MAX_DURATION)
        except HubError as exc:
            logger.warning("room=%s deadline passed but ending it failed (%s): retrying",
                           room_id, exc.code)
            self.timers.start(f"{room_id}:end", RETRY_S, lambda: self._end(room_id))
            return
        self._armed.pop(room_id, None)
        if ended:
            logger.info("room=%s reached its maximum duration: ended", room_id)

    async def aclose(self) -> None:
        self._armed.clear()
        await self.timers.aclose()
