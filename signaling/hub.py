"""The room hub of one worker: joins, relays, presence, resume grace and room lifecycle.

The hub holds this worker's connections and a routing view (``roster``) of every room it has
peers in. State that other workers must see lives in the :class:`~signaling.store.Store`; frames
for peers on other workers go through the :class:`~signaling.bus.Bus`. A frame for a local peer
never leaves the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from . import protocol as p
from .bus import Bus, Envelope
from .connection import Connection
from .errors import BadRequest, Forbidden, HubError, NotFound, RoomEnded, Unavailable
from .metrics import Metrics
from .settings import Settings
from .store import Room, Seat, Segment, Store
from .tapjobs import TapJob, TapJobs
from .tasks import TaskSet, cancel_all
from .tokens import TokenService
from .workers import WorkerRegistry

logger = logging.getLogger(__name__)

IceServersFor = Callable[[str], list[p.IceServer]]
_SENDING_DIRECTIONS = ("a=sendrecv", "a=sendonly")


def now_ms() -> int:
    return int(time.time() * 1000)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _announces(frame: bytes, known: set[str]) -> bool:
    """Whether ``frame`` is a ``peer-joined`` for a peer already listed in ``joined.peers``."""
    if b'"peer-joined"' not in frame:
        return False
    message = p.decode_server(frame)
    return isinstance(message, p.PeerJoined) and message.peer.peer_id in known


def _error(exc: HubError) -> bytes:
    return p.encode(p.Error(code=exc.code, message=exc.message, retryable=exc.retryable))


class Hub:
    """Everything one worker does for its websocket peers."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        bus: Bus,
        tokens: TokenService,
        ice_servers_for: IceServersFor,
        metrics: Metrics,
        worker_id: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.tokens = tokens
        self.ice_servers_for = ice_servers_for
        self.metrics = metrics
        self.worker_id = worker_id
        self._conns: dict[str, Connection] = {}  # peer_id -> this worker's connection
        self._sockets: set[Connection] = set()  # every open socket, joined or not
        self._rosters: dict[str, dict[str, Seat]] = {}  # room_id -> peer_id -> seat
        self._rooms: dict[str, Room] = {}  # room_id -> room, for rooms with local peers
        #: Seats removed lately, so the tap can still attribute a leaver's final words.
        self._recently_left: dict[str, Seat] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}  # "grace:<peer>" / "empty:<room>"
        self._tasks: set[asyncio.Task[None]] = set()
        self._cleanups = TaskSet(f"hub {worker_id}", logger=logger)  # closed sockets detaching
        self._closed = False
        #: Set when a store call failed half-way (outage): the next tick runs reconcile().
        self.needs_repair = True
        self._ticks = 0
        #: Set by the app when state is shared (Redis): heartbeats and the dead-worker reaper.
        self.registry: WorkerRegistry | None = None
        #: Where transcription rooms get their tap (None: transcription off in this deployment).
        self.tap_jobs: TapJobs | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.bus.start(self.worker_id, self._on_envelope)

    @property
    def closing(self) -> bool:
        """True once shutdown started."""
        return self._closed

    @property
    def socket_count(self) -> int:
        return len(self._sockets)

    @property
    def peer_count(self) -> int:
        return len(self._conns)

    @property
    def room_count(self) -> int:
        return len(self._rosters)

    def track(self, conn: Connection) -> None:
        self._sockets.add(conn)

    def untrack(self, conn: Connection) -> None:
        self._sockets.discard(conn)

    def sockets(self) -> list[Connection]:
        return list(self._sockets)

    def spawn_cleanup(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a closed socket's cleanup (leave or detach); shutdown waits for these."""
        self._cleanups.spawn(coro, "socket cleanup")

    async def aclose(self, timeout: float = 5.0) -> None:
        """Staged shutdown: tell every client we are going away (1001), wait for the writers
        with a timeout, then cancel timers. Peers keep their seats for the resume grace period
        so they can resume on another worker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        sockets = list(self._sockets)
        logger.info("shutdown: closing %d websockets with 1001", len(sockets))
        for conn in sockets:
            conn.close_soon(p.CLOSE_GOING_AWAY, "server shutting down")
        await asyncio.gather(*(c.drain(timeout) for c in sockets), return_exceptions=True)
        for conn in sockets:  # whoever did not answer the close in time
            conn.abort()
        await self._cleanups.wait(timeout)  # the closed sockets' seats are detached (kept)
        await cancel_all([*self._timers.values(), *self._tasks])
        await self._cleanups.aclose()
        self._timers.clear()
        logger.info("shutdown: hub closed")

    def _spawn(self, coro: object, key: str | None = None) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        if key is not None:
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            self._timers[key] = task
            task.add_done_callback(lambda t: self._timers.pop(key, None)
                                   if self._timers.get(key) is t else None)
        else:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _cancel_timer(self, key: str) -> None:
        task = self._timers.pop(key, None)
        if task is not None:
            task.cancel()

    # ------------------------------------------------------------------ join

    async def join(self, conn: Connection, msg: p.Join) -> None:
        """Admit ``conn`` (or resume its seat) and tell the room. Raises :class:`HubError` with
        the close code the socket must be closed with."""
        started = time.perf_counter()
        claims = self.tokens.verify_join(msg.token, verify_exp=msg.resume is None)
        if msg.room_id is not None and msg.room_id != claims.room_id:
            raise Forbidden("the token is for another room", code="wrong-room")
        room = await self.store.get_room(claims.room_id)
        if room is None:
            raise NotFound("no such room", code="no-room")
        if room.state == "ended":
            raise RoomEnded("the room has ended")
        seat: Seat | None = None
        resume_token = ""
        if msg.resume:
            peer_id, _, secret = msg.resume.partition(".")
            seat = await self.store.reattach(
                room.room_id, peer_id, _hash(secret), claims.user_id, self.worker_id
            )
            if seat is not None:
                resume_token = msg.resume
                self._cancel_timer(f"grace:{peer_id}")
                stale = self._conns.get(peer_id)
                if stale is not None and stale is not conn:
                    stale.finished = True  # its close must not detach the resumed seat
                    stale.close_soon(4409, "resumed elsewhere")
            else:
                logger.info("room=%s user=%s resume refused (grace over?): joining afresh",
                            room.room_id, claims.user_id)
        resumed = seat is not None
        replaced: tuple[Seat, ...] = ()
        admitted: tuple[Seat, ...] = ()
        if seat is None:
            secret = secrets.token_urlsafe(18)
            peer_id = "p_" + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
            seat = Seat(
                peer_id=peer_id, room_id=room.room_id, user_id=claims.user_id, role=claims.role,
                name=claims.name, joined_at=now_ms(), worker_id=self.worker_id,
                resume_hash=_hash(secret),
            )
            admission = await self.store.admit(seat)
            resume_token = f"{peer_id}.{secret}"
            replaced, admitted = admission.replaced, admission.seats
            for old in replaced:
                self._cancel_timer(f"grace:{old.peer_id}")
                logger.info("room=%s peer=%s replaced by peer=%s (same user rejoined)",
                            room.room_id, old.peer_id, peer_id)
        conn.peer_id, conn.room_id = seat.peer_id, room.room_id
        conn.user_id, conn.role, conn.name = seat.user_id, seat.role, seat.name
        conn.features = room.features
        conn.hold()  # others may address us before our joined frame is out
        self._conns[seat.peer_id] = conn
        self._rooms[room.room_id] = room
        self._cancel_timer(f"empty:{room.room_id}")
        try:
            # Every store write happens before `joined`: a client that sees `joined` is in.
            if admitted:  # a fresh admission returned the room's seats and set presence
                seats = list(admitted)
                # Merge, never replace: concurrent admissions' replies may arrive out of order,
                # and an older snapshot must not drop a peer a newer one added.
                roster = self._rosters.setdefault(room.room_id, {})
                for other in seats:
                    roster.setdefault(other.peer_id, other)
                roster[seat.peer_id] = seat
            else:
                seats = await self._refresh_roster(room.room_id)
                if seat.role != "tap":
                    await self.store.set_presence(room.meeting_id, seat.user_id, "joined")
            if self.registry is not None:
                await self.registry.note_room(room.room_id)
        except HubError:
            self._drop_local(conn)
            conn.release(b"", keep=lambda frame: False)
            try:
                await self.store.remove_seat(room.room_id, seat.peer_id,
                                             only_if_worker=self.worker_id)
            except HubError:
                self.needs_repair = True  # reconcile() removes the seat later
            raise
        peers = [s.info() for s in seats if s.peer_id != seat.peer_id]
        known = {peer.peer_id for peer in peers}
        conn.release(p.encode(p.Joined(
            peer_id=seat.peer_id, room_id=room.room_id, role=seat.role,  # type: ignore[arg-type]
            peers=peers, ice_servers=self.ice_servers_for(seat.user_id), features=room.features,
            resume_token=resume_token, resumed=resumed,
        )), keep=lambda frame: not _announces(frame, known))
        if seat.role != "tap" and room.features.transcription \
                and not any(s.role == "tap" for s in seats):
            await self.ensure_tap(room)
        if resumed:
            await self._notify_roster(room.room_id)
        else:
            for old in replaced:
                await self._broadcast(room.room_id, p.PeerLeft(peer_id=old.peer_id,
                                                               reason="replaced"))
            await self._broadcast(room.room_id, p.PeerJoined(peer=seat.info()),
                                  exclude=seat.peer_id)
            await self._notify_roster(room.room_id)
        self.metrics.join_latency.observe(time.perf_counter() - started)
        logger.info("room=%s peer=%s user=%s role=%s %s", room.room_id, seat.peer_id,
                    seat.user_id, seat.role, "resumed" if resumed else "joined")

    # ------------------------------------------------------------------ messages

    async def dispatch(self, conn: Connection, msg: p.ClientMessage) -> None:
        """Handle one message of a joined peer; :class:`HubError` becomes an ``error`` frame."""
        if isinstance(msg, (p.Offer, p.Answer, p.Candidate)):
            self.relay(conn, msg)
        elif isinstance(msg, p.Ping):
            conn.send(p.encode(p.Pong(ts=msg.ts)))
        elif isinstance(msg, p.Media):
            await self._media(conn, msg)
        elif isinstance(msg, p.Chat):
            await self._chat(conn, msg)
        elif isinstance(msg, p.Kick):
            await self.kick(conn.room_id, msg.peer_id, by=conn)
        elif isinstance(msg, p.End):
            if conn.role != "host":
                raise Forbidden("only the host can end the room")
            await self.end_room(conn.room_id, "ended by host")
        elif isinstance(msg, p.Leave):
            await self.leave(conn, "left")
        elif isinstance(msg, p.TranscriptIn):
            await self._transcript(conn, msg)
        elif isinstance(msg, p.Join):
            raise BadRequest("already joined", code="already-joined")

    def relay(self, conn: Connection, msg: p.Offer | p.Answer | p.Candidate) -> None:
        """Forward an offer/answer/candidate to one peer of the sender's own room (never
        waits: a local peer's frame is written, a remote one's is queued for the bus)."""
        roster = self._rosters.get(conn.room_id)
        target = None if roster is None else roster.get(msg.to)
        if target is None or msg.to == conn.peer_id:
            raise NotFound(f"no peer {msg.to} in this room", code="unknown-peer")
        out: p.OfferFrom | p.AnswerFrom | p.CandidateFrom
        if isinstance(msg, p.Candidate):
            out = p.CandidateFrom(from_=conn.peer_id, candidate=msg.candidate)
        else:
            if conn.role in ("observer", "tap") and any(d in msg.sdp for d in _SENDING_DIRECTIONS):
                raise Forbidden(f"a {conn.role} may only receive media (use recvonly)")
            cls = p.OfferFrom if isinstance(msg, p.Offer) else p.AnswerFrom
            out = cls(from_=conn.peer_id, sdp=msg.sdp)
        if not target.connected:
            raise HubError(f"peer {msg.to} is reconnecting", code="peer-unavailable")
        frame = p.encode(out)
        if target.worker_id == self.worker_id:  # the common case: no Redis, no envelope
            local = self._conns.get(msg.to)
            if local is not None:
                local.send(frame)
        else:
            self.bus.send(target.worker_id, Envelope("deliver", conn.room_id, (msg.to,), frame))
        self.metrics.relayed.inc()

    async def _media(self, conn: Connection, msg: p.Media) -> None:
        if conn.role in ("observer", "tap") and (msg.audio or msg.video or msg.screen):
            raise Forbidden(f"a {conn.role} may not send media")
        if msg.screen and not conn.features.screen_sharing:
            raise HubError("screen sharing is off in this room", code="feature-disabled")
        media = p.MediaState(audio=msg.audio, video=msg.video, screen=msg.screen)
        seat = await self.store.update_media(conn.room_id, conn.peer_id, media)
        if seat is None:
            raise NotFound("your seat is gone", code="not-joined")
        self._rosters.get(conn.room_id, {})[seat.peer_id] = seat
        await self._broadcast(conn.room_id, p.PeerUpdated(peer=seat.info()), exclude=conn.peer_id)
        await self._notify_roster(conn.room_id)

    async def _chat(self, conn: Connection, msg: p.Chat) -> None:
        if not conn.features.chat:
            raise HubError("chat is off in this room", code="feature-disabled")
        if len(msg.text) > self.settings.rooms.chat_max_chars:
            raise BadRequest(f"chat text over {self.settings.rooms.chat_max_chars} characters")
        if conn.role == "tap":
            raise Forbidden("the tap does not chat")
        await self._broadcast(conn.room_id, p.ChatFrom(from_=conn.peer_id, text=msg.text,
                                                       ts=now_ms(), name=conn.name))

    async def _transcript(self, conn: Connection, msg: p.TranscriptIn) -> None:
        """The tap reports text: finals are stored first (nothing emitted is lost if the tap
        dies), then every person in the room gets it."""
        if conn.role != "tap":
            raise Forbidden("only the transcription tap sends transcripts")
        speaker = self._rosters.get(conn.room_id, {}).get(msg.peer_id) \
            or self._recently_left.get(msg.peer_id)  # their last words arrive after they left
        if speaker is None or speaker.room_id != conn.room_id:
            raise NotFound(f"no peer {msg.peer_id} in this room", code="unknown-peer")
        room = self._rooms.get(conn.room_id)
        if msg.final and msg.text.strip() and room is not None:  # empty finals only clear
            await self.store.append_segment(room.meeting_id, Segment(
                segment_id=msg.segment_id, peer_id=msg.peer_id, user_id=speaker.user_id,
                text=msg.text, start_ms=msg.start_ms, end_ms=msg.end_ms))
        await self._broadcast(conn.room_id, p.Transcript(
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
                                         ttl_s=self.settings.auth.max_token_ttl_s)
        job = TapJob(job_id="tap_" + secrets.token_hex(6), room_id=room.room_id,
                     meeting_id=room.meeting_id, token=token,
                     started_at_ms=meeting.started_at or now_ms())
        if await self.tap_jobs.enqueue(job):
            logger.info("room=%s tap job %s queued", room.room_id, job.job_id)

    # ------------------------------------------------------------------ leaving

    async def leave(self, conn: Connection, reason: str) -> None:
        """The peer leaves for good: seat freed, others told, socket closed normally."""
        conn.finished = True
        self._drop_local(conn)
        conn.close_soon(1000, reason)
        try:
            seat = await self.store.remove_seat(conn.room_id, conn.peer_id)
            if seat is not None:
                await self._after_removal(seat, reason)
        except Unavailable:
            # reconcile() removes the seat (and tells the room) once the store is back.
            self.needs_repair = True
            logger.warning("%s left while the store is unreachable", conn.label)

    async def disconnected(self, conn: Connection) -> None:
        """The socket closed. A joined peer that did not leave keeps its seat for the grace
        period; others see ``peer-left`` only when it ends."""
        self.untrack(conn)
        if not conn.peer_id or conn.finished:
            self._drop_local(conn)
            return
        self._drop_local(conn)
        grace = self.settings.rooms.resume_grace_s
        if grace <= 0:
            seat = await self.store.remove_seat(conn.room_id, conn.peer_id)
            if seat is not None:
                await self._after_removal(seat, "disconnected")
            return
        try:
            seat = await self.store.detach(conn.room_id, conn.peer_id, now_ms=now_ms(),
                                           worker_id=self.worker_id)
        except Unavailable:
            self.needs_repair = True
            # The seat stays bound to this worker with no socket: reconcile() removes it once
            # the store is back, so no ghost peer outlives the outage.
            logger.warning("%s dropped while the store is unreachable", conn.label)
            return
        if seat is None or seat.detached_at is None:
            return
        self._rosters.get(conn.room_id, {})[seat.peer_id] = seat
        logger.info("%s socket dropped, seat kept %.0f s for resume", conn.label, grace)
        if not self._closed:
            self._spawn(self._grace_expiry(seat, grace), key=f"grace:{seat.peer_id}")

    async def _grace_expiry(self, seat: Seat, grace: float) -> None:
        await asyncio.sleep(grace)
        try:
            removed = await self.store.remove_seat(seat.room_id, seat.peer_id,
                                                   only_if_detached_since=seat.detached_at)
            if removed is not None:
                logger.info("room=%s peer=%s resume grace over: removed", seat.room_id,
                            seat.peer_id)
                await self._after_removal(removed, "disconnected")
        except Unavailable:
            # The seat stays detached with no timer; reconcile() re-arms it when the store is back.
            self.needs_repair = True
            logger.warning("room=%s peer=%s grace expiry deferred: store unreachable",
                           seat.room_id, seat.peer_id)

    def _drop_local(self, conn: Connection) -> None:
        if conn.peer_id and self._conns.get(conn.peer_id) is conn:
            del self._conns[conn.peer_id]

    async def _after_removal(self, seat: Seat, reason: str) -> None:
        room = self._rooms.get(seat.room_id) or await self.store.get_room(seat.room_id)
        roster = self._rosters.get(seat.room_id)
        if roster is not None:
            roster.pop(seat.peer_id, None)
        self._recently_left[seat.peer_id] = seat
        while len(self._recently_left) > 256:  # bounded: oldest first
            self._recently_left.pop(next(iter(self._recently_left)))
        await self._broadcast(seat.room_id, p.PeerLeft(peer_id=seat.peer_id, reason=reason))
        await self._notify_roster(seat.room_id)
        if room is not None and seat.role != "tap":
            await self.store.set_presence(room.meeting_id, seat.user_id, "left")
        remaining = await self._refresh_roster(seat.room_id)
        if not any(s.role != "tap" for s in remaining) and room is not None:
            self._spawn(self._empty_expiry(seat.room_id), key=f"empty:{seat.room_id}")

    async def _empty_expiry(self, room_id: str) -> None:
        await asyncio.sleep(self.settings.rooms.empty_timeout_s)
        try:
            seats = await self.store.seats(room_id)
        except Unavailable:
            logger.warning("room=%s empty-room check skipped: store unreachable", room_id)
            return
        if not any(s.role != "tap" for s in seats):
            logger.info("room=%s empty for %.0f s: ending", room_id,
                        self.settings.rooms.empty_timeout_s)
            await self.end_room(room_id, "empty")

    async def kick(self, room_id: str, peer_id: str, *, by: Connection | None) -> None:
        """Remove a peer (host's ``kick`` or the API); the user may not rejoin."""
        if by is not None and by.role != "host":
            raise Forbidden("only the host can remove peers")
        if by is not None and by.peer_id == peer_id:
            raise BadRequest("the host cannot kick itself; use leave or end")
        seats = {s.peer_id: s for s in await self.store.seats(room_id)}
        target = seats.get(peer_id)
        if target is None:
            raise NotFound(f"no peer {peer_id} in this room", code="unknown-peer")
        await self.store.ban(room_id, target.user_id)
        await self.remove_user_seats(room_id, [target], "kicked")

    async def remove_user_seats(self, room_id: str, targets: Iterable[Seat], reason: str) -> None:
        """Close and remove the given seats (used by kick and the removeParticipant API)."""
        for target in targets:
            self._cancel_timer(f"grace:{target.peer_id}")
            removed = await self.store.remove_seat(room_id, target.peer_id)
            await self._close_peers(room_id, (target,), p.Kicked(reason=f"{reason} by host"),
                                    p.CLOSE_FORBIDDEN, reason)
            if removed is not None:
                await self._after_removal(removed, reason)

    async def end_room(self, room_id: str, reason: str) -> bool:
        """End a room everywhere: everyone gets ``room-ended`` and a 4410 close; the meeting is
        concluded. Returns False when it had already ended."""
        seats = await self.store.seats(room_id)
        room = await self.store.end_room(room_id, reason, now_ms=now_ms())
        if room is None:
            return False
        self._cancel_timer(f"empty:{room_id}")
        for seat in seats:
            self._cancel_timer(f"grace:{seat.peer_id}")
        await self._close_peers(room_id, seats, p.RoomEndedMsg(reason=reason), p.CLOSE_ROOM_ENDED,
                                "room-ended")
        with contextlib.suppress(HubError):
            await self.store.transition_meeting(room.meeting_id, "concluded",
                                                from_states=("scheduled", "active"),
                                                now_ms=now_ms())
        for seat in seats:
            if seat.role != "tap":
                await self.store.set_presence(room.meeting_id, seat.user_id, "left")
        self._rosters.pop(room_id, None)
        self._rooms.pop(room_id, None)
        logger.info("room=%s ended (%s), %d peers closed", room_id, reason, len(seats))
        return True

    # ------------------------------------------------------------------ routing

    async def _refresh_roster(self, room_id: str) -> list[Seat]:
        seats = await self.store.seats(room_id)
        if any(s.worker_id == self.worker_id for s in seats):
            self._rosters[room_id] = {s.peer_id: s for s in seats}
        else:
            self._rosters.pop(room_id, None)
            self._rooms.pop(room_id, None)
        return seats

    async def _notify_roster(self, room_id: str) -> None:
        """Tell other workers with peers in the room to refresh their routing view."""
        roster = self._rosters.get(room_id, {})
        workers = {s.worker_id for s in roster.values()} - {self.worker_id}
        for worker in workers:
            self.bus.send(worker, Envelope("roster", room_id, ()))

    async def _broadcast(self, room_id: str, msg: p._Msg, *, exclude: str = "") -> None:
        roster = self._rosters.get(room_id)
        if roster is None:
            roster = {s.peer_id: s for s in await self.store.seats(room_id)}
        targets = [s for s in roster.values() if s.peer_id != exclude and s.connected]
        if targets:
            await self._deliver(room_id, targets, p.encode(msg))

    async def _deliver(self, room_id: str, targets: Iterable[Seat], frame: bytes) -> None:
        remote: dict[str, list[str]] = {}
        for seat in targets:
            if seat.worker_id == self.worker_id:
                conn = self._conns.get(seat.peer_id)
                if conn is not None:
                    conn.send(frame)
            else:
                remote.setdefault(seat.worker_id, []).append(seat.peer_id)
        for worker, peers in remote.items():
            self.bus.send(worker, Envelope("deliver", room_id, tuple(peers), frame))

    async def _close_peers(self, room_id: str, seats: Iterable[Seat], msg: p._Msg,
                           code: int, reason: str) -> None:
        frame = p.encode(msg)
        remote: dict[str, list[str]] = {}
        for seat in seats:
            if seat.worker_id == self.worker_id:
                self._close_local(seat.peer_id, frame, code, reason)
            else:
                remote.setdefault(seat.worker_id, []).append(seat.peer_id)
        for worker, peers in remote.items():
            self.bus.send(worker, Envelope("close", room_id, tuple(peers), frame, code,
                                                 reason))

    def _close_local(self, peer_id: str, frame: bytes, code: int, reason: str) -> None:
        conn = self._conns.pop(peer_id, None)
        if conn is not None:
            conn.finished = True
            conn.send(frame)
            conn.close_soon(code, reason)

    async def _on_envelope(self, env: Envelope) -> None:
        if env.kind == "deliver":
            for peer_id in env.to:
                conn = self._conns.get(peer_id)
                if conn is not None:
                    conn.send(env.frame)
        elif env.kind == "close":
            for peer_id in env.to:
                self._close_local(peer_id, env.frame, env.code, env.reason)
        elif env.kind == "roster" and env.room_id in self._rosters:
            await self._refresh_roster(env.room_id)

    # ------------------------------------------------------------------ shared-state upkeep

    async def on_reaped(self, room_id: str, seats: list[Seat]) -> None:
        """Seats of a dead worker were removed by this worker's reaper: tell the room."""
        for seat in seats:
            await self._after_removal(seat, "disconnected")

    async def tick(self, full_every: int = 12) -> None:
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
            await self.reconcile()
        except BaseException:
            self.needs_repair = True
            raise

    async def reconcile(self) -> None:
        """Repair what an outage may have left half-done: seats bound to this worker with no
        socket and no grace timer are removed (others told), detached seats get their timer."""
        rooms = set(self._rosters) | (self.registry.rooms if self.registry else set())
        for room_id in rooms:
            mine = [s for s in await self.store.seats(room_id) if s.worker_id == self.worker_id]
            if not mine and self.registry is not None and room_id not in self._rosters:
                self.registry.forget_room(room_id)
            for seat in mine:
                if seat.peer_id in self._conns or f"grace:{seat.peer_id}" in self._timers:
                    continue
                if seat.connected or seat.detached_at is None:
                    removed = await self.store.remove_seat(room_id, seat.peer_id,
                                                           only_if_worker=self.worker_id)
                    if removed is not None:
                        logger.info("room=%s peer=%s ghost seat removed", room_id, seat.peer_id)
                        await self._after_removal(removed, "disconnected")
                else:
                    left = self.settings.rooms.resume_grace_s - (now_ms() - seat.detached_at) / 1e3
                    self._spawn(self._grace_expiry(seat, max(0.0, left)),
                                key=f"grace:{seat.peer_id}")

    def send_error(self, conn: Connection, exc: HubError) -> None:
        self.metrics.errors.labels(code=exc.code).inc()
        conn.send(_error(exc))

    def local_peers(self, room_id: str) -> list[str]:
        return [pid for pid, c in self._conns.items() if c.room_id == room_id]
