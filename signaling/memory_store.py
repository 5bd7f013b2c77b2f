"""In-process :class:`~signaling.store.Store` for one worker (the embedded default).

Atomicity comes from the event loop: no method awaits between reading and writing its state.

Expiry mirrors :class:`~signaling.redis_store.RedisStore`: everything of a meeting (the meeting,
its room, seats, bans, presence and transcript) is dropped ``key_ttl_s`` after the last write to
any of it (created, started, ended, a room attached, a join, a ban, presence, a segment). So a
concluded or cancelled meeting stays readable for the retention period and is then freed, and a
meeting that never started goes the same way. One difference on purpose: a room that still has
seats is never dropped under its peers; its meeting waits for the next period.

Meetings wait for expiry in an ordered dict, oldest write first (the TTL is one constant and the
clock monotonic, so that is also deadline order): each call drops the due ones at its front,
at most :data:`SWEEP_BATCH` at a time, O(expired) and never a scan of everything. A meeting read
after its deadline but before the sweep reached it is dropped on the spot, as Redis would.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from .codes import ErrorCode, meeting_state_code
from .errors import BadRequest, Conflict, Forbidden, NotFound, RoomEnded, RoomFull
from .protocol import MediaState
from .store import (
    CURSOR_PATTERN,
    DEFAULT_KEY_TTL_S,
    OPEN_STATES,
    Admission,
    Meeting,
    MeetingState,
    Presence,
    Room,
    Seat,
    Segment,
    quota_refusal,
)

_CURSOR = re.compile(CURSOR_PATTERN, re.ASCII)
#: Most meetings one call drops; the rest go on the next calls (a burst of expiries never
#: stalls a single request).
SWEEP_BATCH = 64


@dataclass
class _RoomState:
    room: Room
    seats: dict[str, Seat] = field(default_factory=dict)  # insertion order = join order
    banned: set[str] = field(default_factory=set)
    waiting: dict[str, Seat] = field(default_factory=dict)  # insertion order = knock order


def _replaces(new: Seat, old: Seat) -> bool:
    """A user holds one seat per room: a person's new seat replaces their other seat; a tap's
    replaces a dropped tap's seat (a dead tap worker's, so the next tap need not wait out its
    resume grace). The Redis store's admission script applies the same rule."""
    if new.role == "tap":
        return old.role == "tap" and old.user_id == new.user_id and not old.connected
    return old.role != "tap" and old.user_id == new.user_id


