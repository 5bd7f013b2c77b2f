"""The waiting room: with ``waitingRoomEnabled`` and not ``autoAdmit``, people other than hosts
wait until a host lets them in.

A knocker gets ``waiting {}`` instead of ``joined`` and holds no seat; its entry is in the store
(:meth:`~signaling.store.Store.knock`, at most ``rooms.max_waiting`` per room) so every host, on
any worker, sees it: hosts in the room get ``knock {peer}`` at once, hosts joining later get the
knocks already waiting. A host's ``admit`` / ``deny`` takes the entry out of the store (one host
wins when two answer at once). Admitted, the knocker's own worker gives it a seat as any join
does (capacity checked there, atomically, :meth:`~signaling.store.Store.admit`): ``joined``,
or ``room-full`` (4409). Denied, it is closed with 4403 ``denied``. Nobody answering within
``rooms.waiting_timeout_s`` closes it with 4408 ``waiting-timeout``. Hosts learn how each knock
ended (``knock-ended {peerId, reason}``) so their prompts go away.

A knock whose worker dies is removed by another worker's reaper (:mod:`~signaling.workers`),
and the hosts told, as a dead worker's seats are.

The knocker's socket is this worker's socket for its peer id (:meth:`Router.attach`) but in no
room's roster: nobody can address it, it gets no room broadcasts, and ``close`` envelopes (deny,
room ended) reach it on whichever worker it is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from . import protocol as p
from .bus import Envelope
from .clock import now_ms
from .codes import Close, ErrorCode
from .errors import BadJoin, Forbidden, HubError, NotFound, Unavailable
from .settings import RoomSettings
from .store import Room, Seat, Store
from .tasks import TaskSet, Timers
from .tokens import JoinClaims
from .workers import WorkerRegistry

if TYPE_CHECKING:
    from .client_socket import ClientSocket
    from .routing import Router

logger = logging.getLogger(__name__)

#: Roles that never wait: hosts let the others in; the tap and the agent are the hub's own.
NEVER_WAIT = ("host", "tap", "agent")

#: Gives an admitted knocker its seat: (socket, room, claims, the knock's peer id).
SeatGiver = Callable[["ClientSocket", Room, JoinClaims, str], Awaitable[None]]


def must_wait(room: Room, role: str) -> bool:
    """Whether a ``role`` peer joining ``room`` afresh waits for a host."""
    return room.features.knocks and role not in NEVER_WAIT


class WaitingRoom:
    """This worker's knockers, and the hosts' ``admit`` / ``deny``."""

    def __init__(self, *, rooms: RoomSettings, store: Store, router: Router,
                 registry: WorkerRegistry | None = None) -> None:
        self.rooms = rooms
        self.store = store
        self.router = router
        #: Heartbeats and the reaper: a knock of a worker that dies is removed by another.
        self.registry = registry
        self.worker_id = router.worker_id
        #: Set by the hub: seats an admitted knocker (``Admission.seat``).
        self.give_seat: SeatGiver | None = None
        self.timers = Timers("waiting-timeout", logger=logger)
        self._tasks = TaskSet("waiting room", logger=logger)
        #: peer id -> (socket, room, join claims) of the knockers on this worker
        self._knockers: dict[str, tuple[ClientSocket, Room, JoinClaims]] = {}

    @property
    def count(self) -> int:
        """Knockers waiting on this worker."""
        return len(self._knockers)

    async def aclose(self) -> None:
        await self.timers.aclose()
        await self._tasks.aclose()

    # ------------------------------------------------------------------ the knocker's side

    async def enter(self, conn: ClientSocket, room: Room, claims: JoinClaims,
                    peer_id: str) -> None:
        """Put a joining socket in the room's waiting room and tell the hosts. Raises
        :class:`HubError` (the socket is then refused) when the room cannot take the knock."""
        entry = Seat(peer_id=peer_id, room_id=room.room_id, user_id=claims.user_id,
                     role=claims.role, name=claims.name, joined_at=now_ms(),
                     worker_id=self.worker_id)
        if self.registry is not None:  # first: the reaper must find the room if we die
            await self.registry.note_room(room.room_id)
        replaced = await self.store.knock(entry, max_waiting=self.rooms.max_waiting)
        conn.peer_id, conn.room_id = peer_id, room.room_id
        conn.user_id, conn.role, conn.name = claims.user_id, claims.role, claims.name
        conn.features = room.features
        conn.waiting = True
        self._knockers[peer_id] = (conn, room, claims)
        self.router.attach(conn, room)
        conn.send(p.encode(p.Waiting()))
        self.timers.start(peer_id, self.rooms.waiting_timeout_s,
                          lambda: self._timed_out(peer_id))
        logger.info("room=%s peer=%s user=%s knocks (waiting room)", room.room_id, peer_id,
                    claims.user_id)
        hosts = await self._hosts(room.room_id)
        if replaced:  # the same person knocking again (another tab): the older knock goes
            self.router.close_peers(
                room.room_id, replaced,
                p.Error(code=ErrorCode.TAKEN_OVER, message="you knocked again from another "
                        "tab or device"), Close.TAKEN_OVER, ErrorCode.TAKEN_OVER)
            for old in replaced:
                self._tell(room.room_id, hosts, p.KnockEnded(peer_id=old.peer_id,
                                                             reason="replaced"))
        self._tell(room.room_id, hosts, p.Knock(peer=entry.info()))

    async def leave(self, conn: ClientSocket) -> None:
        """The knocker said ``leave``: it stops waiting and its socket closes normally."""
        conn.finished = True
        conn.close_soon(Close.NORMAL, "left")
        await self.gone(conn)

    async def gone(self, conn: ClientSocket) -> None:
        """A knocker's socket closed (or it left): its knock ends, the hosts are told. Safe to
        call for a knock that was answered already."""
        if self._knockers.get(conn.peer_id, (None,))[0] is conn:
            del self._knockers[conn.peer_id]
        self.timers.cancel(conn.peer_id)
        self.router.detach(conn)
        if not conn.waiting:
            return
        conn.waiting = False
        try:
            entry = await self.store.unknock(conn.room_id, conn.peer_id)
        except Unavailable:
            logger.warning("%s stopped waiting while the store is unreachable", conn.label)
            return  # the entry lapses with the room's keys; an admit of it reaches nobody
        if entry is not None:
            logger.info("%s stopped waiting (left)", conn.label)
            self._tell(conn.room_id, await self._hosts(conn.room_id),
                       p.KnockEnded(peer_id=conn.peer_id, reason="left"))

    async def _timed_out(self, peer_id: str) -> None:
        item = self._knockers.get(peer_id)
        if item is None:
            return
        conn, room, _ = item
        entry = await self.store.unknock(room.room_id, peer_id)
        if entry is None:  # a host's answer is on its way
            return
        del self._knockers[peer_id]
        conn.waiting = False
        logger.info("%s nobody let it in within %.0f s", conn.label,
                    self.rooms.waiting_timeout_s)
        self.router.close_local(peer_id, p.encode(p.Error(
            code=ErrorCode.WAITING_TIMEOUT, message="nobody let you in; try again later",
            retryable=True)), Close.JOIN_TIMEOUT, ErrorCode.WAITING_TIMEOUT)
        self._tell(room.room_id, await self._hosts(room.room_id),
                   p.KnockEnded(peer_id=peer_id, reason="timeout"))

    def admitted(self, peer_id: str) -> None:
        """A host let ``peer_id`` (a knocker of this worker) in: seat it (in a task: the bus
        reader must not wait on the store)."""
        item = self._knockers.pop(peer_id, None)
        if item is None:
            logger.info("peer=%s admitted but no longer waiting here", peer_id)
            return
        self.timers.cancel(peer_id)
        self._tasks.spawn(self._seat(*item), f"admit {peer_id}")

    async def _seat(self, conn: ClientSocket, room: Room, claims: JoinClaims) -> None:
        assert self.give_seat is not None  # the hub wires it before any socket exists
        peer_id = conn.peer_id
        conn.waiting = False
        if conn.finished or conn.closing:
            return
        try:
            await self.give_seat(conn, room, claims, peer_id)
            reason = "admitted"
        except HubError as exc:
            reason = exc.code
            logger.info("%s admitted but refused: %s", conn.label, exc.code)
            close = exc.close_code or BadJoin.close_code
            self.router.close_local(peer_id, p.encode(p.Error(
                code=exc.code, message=exc.message, retryable=exc.retryable)), close, exc.code)
        self._tell(room.room_id, await self._hosts(room.room_id),
                   p.KnockEnded(peer_id=peer_id, reason=reason))

    # ------------------------------------------------------------------ the hosts' side

    async def answer(self, conn: ClientSocket, msg: p.Admit | p.Deny) -> None:
        """A host's ``admit`` or ``deny``."""
        if conn.role != "host":
            raise Forbidden("only a host can let people in")
        entry = await self.store.unknock(conn.room_id, msg.peer_id)
        if entry is None:
            raise NotFound(f"nobody {msg.peer_id} is waiting", code=ErrorCode.UNKNOWN_PEER)
        room_id = conn.room_id
        if isinstance(msg, p.Admit):
            logger.info("%s admits peer=%s", conn.label, entry.peer_id)
            if entry.worker_id == self.worker_id:
                self.admitted(entry.peer_id)
            else:
                self.router.bus.send(entry.worker_id, Envelope("admit", room_id,
                                                               (entry.peer_id,)))
            return
        logger.info("%s denies peer=%s", conn.label, entry.peer_id)
        self.router.close_peers(room_id, (entry,), p.Error(
            code=ErrorCode.DENIED, message="the host did not let you in"), Close.FORBIDDEN,
            ErrorCode.DENIED)
        self._tell(room_id, await self._hosts(room_id),
                   p.KnockEnded(peer_id=entry.peer_id, reason="denied"))

    async def reaped(self, room_id: str, entries: list[Seat]) -> None:
        """Knocks of a dead worker were removed by this worker's reaper: tell the hosts."""
        hosts = await self._hosts(room_id)
        for entry in entries:
            self._tell(room_id, hosts, p.KnockEnded(peer_id=entry.peer_id, reason="left"))

    async def knocks_for(self, conn: ClientSocket) -> None:
        """A host just joined: the knocks already waiting, oldest first."""
        stale_before = now_ms() - int(self.rooms.waiting_timeout_s * 1000) - 5_000
        for entry in await self.store.knocking(conn.room_id):
            if entry.joined_at >= stale_before:  # older: its worker died while it waited
                conn.send(p.encode(p.Knock(peer=entry.info())))

    async def _hosts(self, room_id: str) -> list[Seat]:
        return [s for s in await self.store.seats(room_id) if s.role == "host" and s.connected]

    def _tell(self, room_id: str, hosts: list[Seat], msg: p._Msg) -> None:
        if hosts:
            self.router.deliver(room_id, hosts, p.encode(msg))
