"""Room admission: ``join`` checked (token, room), a seat given within the room's capacity
(atomically across workers, by the store) or resumed, and the room told. In a room with a
waiting room the seat is given only once a host admits the peer (:mod:`~signaling.waiting`).

Every store write happens before ``joined``: a client that sees ``joined`` is in. Frames other
peers send the newcomer meanwhile are held and released after ``joined`` (less the
``peer-joined`` of peers already listed in it).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import protocol as p
from .clock import now_ms
from .codes import Close, ErrorCode
from .deadlines import MAX_DURATION, Deadlines
from .errors import Forbidden, HubError, NotFound, RoomEnded
from .metrics import Metrics
from .resume import Resume, new_resume_secret
from .store import Room, Seat, Store
from .tokens import JoinClaims, TokenService
from .transcripts import Transcripts, needs_tap
from .waiting import WaitingRoom, must_wait
from .webhooks import NO_WEBHOOKS, Webhooks
from .workers import WorkerRegistry

if TYPE_CHECKING:
    from .client_socket import ClientSocket
    from .lifecycle import RoomLifecycle
    from .routing import Router

logger = logging.getLogger(__name__)

IceServersFor = Callable[[str], list[p.IceServer]]


def _announces(frame: bytes, known: set[str]) -> bool:
    """Whether ``frame`` is a ``peer-joined`` for a peer already listed in ``joined.peers``."""
    if b'"peer-joined"' not in frame:
        return False
    message = p.decode_server(frame)
    return isinstance(message, p.PeerJoined) and message.peer.peer_id in known


def new_peer_id() -> str:
    return "p_" + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")


class Admission:
    """The ``join`` message."""

    def __init__(self, *, store: Store, router: Router, tokens: TokenService,
                 ice_servers_for: IceServersFor, metrics: Metrics, resume: Resume,
                 lifecycle: RoomLifecycle, transcripts: Transcripts,
                 registry: WorkerRegistry | None, waiting: WaitingRoom,
                 deadlines: Deadlines, webhooks: Webhooks = NO_WEBHOOKS) -> None:
        self.store = store
        self.router = router
        self.worker_id = router.worker_id
        self.tokens = tokens
        self.ice_servers_for = ice_servers_for
        self.metrics = metrics
        self.resume = resume
        self.lifecycle = lifecycle
        self.transcripts = transcripts
        self.registry = registry
        self.waiting = waiting
        self.deadlines = deadlines
        self.webhooks = webhooks

    async def join(self, conn: ClientSocket, msg: p.Join) -> None:
        """Admit ``conn`` (or resume its seat, or put it in the waiting room) and tell the room.
        Raises :class:`HubError` with the close code the socket must be closed with."""
        started = time.perf_counter()
        claims = self.tokens.verify_join(msg.token)
        if msg.room_id is not None and msg.room_id != claims.room_id:
            raise Forbidden("the token is for another room", code=ErrorCode.WRONG_ROOM)
        room = await self.store.get_room(claims.room_id)
        if room is None:
            raise NotFound("no such room", code=ErrorCode.NO_ROOM)
        if room.state == "ended":
            raise RoomEnded("the room has ended")
        if await self.deadlines.passed(room):  # nobody here ended it on time (no worker had it)
            await self.lifecycle.end_room(room.room_id, MAX_DURATION)
            raise RoomEnded("the meeting reached its maximum duration")
        seat: Seat | None = None
        resume_token = ""
        if msg.resume:
            seat = await self.resume.reattach(conn, room.room_id, msg.resume, claims.user_id)
            if seat is not None:
                resume_token = msg.resume
            else:
                logger.info("room=%s user=%s resume refused (grace over?): joining afresh",
                            room.room_id, claims.user_id)
        if seat is None and must_wait(room, claims.role):
            await self.waiting.enter(conn, room, claims, new_peer_id())
            return
        await self.seat(conn, room, claims, new_peer_id(), resumed=seat,
                        resume_token=resume_token, started=started)

    async def seat(self, conn: ClientSocket, room: Room, claims: JoinClaims, peer_id: str, *,
                   resumed: Seat | None = None, resume_token: str = "",
                   started: float | None = None) -> None:
        """Give ``conn`` a new seat as ``peer_id`` (or the ``resumed`` one), send ``joined``
        and tell the room: the second half of a join, and what an admitted knocker gets."""
        started = time.perf_counter() if started is None else started
        seat = resumed
        replaced: tuple[Seat, ...] = ()
        admitted: tuple[Seat, ...] = ()
        if seat is None:
            seat, resume_token, replaced, admitted = await self._admit(room, claims, peer_id)
        conn.peer_id, conn.room_id = seat.peer_id, room.room_id
        conn.user_id, conn.role, conn.name = seat.user_id, seat.role, seat.name
        conn.features = room.features
        conn.hold()  # others may address us before our joined frame is out
        self.router.attach(conn, room)
        self.lifecycle.empty.cancel(room.room_id)
        seats = await self._settle(conn, room, seat, admitted)
        ends_at = await self.deadlines.watch(room) if seat.role != "tap" else None
        peers = [s.info() for s in seats if s.peer_id != seat.peer_id]
        known = {peer.peer_id for peer in peers}
        conn.release(p.encode(p.Joined(
            peer_id=seat.peer_id, room_id=room.room_id, role=seat.role,  # type: ignore[arg-type]
            peers=peers, ice_servers=self.ice_servers_for(seat.user_id), features=room.features,
            resume_token=resume_token, resumed=resumed is not None, ends_at=ends_at,
        )), keep=lambda frame: not _announces(frame, known))
        if ends_at is not None:
            self.deadlines.warn_if_near(conn, ends_at)
        if seat.role == "host" and room.features.knocks:
            await self.waiting.knocks_for(conn)
        if seat.role not in p.SERVER_ROLES and needs_tap(room) \
                and not any(s.role in p.SERVER_ROLES for s in seats):
            await self.transcripts.ensure_tap(room)
        router = self.router
        if resumed is None:
            # queued before anyone can see (and kick) the newcomer: joined precedes its left
            await self.webhooks.participant_joined(room, seat, replaced)
            for old in replaced:
                await router.broadcast(room.room_id, p.PeerLeft(peer_id=old.peer_id,
                                                                reason="replaced"))
            await router.broadcast(room.room_id, p.PeerJoined(peer=seat.info()),
                                   exclude=seat.peer_id)
        router.notify_roster(room.room_id)
        self.metrics.join_latency.observe(time.perf_counter() - started)
        logger.info("room=%s peer=%s user=%s role=%s %s", room.room_id, seat.peer_id,
                    seat.user_id, seat.role, "resumed" if resumed else "joined")

    async def _admit(self, room: Room, claims: JoinClaims, peer_id: str
                     ) -> tuple[Seat, str, tuple[Seat, ...], tuple[Seat, ...]]:
        """A new seat within the room's capacity: the seat, its resume token, the detached
        seats of the same user it replaced, and the room's seats afterwards."""
        secret, secret_hash = new_resume_secret()
        seat = Seat(
            peer_id=peer_id, room_id=room.room_id, user_id=claims.user_id, role=claims.role,
            name=claims.name, joined_at=now_ms(), worker_id=self.worker_id,
            resume_hash=secret_hash,
        )
        admission = await self.store.admit(seat)
        for old in admission.replaced:
            self.resume.grace.cancel(old.peer_id)
            logger.info("room=%s peer=%s replaced by peer=%s (same user rejoined)",
                        room.room_id, old.peer_id, peer_id)
        # A user holds one seat per room: the older socket, wherever it is, is told and closed.
        self.router.close_peers(
            room.room_id, [old for old in admission.replaced if old.connected],
            p.Error(code=ErrorCode.TAKEN_OVER,
                    message="you joined this room again from another tab or device"),
            Close.TAKEN_OVER, ErrorCode.TAKEN_OVER)
        return seat, f"{peer_id}.{secret}", admission.replaced, admission.seats

    async def _settle(self, conn: ClientSocket, room: Room, seat: Seat,
                      admitted: tuple[Seat, ...]) -> list[Seat]:
        """The store writes after a seat is had (roster, presence, the worker's rooms); on
        failure the seat is given up and the error raised."""
        try:
            if admitted:  # a fresh admission returned the room's seats and set presence
                self.router.note_seats(room.room_id, admitted)
                self.router.update_seat(seat)
                seats = list(admitted)
            else:
                seats = await self.router.refresh_roster(room.room_id)
                if seat.role != "tap":
                    await self.store.set_presence(room.meeting_id, seat.user_id, "joined")
            if self.registry is not None:
                await self.registry.note_room(room.room_id)
        except HubError:
            self.router.detach(conn)
            conn.release(b"", keep=lambda frame: False)
            try:
                await self.store.remove_seat(room.room_id, seat.peer_id,
                                             only_if_worker=self.worker_id)
            except HubError:
                self.lifecycle.needs_repair = True  # reconcile() removes the seat later
            raise
        return seats
