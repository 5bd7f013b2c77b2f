"""In-process :class:`~signaling.store.Store` for one worker (the embedded default).

Atomicity comes from the event loop: no method awaits between reading and writing its state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from .codes import ErrorCode, meeting_state_code
from .errors import BadRequest, Conflict, Forbidden, NotFound, RoomEnded, RoomFull
from .protocol import MediaState
from .store import Admission, Meeting, MeetingState, Presence, Room, Seat, Segment


@dataclass
class _RoomState:
    room: Room
    seats: dict[str, Seat] = field(default_factory=dict)  # insertion order = join order
    banned: set[str] = field(default_factory=set)


class MemoryStore:
    """Room, meeting and presence state in this process's memory."""

    def __init__(self) -> None:
        self._meetings: dict[str, Meeting] = {}
        self._rooms: dict[str, _RoomState] = {}
        self._presence: dict[tuple[str, str], Presence] = {}
        self._segments: dict[str, list[Segment]] = {}

    async def ping(self) -> None:
        return None

    async def create_meeting(self, meeting: Meeting) -> None:
        if meeting.meeting_id in self._meetings:
            raise Conflict(f"meeting {meeting.meeting_id} exists")
        self._meetings[meeting.meeting_id] = meeting

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        return self._meetings.get(meeting_id)

    async def transition_meeting(
        self, meeting_id: str, state: MeetingState, *, from_states: tuple[MeetingState, ...],
        now_ms: int,
    ) -> Meeting:
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
        return meeting

    async def attach_room(self, room: Room) -> Room:
        meeting = self._meetings.get(room.meeting_id)
        if meeting is None:
            raise NotFound(f"no meeting {room.meeting_id}")
        if meeting.room_id is not None:
            return self._rooms[meeting.room_id].room
        self._rooms[room.room_id] = _RoomState(room)
        self._meetings[meeting.meeting_id] = msgspec.structs.replace(meeting, room_id=room.room_id)
        return room

    async def get_room(self, room_id: str) -> Room | None:
        state = self._rooms.get(room_id)
        return None if state is None else state.room

    async def end_room(self, room_id: str, reason: str, *, now_ms: int) -> Room | None:
        state = self._rooms.get(room_id)
        if state is None or state.room.state == "ended":
            return None
        state.room = msgspec.structs.replace(state.room, state="ended", ended_at=now_ms,
                                             end_reason=reason)
        state.seats.clear()
        return state.room

    async def admit(self, seat: Seat) -> Admission:
        state = self._rooms.get(seat.room_id)
        if state is None:
            raise NotFound(f"no room {seat.room_id}")
        if state.room.state == "ended":
            raise RoomEnded("the room has ended")
        if seat.user_id in state.banned:
            raise Forbidden("you were removed from this room by the host", code=ErrorCode.REMOVED)
        replaced = () if seat.role == "tap" else tuple(  # a user holds one seat per room
            s for s in state.seats.values() if s.user_id == seat.user_id and s.role != "tap"
        )
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
            self._presence[(state.room.meeting_id, seat.user_id)] = "joined"
        return Admission(seat, replaced, tuple(state.seats.values()))

    async def reattach(
        self, room_id: str, peer_id: str, resume_hash: str, user_id: str, worker_id: str
    ) -> Seat | None:
        state = self._rooms.get(room_id)
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
        state = self._rooms.get(room_id)
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
        state = self._rooms.get(room_id)
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
        state = self._rooms.get(room_id)
        seat = None if state is None else state.seats.get(peer_id)
        if state is None or seat is None:
            return None
        seat = msgspec.structs.replace(seat, media=media)
        state.seats[peer_id] = seat
        return seat

    async def seats(self, room_id: str) -> list[Seat]:
        state = self._rooms.get(room_id)
        return [] if state is None else list(state.seats.values())

    async def ban(self, room_id: str, user_id: str) -> None:
        state = self._rooms.get(room_id)
        if state is not None:
            state.banned.add(user_id)

    async def set_presence(self, meeting_id: str, user_id: str, presence: Presence) -> None:
        self._presence[(meeting_id, user_id)] = presence

    async def presence(self, meeting_id: str, user_id: str) -> Presence | None:
        return self._presence.get((meeting_id, user_id))

    async def append_segment(self, meeting_id: str, segment: Segment) -> None:
        self._segments.setdefault(meeting_id, []).append(segment)

    async def segments(self, meeting_id: str, *, after: str = "", limit: int = 100
                       ) -> tuple[list[Segment], str]:
        stored = self._segments.get(meeting_id, [])
        if after and not (after.isascii() and after.isdigit() and len(after) <= 18):
            raise BadRequest("invalid cursor", code=ErrorCode.INVALID_CURSOR)
        start = int(after) if after else 0
        page = stored[start:start + limit]
        end = start + len(page)
        return page, str(end) if end < len(stored) else ""

    async def aclose(self) -> None:
        return None
