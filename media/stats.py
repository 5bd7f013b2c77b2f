"""Timings and RTP statistics of one peer client, per remote peer.

Two layers:

- *recorders* (:class:`ClientStats`, :class:`RemotePeerStats`) are mutable, owned by one
  :class:`~media.peer.PeerClient` and updated on the event loop as things happen;
- *snapshots* (:class:`ClientSnapshot`, :class:`RemotePeerSnapshot`, :class:`RtpStreamSnapshot`)
  are frozen copies for reports; ``snapshot.to_dict()`` is JSON-ready.

All times are seconds on the monotonic clock: ``*_at_s`` fields count from the moment the
client was created, ``*_after_s`` fields are durations from the event named in their docstring.
RTP numbers come from aiortc's ``RTCPeerConnection.getStats()`` (``inbound-rtp``,
``outbound-rtp`` and ``transport`` entries); aiortc's inbound stats carry no byte count, so
``audio_bytes`` is counted by the peer client itself where it can (undecoded receive) and the
transport's ``bytes_received`` covers everything else.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCStatsReport,
    RTCTransportStats,
)

#: RTP clock rates used to turn aiortc's jitter (in timestamp units) into milliseconds.
_CLOCK_RATE = {"audio": 48_000, "video": 90_000}


@dataclass(frozen=True)
class RtpStreamSnapshot:
    """One RTP stream (one SSRC) as last seen in ``getStats()``."""

    direction: str
    """``inbound`` or ``outbound``."""
    kind: str
    """``audio`` or ``video``."""
    ssrc: int
    packets: int
    """Packets received (inbound) or sent (outbound)."""
    packets_lost: int | None = None
    """Inbound only: expected minus received, as aiortc computes it."""
    jitter_ms: float | None = None
    """Inbound only: interarrival jitter in milliseconds."""
    bytes_sent: int | None = None
    """Outbound only: payload bytes sent."""


@dataclass(frozen=True)
class RemotePeerSnapshot:
    """Everything measured about one remote peer's connection."""

    peer_id: str
    role: str
    offerer: bool
    """True when this client sent the offer."""
    state: str
    """Connection state: ``new``, ``connecting``, ``connected``, ``failed`` or ``closed``."""
    negotiation_started_at_s: float | None
    """When the offer was created (offerer) or received (answerer)."""
    connected_after_s: float | None
    """Offer -> ``connected``: from ``negotiation_started_at_s`` to connection state connected."""
    first_audio_after_s: float | None
    """From ``negotiation_started_at_s`` to the first audio frame received."""
    first_video_after_s: float | None
    """From ``negotiation_started_at_s`` to the first video frame received."""
    audio_frames: int
    """Audio frames received (decoded frames, or encoded frames when not decoding)."""
    audio_bytes: int
    """Encoded audio bytes received; counted only when audio is not decoded."""
    audio_decoded: bool
    video_frames: int
    transport_bytes_received: int
    transport_bytes_sent: int
    rtp: tuple[RtpStreamSnapshot, ...]
    error: str | None
    """Code of the error that ended this connection, if one did."""


@dataclass(frozen=True)
class ClientSnapshot:
    """A peer client's timings, errors and per-remote-peer records."""

    peer_id: str | None
    room_id: str | None
    role: str | None
    state: str
    ws_connect_s: float | None
    """Websocket connect: from ``connect()`` to the socket being open."""
    join_s: float | None
    """From the socket being open to the ``joined`` frame."""
    joined_at_s: float | None
    resumes: int
    """Successful resumptions after a dropped socket."""
    errors: dict[str, int]
    """Errors by code, over the client's whole life."""
    remote_peers: tuple[RemotePeerSnapshot, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)


