"""Transcripts: what the transcription tap reports, stored and sent to the room, and the tap
job that brings a tap to a room that transcribes.

Finals are stored before anyone is told (nothing emitted is lost if the tap dies); an empty final
only clears the speaker's partial line. A leaver's last words arrive after they left, so seats
removed lately are remembered (bounded) for attribution.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from . import protocol as p
from .clock import now_ms
from .codes import ErrorCode
from .errors import Forbidden, NotFound
from .store import Room, Seat, Segment, Store
from .tapjobs import TapJob, TapJobs
from .tokens import TokenService

if TYPE_CHECKING:
    from .client_socket import ClientSocket
    from .routing import Router

logger = logging.getLogger(__name__)

#: Seats remembered after they left, for a leaver's late final words.
RECENTLY_LEFT = 256


class Transcripts:
    """The tap's ``transcript`` messages, and tap jobs for transcription rooms."""

    def __init__(self, *, store: Store, router: Router, tokens: TokenService,
                 tap_jobs: TapJobs | None, token_ttl_s: int) -> None:
        self.store = store
        self.router = router
        self.tokens = tokens
        #: Where transcription rooms get their tap (None: transcription off in this deployment).
        self.tap_jobs = tap_jobs
        self.token_ttl_s = token_ttl_s
        self._recently_left: dict[str, Seat] = {}

    def note_left(self, seat: Seat) -> None:
        """Remember a removed seat so its owner's last words can still be attributed."""
        self._recently_left[seat.peer_id] = seat
        while len(self._recently_left) > RECENTLY_LEFT:  # bounded: oldest first
            self._recently_left.pop(next(iter(self._recently_left)))

    async def accept(self, conn: ClientSocket, msg: p.TranscriptIn) -> None:
        """The tap reports text: finals are stored first, then every person in the room gets
        it."""
        if conn.role != "tap":
            raise Forbidden("only the transcription tap sends transcripts")
        speaker = self.router.seat(conn.room_id, msg.peer_id) \
            or self._recently_left.get(msg.peer_id)  # their last words arrive after they left
        if speaker is None or speaker.room_id != conn.room_id:
            raise NotFound(f"no peer {msg.peer_id} in this room", code=ErrorCode.UNKNOWN_PEER)
        room = self.router.room(conn.room_id)
        if msg.final and msg.text.strip() and room is not None:  # empty finals only clear
            await self.store.append_segment(room.meeting_id, Segment(
                segment_id=msg.segment_id, peer_id=msg.peer_id, user_id=speaker.user_id,
                text=msg.text, start_ms=msg.start_ms, end_ms=msg.end_ms))
        await self.router.broadcast(conn.room_id, p.Transcript(
            peer_id=msg.peer_id, segment_id=msg.segment_id, text=msg.text, final=msg.final,
            start_ms=msg.start_ms, end_ms=msg.end_ms, user_id=speaker.user_id),
            exclude=conn.peer_id)

    async def ensure_tap(self, room: Room) -> None:
        """Queue a tap job for a transcription room that has no tap (idempotent per room)."""
        if self.tap_jobs is None or not room.features.transcription or room.state != "open":
            return
        meeting = await self.store.get_meeting(room.meeting_id)
        if meeting is None:
            return
        token, _ = self.tokens.mint_join(room.room_id, "tap", "tap", name="Transcription",
                                         ttl_s=self.token_ttl_s)
        job = TapJob(job_id="tap_" + secrets.token_hex(6), room_id=room.room_id,
                     meeting_id=room.meeting_id, token=token,
                     started_at_ms=meeting.started_at or now_ms())
        if await self.tap_jobs.enqueue(job):
            logger.info("room=%s tap job %s queued", room.room_id, job.job_id)