class MemoryStore:
    """Room, meeting and presence state in this process's memory.

    ``key_ttl_s`` is the retention: seconds a meeting's state lives after its last write (see
    the module's docstring); ``clock`` (monotonic seconds) is for tests.
    """

    def __init__(self, *, key_ttl_s: float = DEFAULT_KEY_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if key_ttl_s <= 0:
            raise ValueError("key_ttl_s must be > 0")
        self.key_ttl_s = key_ttl_s
        self._clock = clock
        self._meetings: dict[str, Meeting] = {}
        self._rooms: dict[str, _RoomState] = {}
        self._presence: dict[str, dict[str, Presence]] = {}  # meeting id -> user id -> presence
        self._segments: dict[str, list[Segment]] = {}
        #: meeting id -> when its state expires, oldest first
        self._deadlines: OrderedDict[str, float] = OrderedDict()
        #: organizer -> ids of their open (scheduled or active) meetings
        self._open: dict[str, set[str]] = {}

    def sizes(self) -> dict[str, int]:
        """How many entries each part of the state holds (tests and debugging: what expiry
        frees)."""
        self._sweep()
        return {"meetings": len(self._meetings), "rooms": len(self._rooms),
                "presence": len(self._presence), "transcripts": len(self._segments),
                "deadlines": len(self._deadlines), "organizers": len(self._open)}

    # ------------------------------------------------------------------ expiry

    def _touch(self, meeting_id: str) -> None:
        """A write to the meeting's state: it expires ``key_ttl_s`` from now."""
        self._deadlines[meeting_id] = self._clock() + self.key_ttl_s
        self._deadlines.move_to_end(meeting_id)

    def _sweep(self, meeting_id: str | None = None) -> None:
        """Drop up to :data:`SWEEP_BATCH` meetings whose time is up, and ``meeting_id`` if its
        time is up (about to be read or written: an expired meeting is never seen)."""
        now = self._clock()
        if meeting_id is not None:
            deadline = self._deadlines.get(meeting_id)
            if deadline is not None and deadline <= now:
                self._expire(meeting_id)
        for _ in range(SWEEP_BATCH):
            if not self._deadlines:
                return
            oldest, deadline = next(iter(self._deadlines.items()))
            if deadline > now:
                return
            self._expire(oldest)

    def _expire(self, meeting_id: str) -> None:
        meeting = self._meetings.get(meeting_id)
        room = None if meeting is None or meeting.room_id is None else self._rooms.get(
            meeting.room_id)
        if room is not None and room.seats:
            self._touch(meeting_id)  # never drop a room under its peers
            return
        del self._deadlines[meeting_id]
        self._presence.pop(meeting_id, None)
        self._segments.pop(meeting_id, None)
        if room is not None:
            del self._rooms[room.room.room_id]
        if meeting is not None:
            del self._meetings[meeting_id]
            self._closed(meeting)

    def _closed(self, meeting: Meeting) -> None:
        """``meeting`` no longer counts towards its organizer's open meetings."""
        open_ids = self._open.get(meeting.organizer_id)
        if open_ids is not None:
            open_ids.discard(meeting.meeting_id)
            if not open_ids:
                del self._open[meeting.organizer_id]

    def _room(self, room_id: str) -> _RoomState | None:
        state = self._rooms.get(room_id)
        if state is not None:
            self._sweep(state.room.meeting_id)
            state = self._rooms.get(room_id)
        else:
            self._sweep()
        return state

    # ------------------------------------------------------------------ meetings

    async def ping(self) -> None:
        return None

    async def create_meeting(self, meeting: Meeting, *, max_open: int = 0) -> None:
        self._sweep(meeting.meeting_id)
        if meeting.meeting_id in self._meetings:
            raise Conflict(f"meeting {meeting.meeting_id} exists")
        open_ids = self._open.get(meeting.organizer_id, set())
        if max_open > 0 and len(open_ids) >= max_open:
            raise quota_refusal(max_open)
        self._meetings[meeting.meeting_id] = meeting
        if meeting.state in OPEN_STATES:
            self._open.setdefault(meeting.organizer_id, set()).add(meeting.meeting_id)
        self._touch(meeting.meeting_id)

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        self._sweep(meeting_id)
        return self._meetings.get(meeting_id)

    async def transition_meeting(
        self, meeting_id: str, state: MeetingState, *, from_states: tuple[MeetingState, ...],
        now_ms: int,
    ) -> Meeting:
        self._sweep(meeting_id)
        meeting = self._meetings.get(meeting_id)
        if meeting is None:
            raise NotFound(f"no meeting {meeting_id}")
        if meeting.state == state:
            return meeting
        if meeting.state not in from_states:
            raise Conflict(f"meeting is {meeting.state}, cannot become {state}",
                           code=meeting_state_code(meeting.state))
        started_at = meeting.started_at
        if state == "active" and started_at is None:
            started_at = now_ms
        meeting = msgspec.structs.replace(meeting, state=state, updated_at=now_ms,
                                          started_at=started_at)
        self._meetings[meeting_id] = meeting
        if state not in OPEN_STATES:
            self._closed(meeting)
        self._touch(meeting_id)
        return meeting

    async def attach_room(self, room: Room) -> Room:
        self._sweep(room.meeting_id)
        meeting = self._meetings.get(room.meeting_id)
        if meeting is None:
            raise NotFound(f"no meeting {room.meeting_id}")
        if meeting.room_id is not None:
            return self._rooms[meeting.room_id].room
        self._rooms[room.room_id] = _RoomState(room)
        self._meetings[meeting.meeting_id] = msgspec.structs.replace(meeting, room_id=room.room_id)
        self._touch(meeting.meeting_id)
        return room

    async def get_room(self, room_id: str) -> Room | None:
        state = self._room(room_id)
        return None if state is None else state.room

    async def end_room(self, room_id: str, reason: str, *, now_ms: int) -> Room | None:
        state = self._room(room_id)
        if state is None or state.room.state == "ended":
            return None
        state.room = msgspec.structs.replace(state.room, state="ended", ended_at=now_ms,
                                             end_reason=reason)
        state.seats.clear()
        state.waiting.clear()
        return state.room

    async def admit(self, seat: Seat) -> Admission:
        state = self._room(seat.room_id)
        if state is None:
            raise NotFound(f"no room {seat.room_id}")
        if state.room.state == "ended":
            raise RoomEnded("the room has ended")
        if seat.user_id in state.banned:
            raise Forbidden("you were removed from this room by the host", code=ErrorCode.REMOVED)
        replaced = tuple(s for s in state.seats.values() if _replaces(seat, s))
        others = [s for s in state.seats.values() if s not in replaced]
        if seat.role == "tap":
            if any(s.role == "tap" for s in others):
                raise RoomFull("the room already has a transcription tap")
        elif sum(1 for s in others if s.role != "tap") >= state.room.capacity:
            raise RoomFull(f"the room is full ({state.room.capacity} peers)")
        for old in replaced:
            del state.seats[old.peer_id]
        state.seats[seat.peer_id] = seat
        if seat.role != "tap":
            self._presence.setdefault(state.room.meeting_id, {})[seat.user_id] = "joined"
        self._touch(state.room.meeting_id)
        return Admission(seat, replaced, tuple(state.seats.values()))

    async def reattach(
        self, room_id: str, peer_id: str, resume_hash: str, user_id: str, worker_id: str
    ) -> Seat | None:
        state = self._room(room_id)
        seat = None if state is None else state.seats.get(peer_id)
        if state is None or seat is None or seat.resume_hash != resume_hash:
            return None
        if seat.user_id != user_id:
            return None
        seat = msgspec.structs.replace(seat, connected=True, detached_at=None, worker_id=worker_id)
        state.seats[peer_id] = seat
        return seat

    async def detach(self, room_id: str, peer_id: str, *, now_ms: int,
                     worker_id: str = "") -> Seat | None:
        state = self._room(room_id)
        seat = None if state is None else state.seats.get(peer_id)
        if state is None or seat is None or (worker_id and seat.worker_id != worker_id):
            return None
        seat = msgspec.structs.replace(seat, connected=False, detached_at=now_ms)
        state.seats[peer_id] = seat
        return seat

    async def remove_seat(
        self, room_id: str, peer_id: str, *, only_if_detached_since: int | None = None,
        only_if_worker: str | None = None,
    ) -> Seat | None:
        state = self._room(room_id)
        seat = None if state is None else state.seats.get(peer_id)
        if state is None or seat is None:
            return None
        if only_if_worker is not None and seat.worker_id != only_if_worker:
            return None
        if only_if_detached_since is not None and (
            seat.connected or seat.detached_at != only_if_detached_since
        ):
            return None
        del state.seats[peer_id]
        return seat

    async def update_media(self, room_id: str, peer_id: str, media: MediaState) -> Seat | None:
        state = self._room(room_id)
        seat = None if state is None else state.seats.get(peer_id)
        if state is None or seat is None:
            return None
        seat = msgspec.structs.replace(seat, media=media)
        state.seats[peer_id] = seat
        return seat

    async def seats(self, room_id: str) -> list[Seat]:
        state = self._room(room_id)
        return [] if state is None else list(state.seats.values())

    async def ban(self, room_id: str, user_id: str) -> None:
        state = self._room(room_id)
        if state is not None:
            state.banned.add(user_id)
            self._touch(state.room.meeting_id)

    async def knock(self, entry: Seat, *, max_waiting: int) -> tuple[Seat, ...]:
        state = self._room(entry.room_id)
        if state is None:
            raise NotFound(f"no room {entry.room_id}")
        if state.room.state == "ended":
            raise RoomEnded("the room has ended")
        if entry.user_id in state.banned:
            raise Forbidden("you were removed from this room by the host", code=ErrorCode.REMOVED)
        replaced = tuple(w for w in state.waiting.values() if w.user_id == entry.user_id)
        if len(state.waiting) - len(replaced) >= max_waiting:
            raise RoomFull(f"{max_waiting} people are waiting to be let in already",
                           code=ErrorCode.WAITING_ROOM_FULL)
        for old in replaced:
            del state.waiting[old.peer_id]
        state.waiting[entry.peer_id] = entry
        self._touch(state.room.meeting_id)
        return replaced

    async def unknock(self, room_id: str, peer_id: str) -> Seat | None:
        state = self._room(room_id)
        return None if state is None else state.waiting.pop(peer_id, None)

    async def knocking(self, room_id: str) -> list[Seat]:
        state = self._room(room_id)
        return [] if state is None else list(state.waiting.values())

    async def set_presence(self, meeting_id: str, user_id: str, presence: Presence) -> None:
        self._sweep(meeting_id)
        self._presence.setdefault(meeting_id, {})[user_id] = presence
        self._touch(meeting_id)

    async def presence(self, meeting_id: str, user_id: str) -> Presence | None:
        self._sweep(meeting_id)
        return self._presence.get(meeting_id, {}).get(user_id)

    async def append_segment(self, meeting_id: str, segment: Segment) -> None:
        self._sweep(meeting_id)
        self._segments.setdefault(meeting_id, []).append(segment)
        self._touch(meeting_id)

    async def segments(self, meeting_id: str, *, after: str = "", limit: int = 100
                       ) -> tuple[list[Segment], str]:
        self._sweep(meeting_id)
        stored = self._segments.get(meeting_id, [])
        if after and not _CURSOR.fullmatch(after):
            raise BadRequest("invalid cursor", code=ErrorCode.INVALID_CURSOR)
        # Ours are "<position>"; the "-<n>" of Redis' syntax is accepted and means nothing here.
        start = int(after.partition("-")[0]) if after else 0
        page = stored[start:start + limit]
        end = start + len(page)
        return page, str(end) if end < len(stored) else ""

    async def aclose(self) -> None:
        return None
