"""One room the tap serves: a ``tap`` peer, one pipeline per speaker, transcripts out; and,
when the meeting records, a :class:`~media.tap.recorder.Recorder` fed the same tracks' encoded
frames (one uplink per participant serves both; a room that only records decodes nothing). In
a room that records video (``joined.features.recordVideo``) participants send the tap their
video too; it is recorded as sent and never decoded.

:class:`TapSession` joins with the hub-minted token of its :class:`~signaling.tapjobs.TapJob`
as a :class:`~media.peer.PeerClient` with role ``tap`` (it receives every participant's audio
and sends nothing), feeds each participant's decoded frames to a
:class:`~media.tap.pipeline.SpeakerPipeline`, and sends every result as a ``transcript`` frame
naming the *speaker's* peer id, with times in ms since the meeting started. Partials are sent
only when they have words; a final is sent when it has words or replaces partials. How
transcription keeps up goes to the room as ``transcript-status`` (:mod:`media.tap.overload`):
when a speaker's recogniser falls behind, and for every segment it could not transcribe.

:meth:`TapSession.run` returns why it stopped: ``ended`` (room ended, gone, or the tap was
removed), ``empty`` (no participant for ``linger_empty_s``) -- both mean the job is done -- or
``closed`` (:meth:`TapSession.aclose` was called: the job is not done). It raises :class:`~media.errors.PeerClientError` when the hub cannot be joined or the connection
is lost for good; the job is then left to be reclaimed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

import av

from media.agent.session import AgentFactory, AgentPart, agent_factory_for, tuned
from media.config import PeerClientConfig
from media.errors import (
    ForbiddenError,
    KickedError,
    MediaTimeoutError,
    NotFoundError,
    PeerClientError,
    RoomEndedError,
    TokenError,
)
from media.peer import PeerClient
from media.receive import EncodedFrame
from media.sources import SourceSpec
from signaling import protocol
from signaling.recording_storage import RecordingStorage, open_storage
from signaling.tapjobs import TapJob

from .config import TapConfig
from .overload import RoomStatus
from .pipeline import SegmentTimes, SpeakerPipeline
from .recorder import Recorder
from .transcriber import Recognition, Transcriber

logger = logging.getLogger(__name__)

Outcome = Literal["ended", "empty", "closed"]
_FINISHED = (RoomEndedError, NotFoundError, KickedError, ForbiddenError, TokenError)
_TICK_S = 0.5
_IDLE_SEGMENT_S = 1.0
_MAX_TEXT = 4_000


class TapSession:
    """The tap in one room. Single use: :meth:`run` once, :meth:`aclose` (idempotent)."""

    def __init__(self, job: TapJob, *, ws_url: str, config: TapConfig,
                 transcriber: Transcriber, worker_id: str = "",
                 storage: RecordingStorage | None = None,
                 agent_factory: AgentFactory | None = None) -> None:
        self.job = job
        self.config = config
        #: Where the recorder's files go: the worker's (shared by its rooms), else its own.
        self.storage = storage if storage is not None else open_storage(
            config.recording_dir, config.recording_s3)
        self._own_storage = storage is None
        self.ws_url = ws_url
        self.worker_id = worker_id
        self._transcriber = transcriber
        self._client: PeerClient | None = None
        self._pipelines: dict[str, SpeakerPipeline] = {}
        #: The room's recorder (meetings that record), created when the room is joined.
        self.recorder: Recorder | None = None
        self._room_ended = False
        self._closed = False
        self._log = f"room={job.room_id} tap={worker_id}"
        self._agent_factory = agent_factory
        #: The agent (jobs with ``agent``), made when the room is joined.
        self.agent: AgentPart | None = None
        #: This server peer's own ids (the agent's), by peer id: (scenario id, name).
        self._self_names: dict[str, tuple[str, str]] = {}
        #: What the server peer hears: transcription, or an agent (who hears anyway).
        self._hears = job.transcription or job.agent is not None
        #: How transcription keeps up in this room (what the room was last told).
        self.status = RoomStatus()
        #: Transcript frames sent (finals, partials) and not sent (socket gone).
        self.finals_sent = 0
        self.partials_sent = 0
        self.send_failures = 0

    @property
    def client(self) -> PeerClient | None:
        return self._client

    @property
    def pipelines(self) -> dict[str, SpeakerPipeline]:
        """Per speaker peer id (live view; for tests and stats)."""
        return self._pipelines

    # ------------------------------------------------------------------ running

    async def run(self) -> Outcome:
        if self.job.agent is not None and self.agent is None:
            try:
                await self._make_agent(self.job.agent)
            except ValueError as exc:  # no such scenario here, a voice that cannot start
                # Not a worker's fault another worker would not share: the job is done (the
                # room gets a new one when the next person joins).
                logger.error("%s cannot make the agent: %s: job done", self._log, exc)
                return "ended"
        try:
            client = await self._join()
        except _FINISHED as exc:
            logger.info("%s cannot join (%s): job done", self._log, exc.code)
            return "ended"
        except PeerClientError:
            if self._closed:
                return "closed"
            raise
        try:
            return await self._serve(client)
        except _FINISHED as exc:
            logger.info("%s %s: job done", self._log, exc.code)
            return "ended"

    async def _join(self) -> PeerClient:
        agent = self.agent
        config = PeerClientConfig(
            ws_url=self.ws_url, token=self.job.token,
            audio=SourceSpec(agent.audio) if agent is not None else None,
            pin_host_addresses=self.config.pin_host_addresses,
            ice_timeout_s=self.config.ice_timeout_s, name=f"tap={self.worker_id}",
            decode_audio=self._hears,  # recording alone needs no PCM
            decode_video=False,  # video (rooms that record it) is only ever written as sent
            audio_prefetch=1 if agent is not None else None,  # the agent hears promptly
        )
        if self.job.recording and self.recorder is None:
            self.recorder = Recorder(
                self.storage, meeting_id=self.job.meeting_id,
                started_at_ms=self.job.started_at_ms, user_of=self._user_of,
                name_of=self._name_of, log_prefix=self._log)
        recorder = self.recorder
        deadline = time.monotonic() + self.config.join_retry_s
        delay = 0.5
        while True:
            client = PeerClient(
                config, on_audio_frame=self._on_audio if self._hears else None,
                on_encoded_audio=recorder.on_encoded if recorder is not None else None,
                on_encoded_video=recorder.on_encoded if recorder is not None else None)
            self._client = client
            try:
                joined = await client.connect()
            except PeerClientError as exc:
                await client.aclose()
                if self._closed or not exc.retryable or time.monotonic() + delay > deadline:
                    raise
                # room-full: a dead tap's seat is still held (until its hub worker is reaped).
                logger.info("%s join refused (%s); retrying in %.1f s", self._log, exc.code,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
                continue
            logger.info("%s joined as peer=%s (%s); %d participant(s)", self._log,
                        joined.peer_id, joined.role, len(self._participants(client)))
            if agent is not None:
                if recorder is not None:
                    self._record_agent(agent, recorder, joined.peer_id)
                agent.joined(joined.peer_id)
            self._tell_recording("recording")
            return client

    def _record_agent(self, agent: AgentPart, recorder: Recorder, peer_id: str) -> None:
        """The agent's own voice goes into the recording as its track (the server peer sends
        it and never receives it): the packets as sent, on the meeting clock."""
        track = f"agent-{peer_id}"
        self._self_names[peer_id] = (agent.spec.scenario_id, agent.spec.name)

        def monitor(payload: bytes, timestamp: int) -> None:
            recorder.on_encoded(peer_id, EncodedFrame(
                track=track, codec="audio/opus", data=payload,
                timestamp=timestamp & 0xFFFFFFFF, arrival=time.time()))

        agent.audio.monitor = monitor

    def has_participants(self) -> bool:
        """Whether anyone but a tap is in the room (as far as the hub told us)."""
        client = self._client
        return client is not None and client.state == "joined" and \
            bool(self._participants(client))

    @staticmethod
    def _participants(client: PeerClient) -> list[str]:
        return [p.peer_id for p in client.room_peers.values()
                if p.role not in protocol.SERVER_ROLES]

    async def _make_agent(self, spec: protocol.AgentSpec) -> None:
        if self._agent_factory is None:
            self._agent_factory = agent_factory_for(self.config.agent)
        brain, voice, voice_spec = await self._agent_factory(spec)
        self.agent = AgentPart(spec, brain, voice, voice_spec, send=self._send_line,
                               zero_ms=self.job.started_at_ms, log=self._log)
        # Turn-taking and barge-in want a quicker onset and a shorter hang-over.
        self.config = tuned(self.config, self.agent.tuning)

    def _send_line(self, message: protocol.TranscriptIn) -> None:
        client = self._client
        if client is None:
            raise PeerClientError("not joined")
        client.send(message)

    def _check_connected(self, client: PeerClient) -> None:
        """Begin the agent's conversation once a person's connection is up."""
        agent = self.agent
        if agent is None or agent.conversation.began:
            return
        for peer_id in self._participants(client):
            remote = client.remote_peers.get(peer_id)
            if remote is not None and remote.state == "connected":
                agent.person_connected()
                return

    async def _serve(self, client: PeerClient) -> Outcome:
        empty_since: float | None = None
        with client.messages() as messages:
            while True:
                try:
                    message = await messages.get(timeout=_TICK_S)
                except MediaTimeoutError:
                    message = None
                except StopAsyncIteration:
                    if self._closed:
                        return "closed"
                    if client.error is not None:
                        raise client.error from None
                    raise RoomEndedError("tap client closed") from None
                if isinstance(message, protocol.PeerLeft):
                    self._drop_speaker(message.peer_id)
                elif isinstance(message, protocol.RoomEndedMsg):
                    self._room_ended = True
                    raise RoomEndedError(message.reason)
                elif isinstance(message, protocol.PeerJoined) \
                        and message.peer.role not in protocol.SERVER_ROLES:
                    # the newcomer knows nothing yet
                    self._tell_recording("recording")
                    if self.status.state != "live":
                        self._tell(self.status.current())
                pipelines = list(self._pipelines.values())
                for pipeline in pipelines:
                    pipeline.flush_if_idle(_IDLE_SEGMENT_S)
                if self.agent is not None:
                    self._check_connected(client)
                    self.agent.tick()
                self._tell(self.status.update(
                    degraded=any(p.degraded for p in pipelines),
                    behind_s=max((p.behind_s for p in pipelines), default=0.0)))
                if self._participants(client):
                    empty_since = None
                    continue
                now = time.monotonic()
                empty_since = empty_since or now
                if now - empty_since >= self.config.linger_empty_s:
                    logger.info("%s no participant for %.0f s: leaving", self._log,
                                self.config.linger_empty_s)
                    return "empty"

    # ------------------------------------------------------------------ audio and results

    def _on_audio(self, peer_id: str, frame: av.AudioFrame) -> None:
        pipeline = self._pipelines.get(peer_id)
        if pipeline is None:
            if self._closed:
                return
            name = f"room={self.job.room_id} peer={peer_id}"
            agent = self.agent
            pipeline = SpeakerPipeline(
                self.config, self._transcriber,
                lambda segment, times, result: self._on_result(peer_id, times, segment, result),
                name=name,
                on_edge=(lambda event, segment, time_s: agent.edge(peer_id, event, segment,
                                                                   time_s))
                if agent is not None else None,
            )
            self._pipelines[peer_id] = pipeline
            logger.info("%s audio from peer=%s", self._log, peer_id)
            if agent is not None:
                agent.person_connected()  # their audio flows: the welcome may begin
        pipeline.push_frame(frame)

    def _user_of(self, peer_id: str) -> str:
        if peer_id in self._self_names:  # the agent itself: its user is its scenario
            return f"agent:{self._self_names[peer_id][0]}"
        client = self._client
        info = client.room_peers.get(peer_id) if client is not None else None
        return info.user_id if info is not None else ""

    def _name_of(self, peer_id: str) -> str:
        if peer_id in self._self_names:
            return self._self_names[peer_id][1]
        client = self._client
        info = client.room_peers.get(peer_id) if client is not None else None
        return info.name if info is not None else ""

    def _tell_recording(self, state: protocol.RecordingState) -> None:
        """Tell the room it is (no longer) recorded (rooms that record only)."""
        client = self._client
        if self.recorder is None or client is None or client.state != "joined" \
                or self._room_ended:  # an ended room hears nothing more
            return
        try:
            client.send(protocol.RecordingIn(state=state))
        except PeerClientError as exc:
            logger.warning("%s recording %s not sent: %s", self._log, state, exc.message)

    def _drop_speaker(self, peer_id: str) -> None:
        if self.recorder is not None:
            self.recorder.close_peer(peer_id)
        pipeline = self._pipelines.pop(peer_id, None)
        if pipeline is not None:
            pipeline.close()  # its last final still arrives and is sent

    def _on_result(self, peer_id: str, times: SegmentTimes, segment_id: str,
                   result: Recognition) -> None:
        if result.final and self.agent is not None:
            info = self._client.room_peers.get(peer_id) if self._client is not None else None
            self.agent.final(peer_id, segment_id, result.text,
                             info.name if info is not None else "")
        if result.dropped:  # none or only part of it was transcribed: the room is told
            logger.warning("%s peer=%s segment %s not transcribed (%d dropped in this room)",
                           self._log, peer_id, segment_id, self.status.dropped_total + 1)
            self._tell(self.status.dropped(peer_id))
        if not result.text and not (result.final and times.partial_sent):
            return  # nothing to say, nothing to replace
        zero = self.job.started_at_ms
        start_ms = max(0, round(times.start_s * 1000) - zero)
        end_s = times.end_s if result.final and times.end_s is not None else times.last_audio_s
        end_ms = max(start_ms, round(end_s * 1000) - zero)
        message = protocol.TranscriptIn(
            peer_id=peer_id, segment_id=segment_id, text=result.text[:_MAX_TEXT],
            final=result.final, start_ms=start_ms, end_ms=end_ms,
        )
        client = self._client
        try:
            if client is None:
                raise PeerClientError("not joined")
            client.send(message)
        except PeerClientError as exc:
            self.send_failures += 1
            logger.warning("%s transcript %s for peer=%s not sent: %s", self._log, segment_id,
                           peer_id, exc.message)
            return
        if result.final:
            self.finals_sent += 1
            logger.info("%s peer=%s final %s [%d-%d ms]: %r", self._log, peer_id, segment_id,
                        start_ms, end_ms, result.text)
        else:
            self.partials_sent += 1
            times.partial_sent = True

    def _tell(self, message: protocol.TranscriptStatusIn | None) -> None:
        """Send a ``transcript-status`` frame (if any; not when the socket is gone)."""
        client = self._client
        if message is None or client is None:
            return
        if message.state != "dropping":
            logger.info("%s transcription %s (%.1f s behind)", self._log, message.state,
                        message.behind_ms / 1000)
        try:
            client.send(message)
        except PeerClientError as exc:
            logger.warning("%s transcript-status not sent: %s", self._log, exc.message)

    # ------------------------------------------------------------------ closing

    async def aclose(self, drain_s: float = 1.0) -> None:
        """Stop transcribing and leave (idempotent). Segments in progress are ended and their
        finals sent if they arrive within ``drain_s``."""
        if self._closed:
            return
        self._closed = True
        pipelines = list(self._pipelines.values())
        self._pipelines.clear()
        for pipeline in pipelines:
            pipeline.close()
        if self.agent is not None:
            await self.agent.aclose()
        client = self._client
        if self.recorder is not None:
            await self.recorder.aclose()  # every track file finished and committed
            self._tell_recording("stopped")
        if client is not None and client.state == "joined" and drain_s > 0:
            deadline = time.monotonic() + drain_s
            while any(p.open_results for p in pipelines) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if client is not None:
            await client.aclose()
        if self._own_storage:
            await self.storage.aclose()
        logger.info("%s left (%d finals, %d partials sent)", self._log, self.finals_sent,
                    self.partials_sent)
