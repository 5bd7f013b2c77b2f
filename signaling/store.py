"""The state store interface and the value types it returns.

Every method is async and every value is an immutable ``msgspec.Struct``: callers never hold a
reference into the store's own state, so a ``RedisStore`` can stand in for :class:`MemoryStore`
without anyone noticing. Operations that must be atomic across workers (admission, state
transitions) are single methods here rather than read-then-write sequences in the caller.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from .codes import ErrorCode
from .errors import Conflict
from .protocol import MESH_LIMIT, Features, MediaState, PeerInfo

MeetingState = Literal["scheduled", "active", "concluded", "cancelled"]
Presence = Literal["invited", "joined", "left"]

#: The syntax of a transcript cursor, the same for every store (what it means is the store's: a
#: Redis stream entry id ``<ms>-<seq>``, a position in memory). ASCII digits only.
CURSOR_PATTERN = r"[0-9]{1,18}(-[0-9]{1,18})?"

#: States in which a meeting counts towards its organizer's quota of open meetings.
OPEN_STATES: tuple[MeetingState, ...] = ("scheduled", "active")


def quota_refusal(max_open: int) -> Conflict:
    """The error of :meth:`Store.create_meeting` for an organizer at ``max_open``."""
    return Conflict(f"you already have {max_open} open (scheduled or active) meetings, the "
                    "most allowed: end one first", code=ErrorCode.MEETING_QUOTA)


class Meeting(msgspec.Struct, frozen=True, kw_only=True):
    """A meeting as the seed API describes it. Times are unix milliseconds."""

    meeting_id: str
    title: str
    organizer_id: str
    organizer_email: str = ""
    description: str | None = None
    participant_emails: tuple[str, ...] = ()
    meeting_type: str | None = None
    max_participants: int = MESH_LIMIT
    recording: bool = False
    transcription: bool = False
    chat: bool = True
    screen_sharing: bool = True
    participant_video: bool = True
    participant_audio: bool = True
    waiting_room: bool = False
    auto_admit: bool = False
    #: Minutes from the start after which the room ends (``None``: no limit).
    max_duration_minutes: int | None = None
    #: ``webrtc`` or ``getstream``, decided at creation (see :func:`provider_for`); ``""`` in
    #: meetings stored before it was: then by ``max_participants`` alone.
    provider: str = ""
    scheduled_at: float | None = None
    duration: float | None = None
    state: MeetingState = "scheduled"
    room_id: str | None = None
    created_at: int = 0
    updated_at: int = 0
    started_at: int | None = None

    @property
    def video_provider(self) -> str:
        """``webrtc`` within the mesh limit, ``getstream`` (the backend's tier) above it."""
        if self.provider:
            return self.provider
        return "webrtc" if self.max_participants <= MESH_LIMIT else "getstream"

    @property
    def people(self) -> int:
        """The host plus the invited emails (the host's own email counted once)."""
        return len(set(self.participant_emails) - {self.organizer_email}) + 1


def provider_for(people: int, max_participants: int | None, capacity: int) -> str:
    """The video provider of a meeting: ``webrtc`` when everyone invited (the host included)
    and the ``maxParticipants`` asked for fit in a mesh room of ``capacity`` seats, else
    ``getstream`` (the backend's tier). Before this, five invited emails and no
    ``maxParticipants`` made a ``webrtc`` meeting in which two of the six could never sit."""
    biggest = max(people, max_participants or 0)
    return "webrtc" if biggest <= min(capacity, MESH_LIMIT) else "getstream"


class Room(msgspec.Struct, frozen=True, kw_only=True):
    """A mesh room: one per meeting."""

    room_id: str
    meeting_id: str
    capacity: int
    features: Features
    state: Literal["open", "ended"] = "open"
    created_at: int = 0
    ended_at: int | None = None
    end_reason: str = ""


class Seat(msgspec.Struct, frozen=True, kw_only=True):
    """One peer's place in a room. ``connected`` is false while the peer is in its resume grace
    period; ``resume_hash`` is the SHA-256 of its resume secret (the secret itself is never
    stored)."""

    peer_id: str
    room_id: str
    user_id: str
    role: str
    name: str = ""
    media: MediaState = MediaState()
    joined_at: int = 0
    worker_id: str = ""
    connected: bool = True
    resume_hash: str = ""
    detached_at: int | None = None

    def info(self) -> PeerInfo:
        """What other peers are told about this seat."""
        return PeerInfo(
            peer_id=self.peer_id, user_id=self.user_id, role=self.role,  # type: ignore[arg-type]
            name=self.name, media=self.media, joined_at=self.joined_at,
        )


class Admission(msgspec.Struct, frozen=True):
    """Result of :meth:`Store.admit`: the new seat, the seats of the same user it
    replaced (their owners must be told ``peer-left``), and every seat of the room afterwards
    in join order."""

    seat: Seat
    replaced: tuple[Seat, ...] = ()
    seats: tuple[Seat, ...] = ()


class Segment(msgspec.Struct, frozen=True, kw_only=True):
    """One final transcript segment, as stored and as returned by the API."""

    segment_id: str
    peer_id: str
    user_id: str
    text: str
    start_ms: int
    end_ms: int
    #: An agent's line cut off by a person (barge-in): ``text`` is what was said of it.
    interrupted: bool = False


class Store(Protocol):
    """Room, meeting and presence state shared by every hub worker of a deployment."""

    async def ping(self) -> None:
        """Raise :class:`~signaling.errors.Unavailable` when the store cannot be reached."""

    # meetings
    async def create_meeting(self, meeting: Meeting, *, max_open: int = 0) -> None:
        """Store a new meeting; :class:`Conflict` if the id exists. With ``max_open`` > 0,
        :class:`Conflict` ``meeting-quota`` (:func:`quota_refusal`) when its organizer already
        has that many open (:data:`OPEN_STATES`) meetings; checked and taken in one step, so
        concurrent creates never overshoot. A meeting stops counting once it is concluded,
        cancelled or expired."""

    async def get_meeting(self, meeting_id: str) -> Meeting | None: ...

    async def transition_meeting(
        self, meeting_id: str, state: MeetingState, *, from_states: tuple[MeetingState, ...],
        now_ms: int,
    ) -> Meeting:
        """Atomically move a meeting to ``state`` if it is in one of ``from_states``; return the
        meeting as it is afterwards. :class:`NotFound` / :class:`Conflict` otherwise. Moving to
        ``active`` sets ``started_at`` once."""

    async def attach_room(self, room: Room) -> Room:
        """Create ``room`` for its meeting unless the meeting already has one; return the
        meeting's room either way (idempotent ``initializeWebRTCRoom``)."""

    # rooms
    async def get_room(self, room_id: str) -> Room | None: ...

    async def end_room(self, room_id: str, reason: str, *, now_ms: int) -> Room | None:
        """Mark a room ended and drop its seats and waiting room; return the ended room, or
        ``None`` when it was already ended or does not exist (so only one caller announces the
        end)."""

    # seats
    async def admit(self, seat: Seat) -> Admission:
        """Atomically give ``seat`` a place in its room: :class:`NotFound` (no room),
        :class:`RoomEnded`, :class:`Forbidden` (user removed by the host) or :class:`RoomFull`
        (capacity non-tap seats, or a second tap). A user holds at most one seat per room: the
        user's other seat (detached or not) is replaced, and its socket must be closed.
        A person's presence in the meeting becomes ``joined`` in the same step."""

    async def reattach(
        self, room_id: str, peer_id: str, resume_hash: str, user_id: str, worker_id: str
    ) -> Seat | None:
        """Give a detached (or still attached) seat back to its owner on ``worker_id``; ``None``
        when the seat is gone or the resume secret or user does not match."""

    async def detach(self, room_id: str, peer_id: str, *, now_ms: int,
                     worker_id: str = "") -> Seat | None:
        """Mark a seat as waiting for resume. With ``worker_id``, only while the seat is still
        bound to that worker (a peer that already resumed elsewhere is left alone)."""

    async def remove_seat(
        self, room_id: str, peer_id: str, *, only_if_detached_since: int | None = None,
        only_if_worker: str | None = None,
    ) -> Seat | None:
        """Remove a seat and return it (``None`` if absent). With ``only_if_detached_since``, only
        a seat still detached since that time is removed (a resumed peer keeps its seat); with
        ``only_if_worker``, only a seat still bound to that worker (the reaper)."""

    async def update_media(self, room_id: str, peer_id: str, media: MediaState) -> Seat | None: ...

    async def seats(self, room_id: str) -> list[Seat]:
        """All seats of a room, in join order."""

    async def ban(self, room_id: str, user_id: str) -> None:
        """Refuse further joins of ``user_id`` into the room (removed by the host)."""

    # the waiting room
    async def knock(self, entry: Seat, *, max_waiting: int) -> tuple[Seat, ...]:
        """Put ``entry`` (a peer that holds no seat) in its room's waiting room and return the
        same user's earlier knocks it replaced (their sockets must be closed), or raise
        :class:`NotFound`, :class:`RoomEnded`, :class:`Forbidden`
        (removed by the host) as :meth:`admit`, or :class:`RoomFull` ``waiting-room-full`` when
        ``max_waiting`` others wait already; checked and written in one step."""

    async def unknock(self, room_id: str, peer_id: str) -> Seat | None:
        """Take a peer out of the waiting room and return its entry; ``None`` when it was not
        there (so of two hosts admitting at once, one gets the entry)."""

    async def knocking(self, room_id: str) -> list[Seat]:
        """Everyone in the room's waiting room, oldest knock first."""

    # presence
    async def set_presence(self, meeting_id: str, user_id: str, presence: Presence) -> None: ...

    async def presence(self, meeting_id: str, user_id: str) -> Presence | None: ...

    # transcripts
    async def append_segment(self, meeting_id: str, segment: Segment) -> None:
        """Store a final segment durably, after those stored before it."""

    async def segments(self, meeting_id: str, *, after: str = "", limit: int = 100
                       ) -> tuple[list[Segment], str]:
        """Up to ``limit`` segments stored after cursor ``after`` (``""``: from the start) and
        the cursor to continue from (``""`` when there are no more)."""

    async def aclose(self) -> None: ...


#: Every store drops a meeting's state this long after its last write unless configured
#: otherwise (``redis.key_ttl_s``).
DEFAULT_KEY_TTL_S = 48 * 3600