class RemotePeerStats:
    """Recorder for one remote peer's connection (see :class:`RemotePeerSnapshot`)."""

    def __init__(self, clock: _Clock, peer_id: str, role: str, *, offerer: bool) -> None:
        self._clock = clock
        self.peer_id = peer_id
        self.role = role
        self.offerer = offerer
        self.state = "new"
        self.negotiation_started_at_s: float | None = None
        self.connected_at_s: float | None = None
        self.first_audio_at_s: float | None = None
        self.first_video_at_s: float | None = None
        self.audio_frames = 0
        self.audio_bytes = 0
        self.audio_decoded = True
        self.video_frames = 0
        self.transport_bytes_received = 0
        self.transport_bytes_sent = 0
        self.rtp: dict[tuple[str, int], RtpStreamSnapshot] = {}
        self.error: str | None = None

    def negotiation_started(self) -> None:
        if self.negotiation_started_at_s is None:
            self.negotiation_started_at_s = self._clock.now()

    def connected(self) -> None:
        if self.connected_at_s is None:
            self.connected_at_s = self._clock.now()

    def audio_frame(self, encoded_bytes: int = 0) -> None:
        if self.first_audio_at_s is None:
            self.first_audio_at_s = self._clock.now()
        self.audio_frames += 1
        self.audio_bytes += encoded_bytes

    def video_frame(self) -> None:
        if self.first_video_at_s is None:
            self.first_video_at_s = self._clock.now()
        self.video_frames += 1

    def failed(self, code: str) -> None:
        if self.error is None:
            self.error = code

    def update_rtp(self, report: RTCStatsReport) -> None:
        """Fold one ``getStats()`` report in (later reports replace earlier numbers)."""
        received = sent = 0
        for entry in report.values():
            if isinstance(entry, RTCInboundRtpStreamStats):
                rate = _CLOCK_RATE.get(entry.kind, 90_000)
                self.rtp[("inbound", entry.ssrc)] = RtpStreamSnapshot(
                    direction="inbound",
                    kind=entry.kind,
                    ssrc=entry.ssrc,
                    packets=entry.packetsReceived,
                    packets_lost=entry.packetsLost,
                    jitter_ms=round(entry.jitter * 1000 / rate, 3),
                )
            elif isinstance(entry, RTCOutboundRtpStreamStats):
                self.rtp[("outbound", entry.ssrc)] = RtpStreamSnapshot(
                    direction="outbound",
                    kind=entry.kind,
                    ssrc=entry.ssrc,
                    packets=entry.packetsSent,
                    bytes_sent=entry.bytesSent,
                )
            elif isinstance(entry, RTCTransportStats):
                received += entry.bytesReceived
                sent += entry.bytesSent
        # A closed transport reports nothing: keep the last non-empty totals.
        if received or sent:
            self.transport_bytes_received = received
            self.transport_bytes_sent = sent

    def inbound_packets(self, kind: str) -> int:
        """Inbound RTP packets of ``kind`` as of the last ``update_rtp``."""
        return sum(
            s.packets for s in self.rtp.values() if s.direction == "inbound" and s.kind == kind
        )

    def snapshot(self) -> RemotePeerSnapshot:
        start = self.negotiation_started_at_s

        def after(at: float | None) -> float | None:
            return None if at is None or start is None else round(at - start, 4)

        return RemotePeerSnapshot(
            peer_id=self.peer_id,
            role=self.role,
            offerer=self.offerer,
            state=self.state,
            negotiation_started_at_s=start,
            connected_after_s=after(self.connected_at_s),
            first_audio_after_s=after(self.first_audio_at_s),
            first_video_after_s=after(self.first_video_at_s),
            audio_frames=self.audio_frames,
            audio_bytes=self.audio_bytes,
            audio_decoded=self.audio_decoded,
            video_frames=self.video_frames,
            transport_bytes_received=self.transport_bytes_received,
            transport_bytes_sent=self.transport_bytes_sent,
            rtp=tuple(self.rtp[key] for key in sorted(self.rtp)),
            error=self.error,
        )


class _Clock:
    """Seconds since the owning client was created (monotonic)."""

    def __init__(self) -> None:
        self._origin = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self._origin, 4)


class ClientStats:
    """Recorder for one peer client (see :class:`ClientSnapshot`)."""

    def __init__(self) -> None:
        self._clock = _Clock()
        self.peer_id: str | None = None
        self.room_id: str | None = None
        self.role: str | None = None
        self.ws_connect_s: float | None = None
        self.join_s: float | None = None
        self.joined_at_s: float | None = None
        self.resumes = 0
        self.errors: Counter[str] = Counter()
        #: Remote peers by id; a peer that left keeps its record (a rejoin gets a new id).
        self.remote_peers: dict[str, RemotePeerStats] = {}

    def now(self) -> float:
        """Seconds since this client was created."""
        return self._clock.now()

    def joined(self, *, peer_id: str, room_id: str, role: str, ws_connect_s: float,
               join_s: float) -> None:
        self.peer_id, self.room_id, self.role = peer_id, room_id, role
        if self.joined_at_s is None:
            self.ws_connect_s, self.join_s = round(ws_connect_s, 4), round(join_s, 4)
            self.joined_at_s = self._clock.now()

    def error(self, code: str) -> None:
        self.errors[code] += 1

    def remote(self, peer_id: str, role: str, *, offerer: bool) -> RemotePeerStats:
        """A fresh recorder for a new connection to ``peer_id`` (it replaces the record of an
        earlier connection to the same peer)."""
        record = RemotePeerStats(self._clock, peer_id, role, offerer=offerer)
        self.remote_peers[peer_id] = record
        return record

    def snapshot(self, state: str) -> ClientSnapshot:
        return ClientSnapshot(
            peer_id=self.peer_id,
            room_id=self.room_id,
            role=self.role,
            state=state,
            ws_connect_s=self.ws_connect_s,
            join_s=self.join_s,
            joined_at_s=self.joined_at_s,
            resumes=self.resumes,
            errors=dict(self.errors),
            remote_peers=tuple(r.snapshot() for r in self.remote_peers.values()),
        )
