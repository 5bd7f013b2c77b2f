"""Routing and relay: where a frame for a peer goes, on this worker or across workers.

The :class:`Router` holds this worker's sockets by peer and a routing view (``roster``) of every
room it has peers in. A frame for a peer on this worker is written to its socket and never
leaves the process; a frame for a peer elsewhere goes through the
:class:`~signaling.bus.Bus` to the worker that holds it (one envelope per worker, however many
of its peers are addressed). The roster is refreshed from the store whenever a room changes, and
workers tell each other to refresh with a ``roster`` envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from . import protocol as p
from .bus import Bus, Envelope
from .codes import ErrorCode
from .errors import BadRequest, NotFound, PeerUnavailable
from .media_state import RECEIVE_ONLY_ROLES, check_sdp, restricted
from .metrics import Metrics
from .store import Room, Seat, Store

if TYPE_CHECKING:
    from .client_socket import ClientSocket

logger = logging.getLogger(__name__)


class Router:
    """This worker's sockets and rooms, and the delivery of frames to peers."""

    def __init__(self, *, worker_id: str, store: Store, bus: Bus, metrics: Metrics) -> None:
        self.worker_id = worker_id
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self._conns: dict[str, ClientSocket] = {}  # peer_id -> this worker's socket
        self._rosters: dict[str, dict[str, Seat]] = {}  # room_id -> peer_id -> seat
        self._rooms: dict[str, Room] = {}  # room_id -> room, for rooms with local peers
        #: Called with each peer of an ``admit`` envelope (the waiting room's, set by the hub).
        self.on_admit: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ this worker's view

    @property
    def peer_count(self) -> int:
        return len(self._conns)

    @property
    def room_count(self) -> int:
        return len(self._rosters)

    def attach(self, conn: ClientSocket, room: Room) -> None:
        """``conn`` (its peer and room already set) is this worker's socket for its peer."""
        self._conns[conn.peer_id] = conn
        self._rooms[room.room_id] = room

    def detach(self, conn: ClientSocket) -> None:
        """``conn`` no longer receives its peer's frames (unless a newer socket took over)."""
        if conn.peer_id and self._conns.get(conn.peer_id) is conn:
            del self._conns[conn.peer_id]

    def socket_of(self, peer_id: str) -> ClientSocket | None:
        return self._conns.get(peer_id)

    def room(self, room_id: str) -> Room | None:
        """The room, when this worker has peers in it."""
        return self._rooms.get(room_id)

    def roster(self, room_id: str) -> dict[str, Seat]:
        """The routing view of a room (empty when this worker has no peers in it)."""
        return self._rosters.get(room_id, {})

    def rooms(self) -> set[str]:
        return set(self._rosters)

    def seat(self, room_id: str, peer_id: str) -> Seat | None:
        return self._rosters.get(room_id, {}).get(peer_id)

    def note_seats(self, room_id: str, seats: Iterable[Seat]) -> None:
        """Merge an admission's seats into the room's view. Merge, never replace: concurrent
        admissions' replies may arrive out of order, and an older snapshot must not drop a peer
        a newer one added."""
        roster = self._rosters.setdefault(room_id, {})
        for seat in seats:
            roster.setdefault(seat.peer_id, seat)

    def update_seat(self, seat: Seat) -> None:
        """A seat of a room this worker routes for changed (media flags, detached)."""
        roster = self._rosters.get(seat.room_id)
        if roster is not None:
            roster[seat.peer_id] = seat

    def forget_seat(self, room_id: str, peer_id: str) -> None:
        roster = self._rosters.get(room_id)
        if roster is not None:
            roster.pop(peer_id, None)

    def forget_room(self, room_id: str) -> None:
        self._rosters.pop(room_id, None)
        self._rooms.pop(room_id, None)

    def local_peers(self, room_id: str) -> list[str]:
        return [pid for pid, c in self._conns.items() if c.room_id == room_id]

    async def refresh_roster(self, room_id: str) -> list[Seat]:
        """Re-read the room's seats from the store; forget the room if none is ours."""
        seats = await self.store.seats(room_id)
        if any(s.worker_id == self.worker_id for s in seats):
            self._rosters[room_id] = {s.peer_id: s for s in seats}
        else:
            self.forget_room(room_id)
        return seats

    def notify_roster(self, room_id: str) -> None:
        """Tell other workers with peers in the room to refresh their routing view."""
        roster = self._rosters.get(room_id, {})
        workers = {s.worker_id for s in roster.values()} - {self.worker_id}
        for worker in workers:
            self.bus.send(worker, Envelope("roster", room_id, ()))

    # ------------------------------------------------------------------ frames to peers

    def relay(self, conn: ClientSocket, msg: p.Offer | p.Answer | p.Candidate) -> None:
        """Forward an offer/answer/candidate to one peer of the sender's own room (never
        waits: a local peer's frame is written, a remote one's is queued for the bus)."""
        if conn.waiting:
            raise BadRequest("wait until a host lets you in", code=ErrorCode.WAITING)
        roster = self._rosters.get(conn.room_id)
        target = None if roster is None else roster.get(msg.to)
        if target is None or msg.to == conn.peer_id:
            raise NotFound(f"no peer {msg.to} in this room", code=ErrorCode.UNKNOWN_PEER)
        out: p.OfferFrom | p.AnswerFrom | p.CandidateFrom
        if isinstance(msg, p.Candidate):
            out = p.CandidateFrom(from_=conn.peer_id, candidate=msg.candidate)
        else:
            if restricted(conn.role, conn.features):  # else no SDP scan
                check_sdp(conn.role, msg.sdp, conn.features)
            cls = p.OfferFrom if isinstance(msg, p.Offer) else p.AnswerFrom
            out = cls(from_=conn.peer_id, sdp=msg.sdp)
        if not target.connected:
            raise PeerUnavailable(f"peer {msg.to} is reconnecting")
        frame = p.encode(out)
        if target.worker_id == self.worker_id:  # the common case: no Redis, no envelope
            local = self._conns.get(msg.to)
            if local is not None:
                local.send(frame)
        else:
            self.bus.send(target.worker_id, Envelope("deliver", conn.room_id, (msg.to,), frame))
        self.metrics.relayed.inc()

    def ask_mute(self, conn: ClientSocket, peer_id: str) -> None:
        """Deliver the host's ``ask-mute`` to one person of its room as ``mute-requested``
        (the caller checked the role). Not to itself, a tap or an observer (nothing to mute),
        the agent (exempt from participant controls), nor a peer of another room: ``unknown-peer``; to a reconnecting peer:
        ``peer-unavailable``."""
        target = self._rosters.get(conn.room_id, {}).get(peer_id)
        if target is None or peer_id == conn.peer_id or target.role in RECEIVE_ONLY_ROLES \
                or target.role == "agent":  # the hub's own: exempt from the controls
            raise NotFound(f"no participant {peer_id} to mute in this room",
                           code=ErrorCode.UNKNOWN_PEER)
        if not target.connected:
            raise PeerUnavailable(f"peer {peer_id} is reconnecting")
        self.deliver(conn.room_id, (target,),
                     p.encode(p.MuteRequested(from_=conn.peer_id, name=conn.name)))

    async def broadcast(self, room_id: str, msg: p._Msg, *, exclude: str = "") -> None:
        """Send ``msg`` to every connected peer of the room but ``exclude``."""
        roster = self._rosters.get(room_id)
        if roster is None:
            roster = {s.peer_id: s for s in await self.store.seats(room_id)}
        targets = [s for s in roster.values() if s.peer_id != exclude and s.connected]
        if targets:
            self.deliver(room_id, targets, p.encode(msg))

    def deliver(self, room_id: str, targets: Iterable[Seat], frame: bytes) -> None:
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

    def close_peers(self, room_id: str, seats: Iterable[Seat], msg: p._Msg, code: int,
                    reason: str) -> None:
        """Send ``msg`` to each seat's socket, then close it with ``code`` (wherever it is)."""
        frame = p.encode(msg)
        remote: dict[str, list[str]] = {}
        for seat in seats:
            if seat.worker_id == self.worker_id:
                self.close_local(seat.peer_id, frame, code, reason)
            else:
                remote.setdefault(seat.worker_id, []).append(seat.peer_id)
        for worker, peers in remote.items():
            self.bus.send(worker, Envelope("close", room_id, tuple(peers), frame, code, reason))

    def close_local(self, peer_id: str, frame: bytes, code: int, reason: str) -> None:
        conn = self._conns.pop(peer_id, None)
        if conn is not None:
            conn.finished = True
            if frame:
                conn.send(frame)
            conn.close_soon(code, reason)

    async def on_envelope(self, env: Envelope) -> None:
        """A frame from another worker for peers of this one."""
        if env.kind == "deliver":
            for peer_id in env.to:
                conn = self._conns.get(peer_id)
                if conn is not None:
                    conn.send(env.frame)
        elif env.kind == "close":
            for peer_id in env.to:
                self.close_local(peer_id, env.frame, env.code, env.reason)
        elif env.kind == "roster" and env.room_id in self._rosters:
            await self.refresh_roster(env.room_id)
        elif env.kind == "admit" and self.on_admit is not None:
            for peer_id in env.to:
                self.on_admit(peer_id)
