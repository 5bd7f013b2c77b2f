"""Transcripts: what the transcription tap reports, stored and sent to the room, and the tap
job that brings a tap to a room that transcribes.

Finals are stored before anyone is told (nothing emitted is lost if the tap dies); an empty final
only clears the speaker's partial line. A leaver's last words arrive after they left, so seats
removed lately are remembered (bounded) for attribution. The tap's ``transcript-status`` (how
transcription keeps up; segments it could not transcribe) is counted
(``connvo_transcript_segments_dropped_total``, ``connvo_transcript_status_total``) and
broadcast, so a room is never shown "transcribing" while its speech goes untranscribed.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from . import protocol as p
from .clock import now_ms
from .codes import ErrorCode
from .errors import BadRequest, Forbidden, NotFound
from .store import Room, Seat, Segment, Store
from .tapjobs import TapJob, TapJobs
from .tokens import TokenService

if TYPE_CHECKING:
    from .client_socket import ClientSocket
    from .routing import Router

logger = logging.getLogger(__name__)

#: Seats remembered after they left, for a leaver's late final words.
RECENTLY_LEFT = 256


def needs_tap(room: Room) -> bool:
    """Whether the room gets the server peer: it transcribes, records or has an agent (role
    ``agent`` then, else ``tap``)."""
    features = room.features
    return features.transcription or features.recording or features.agent is not None


#: The agent participant's user id (one agent per room; its seat replaces a dropped agent's).
AGENT_USER = "agent"


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

    def _speaker(self, conn: ClientSocket, peer_id: str) -> Seat:
        speaker = self.router.seat(conn.room_id, peer_id) \
            or self._recently_left.get(peer_id)  # their last words arrive after they left
        if speaker is None or speaker.room_id != conn.room_id:
            raise NotFound(f"no peer {peer_id} in this room", code=ErrorCode.UNKNOWN_PEER)
        return speaker

    async def accept(self, conn: ClientSocket, msg: p.TranscriptIn | p.TranscriptStatusIn
                     ) -> None:
        """The server peer reports text (finals are stored first, then every person in the
        room gets it) or how transcription keeps up (:meth:`status`). The agent also reports
        its own lines (``peer_id`` its own; ``interrupted`` only on those)."""
        if conn.role not in p.SERVER_ROLES:
            raise Forbidden("only the transcription tap sends transcripts")
        if isinstance(msg, p.TranscriptStatusIn):
            await self.status(conn, msg)
            return
        if msg.interrupted and msg.peer_id != conn.peer_id:
            raise BadRequest("transcript: only the agent's own lines are interrupted",
                             code=ErrorCode.INVALID_MESSAGE)
        speaker = self._speaker(conn, msg.peer_id)
        room = self.router.room(conn.room_id)
        if msg.final and msg.text.strip() and room is not None:  # empty finals only clear
            await self.store.append_segment(room.meeting_id, Segment(
                segment_id=msg.segment_id, peer_id=msg.peer_id, user_id=speaker.user_id,
                text=msg.text, start_ms=msg.start_ms, end_ms=msg.end_ms,
                interrupted=msg.interrupted))
        await self.router.broadcast(conn.room_id, p.Transcript(
            peer_id=msg.peer_id, segment_id=msg.segment_id, text=msg.text, final=msg.final,
            start_ms=msg.start_ms, end_ms=msg.end_ms, user_id=speaker.user_id,
            interrupted=msg.interrupted), exclude=conn.peer_id)

    async def status(self, conn: ClientSocket, msg: p.TranscriptStatusIn) -> None:
        """The tap says how transcription keeps up: counted, then told to everyone else.
        ``dropping`` names the speaker and how many of their segments were lost."""
        if (msg.state == "dropping") != (msg.dropped > 0) or \
                (msg.state == "dropping" and msg.peer_id is None):
            raise BadRequest("transcript-status: dropping comes with peerId and dropped >= 1, "
                             "and only dropping has dropped", code=ErrorCode.INVALID_MESSAGE)
        user_id = self._speaker(conn, msg.peer_id).user_id if msg.peer_id is not None else ""
        metrics = self.router.metrics
        metrics.transcript_status.labels(state=msg.state).inc()
        if msg.dropped:
            metrics.transcript_dropped.inc(msg.dropped)
            logger.warning("room=%s tap=%s: %d segment(s) of peer=%s not transcribed (%.1f s "
                           "behind)", conn.room_id, conn.peer_id, msg.dropped, msg.peer_id,
                           msg.behind_ms / 1000)
        else:
            logger.info("room=%s tap=%s: transcription %s (%.1f s behind)", conn.room_id,
                        conn.peer_id, msg.state, msg.behind_ms / 1000)
        await self.router.broadcast(conn.room_id, p.TranscriptStatus(
            state=msg.state, peer_id=msg.peer_id, user_id=user_id, dropped=msg.dropped,
            behind_ms=msg.behind_ms), exclude=conn.peer_id)

    async def recording(self, conn: ClientSocket, msg: p.RecordingIn) -> None:
        """The server peer started or stopped recording: everyone else is told."""
        if conn.role not in p.SERVER_ROLES:
            raise Forbidden("only the room's server peer reports recording")
        room = self.router.room(conn.room_id)
        if room is None or not room.features.recording:
            raise BadRequest("this room does not record", code=ErrorCode.INVALID_MESSAGE)
        logger.info("room=%s tap=%s: recording %s", conn.room_id, conn.peer_id, msg.state)
        await self.router.broadcast(conn.room_id, p.Recording(state=msg.state),
                                    exclude=conn.peer_id)

    async def ensure_tap(self, room: Room) -> None:
        """Queue a tap job for a room that transcribes, records or has an agent and has no
        server peer (idempotent per room). A room with an agent gets ONE job whose token has
        role ``agent`` and the persona's name: the same server peer speaks, hears, and
        transcribes (always: the agent hears the conversation anyway, so the room's transcript
        holds it whether or not ``transcriptionEnabled`` was set) and records if asked."""
        features = room.features
        if self.tap_jobs is None or not needs_tap(room) or room.state != "open":
            return
        meeting = await self.store.get_meeting(room.meeting_id)
        if meeting is None:
            return
        agent = features.agent
        if agent is not None:
            token, _ = self.tokens.mint_join(room.room_id, AGENT_USER, "agent", name=agent.name,
                                             ttl_s=self.token_ttl_s)
        else:
            token, _ = self.tokens.mint_join(room.room_id, "tap", "tap", name="Transcription",
                                             ttl_s=self.token_ttl_s)
        job = TapJob(job_id="tap_" + secrets.token_hex(6), room_id=room.room_id,
                     meeting_id=room.meeting_id, token=token,
                     started_at_ms=meeting.started_at or now_ms(),
                     transcription=features.transcription or agent is not None,
                     recording=features.recording, agent=agent)
        if await self.tap_jobs.enqueue(job):
            logger.info("room=%s %s job %s queued", room.room_id,
                        "agent" if agent is not None else "tap", job.job_id)
