"""This client's side of the room's full mesh: one :class:`~media.connection.RemotePeer` per peer.

Who offers to whom (DESIGN "Websocket protocol"): as the newcomer, this client offers to every
peer listed in ``joined.peers`` and is the impolite side towards them; a peer that joins later
offers to us, and we answer. The mesh keeps the room's roster as the hub announces it
(``peer-joined``, ``peer-updated``, ``peer-left``), routes relayed offers, answers and candidates
to the right connection, drops a connection whose peer left or whose connection failed, and
after a resume keeps what survived (same seat) or starts over (the hub gave us a new session).
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from signaling import protocol

from .config import PeerClientConfig
from .connection import (
    AudioFrameCallback,
    ConnectionOptions,
    EncodedAudioCallback,
    RemotePeer,
    SignalMessage,
)
from .errors import ClientClosedError, PeerClientError
from .local import LocalMedia
from .plan import receives
from .stats import ClientStats

logger = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], None]
"""Start a background task owned by the client (``coro``, what it is for the task name)."""


class Mesh:
    """The connections to the other peers in the room, and the roster they are opened from.

    Every task the mesh starts (closing a dropped connection) goes through ``spawn``, so the
    :class:`~media.peer.PeerClient` owns it and awaits or cancels it on the way out.
    """

    def __init__(
        self,
        config: PeerClientConfig,
        stats: ClientStats,
        *,
        send: Callable[[protocol.Offer | protocol.Answer], None],
        on_change: Callable[[], None],
        spawn: Spawn,
        on_audio_frame: AudioFrameCallback | None = None,
        on_encoded_audio: EncodedAudioCallback | None = None,
        on_encoded_video: EncodedAudioCallback | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self._send = send
        self._on_change = on_change
        self._spawn = spawn
        self._on_audio_frame = on_audio_frame
        self._on_encoded_audio = on_encoded_audio
        self._on_encoded_video = on_encoded_video
        self._remotes: dict[str, RemotePeer] = {}
        self._known: dict[str, protocol.PeerInfo] = {}
        self._earlier: set[str] = set()  # joined before us: we offer to them, we are impolite
        self._failures: deque[PeerClientError] = deque(maxlen=32)  # for connected()
        self._local: LocalMedia | None = None
        self._options: ConnectionOptions | None = None
        self._peer_id: str | None = None
        self._role: str | None = None
        self._log = ""

    # ------------------------------------------------------------------ views

    @property
    def remotes(self) -> Mapping[str, RemotePeer]:
        """Open connections by remote peer id (read-only view)."""
        return types.MappingProxyType(self._remotes)

    @property
    def room_peers(self) -> Mapping[str, protocol.PeerInfo]:
        """Other peers in the room as last announced by the hub (read-only view)."""
        return types.MappingProxyType(self._known)

    def states(self) -> dict[str, str]:
        """Each open connection's state, by remote peer id."""
        return {p: r.state for p, r in self._remotes.items()}

    def connected(self, peer_count: int | None) -> bool:
        """Whether ``peer_count`` remote peers (default: every current one) are connected.
        Raises the latest connection failure once too few are left to reach the count."""
        want = len(self._remotes) if peer_count is None else peer_count
        states = [r.state for r in self._remotes.values()]
        if states.count("connected") >= want:
            return True
        hopeful = sum(s in ("new", "connecting", "connected") for s in states)
        if self._failures and hopeful < want:
            raise self._failures[-1]
        return False

    def missing_audio(self, peer_ids: Iterable[str] | None) -> set[str]:
        """Which of ``peer_ids`` (default: every open connection that sends us audio) no audio
        frame has come from yet. Raises the connection's error if one of them failed."""
        ids = peer_ids if peer_ids is not None else {
            pid for pid, r in self._remotes.items() if receives(r.plan.audio)
        }
        missing: set[str] = set()
        for pid in ids:
            remote = self._remotes.get(pid)
            if remote is not None and remote.error is not None:
                raise remote.error
            record = self.stats.remote_peers.get(pid)
            if record is None or record.first_audio_at_s is None:
                missing.add(pid)
        return missing

    # ------------------------------------------------------------------ the room

    def seat(self, joined: protocol.Joined, local: LocalMedia | None, log_prefix: str) -> None:
        """(Re)joined as ``joined``: connections opened from now on use its role and ICE
        servers (unless the config overrides them)."""
        self._peer_id, self._role, self._local, self._log = (
            joined.peer_id, joined.role, local, log_prefix)
        c = self.config
        servers = c.ice_servers if c.ice_servers is not None else tuple(joined.ice_servers)
        self._options = ConnectionOptions(
            ice_servers=servers, ice_transport_policy=c.ice_transport_policy,
            ice_timeout_s=c.ice_timeout_s, pin_host_addresses=c.pin_host_addresses,
            decode_audio=c.decode_audio, decode_video=c.decode_video,
            tap_video=joined.features.record_video,
            audio_prefetch=c.audio_prefetch,
        )

    def greet(self, joined: protocol.Joined) -> None:
        """As the newcomer: offer to everyone already in the room."""
        for info in joined.peers:
            if info.peer_id == joined.peer_id:
                continue
            self._known[info.peer_id] = info
            self._earlier.add(info.peer_id)
            self._open(info.peer_id, info.role, offerer=True)

    def peer_seen(self, info: protocol.PeerInfo) -> None:
        """A ``peer-joined`` or ``peer-updated``: remember its role for when it offers."""
        if info.peer_id != self._peer_id:
            self._known[info.peer_id] = info

    def peer_left(self, peer_id: str) -> None:
        self._known.pop(peer_id, None)
        self._drop(peer_id)

    def route(self, message: SignalMessage) -> None:
        """Hand a relayed offer/answer/candidate to its connection; an offer from a peer we
        have no live connection to opens one (we answer)."""
        remote = self._remotes.get(message.from_)
        if isinstance(message, protocol.OfferFrom) and (
            remote is None or remote.state in ("failed", "closed")
        ):
            if remote is not None:
                self._drop(message.from_)
            info = self._known.get(message.from_)
            remote = self._open(message.from_, info.role if info else "participant",
                                offerer=False)
        if remote is None:
            logger.debug("%s %s from unknown peer %s dropped", self._log,
                         type(message).__name__, message.from_)
            return
        remote.post(message)

    def resumed(self, joined: protocol.Joined) -> None:
        """The hub gave our seat back: keep the connections whose peers are still there (they
        never depended on the socket); peers that joined meanwhile will offer to us."""
        listed = {p.peer_id: p for p in joined.peers if p.peer_id != joined.peer_id}
        for peer_id in [p for p in self._remotes if p not in listed]:
            self._drop(peer_id)  # left while we were away
        self._known = dict(listed)

    def restart(self, joined: protocol.Joined) -> None:
        """The hub seated us afresh instead of resuming: renegotiate everything -- drop every
        connection and offer to everyone again, as a newcomer."""
        for peer_id in list(self._remotes):
            self._drop(peer_id)
        self._known.clear()
        self._earlier.clear()
        self.greet(joined)

    def apply_media(self) -> None:
        """After the local media was turned on or off (see ``RemotePeer.apply_media``)."""
        for remote in self._remotes.values():
            remote.apply_media()

    async def collect_stats(self) -> None:
        """Pull ``getStats()`` from every open connection into :attr:`stats`."""
        await asyncio.gather(*(r.collect_stats() for r in list(self._remotes.values())))

    async def close_all(self) -> None:
        """Close every open connection (those dropped earlier close in their ``spawn`` tasks,
        which the client awaits)."""
        remotes = list(self._remotes.values())
        self._remotes.clear()
        await asyncio.gather(*(r.aclose() for r in remotes), return_exceptions=True)

    # ------------------------------------------------------------------ connections

    def _open(self, peer_id: str, role: str, *, offerer: bool) -> RemotePeer:
        if self._local is None or self._options is None or self._role is None:
            raise ClientClosedError("not joined")
        remote = RemotePeer(
            peer_id=peer_id, remote_role=role, local_role=self._role, offerer=offerer,
            polite=peer_id not in self._earlier, options=self._options,
            local_media=self._local,
            stats=self.stats.remote(peer_id, role, offerer=offerer),
            send=self._send, on_change=self._on_remote_change,
            on_audio_frame=self._on_audio_frame, on_encoded_audio=self._on_encoded_audio,
            on_encoded_video=self._on_encoded_video, log_prefix=self._log,
        )
        self._remotes[peer_id] = remote
        remote.start()
        self._on_change()
        return remote

    def _on_remote_change(self, remote: RemotePeer) -> None:
        if remote.state == "failed" and remote.error is not None:
            self._failures.append(remote.error)
            self.stats.error(remote.error.code)
            if self._remotes.get(remote.peer_id) is remote:
                self._drop(remote.peer_id)
        self._on_change()

    def _drop(self, peer_id: str) -> None:
        remote = self._remotes.pop(peer_id, None)
        if remote is not None:
            self._spawn(remote.aclose(), f"drop {peer_id}")
            self._on_change()
