"""Configuration of a :class:`~media.peer.PeerClient`: one frozen dataclass of plain values.

Like the rest of ``media/`` it takes plain arguments, never the hub's settings object.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from signaling import protocol

from .sources import AudioSpec, ToneSpec


@dataclass(frozen=True)
class PeerClientConfig:
    """Everything a :class:`PeerClient` needs; plain values only."""

    ws_url: str
    """Hub websocket URL, e.g. ``ws://127.0.0.1:8080/ws``."""
    token: str = field(repr=False)
    """Join token for one room (a secret: kept out of ``repr``)."""
    ice_servers: tuple[protocol.IceServer, ...] | None = None
    """STUN/TURN servers overriding ``joined.iceServers``; ``None`` uses the hub's list. An
    empty tuple means host candidates only."""
    ice_transport_policy: str = "all"
    """``all``, or ``relay`` to use TURN-relayed candidates only."""
    audio: AudioSpec | None = field(default_factory=ToneSpec)
    """What to send as audio (:mod:`media.sources`); ``None`` sends none."""
    send_video: bool = False
    """Send a synthetic video track (VP8-encoded per connection: costly). Only a client that
    starts with video can toggle it later with :meth:`PeerClient.set_media`."""
    decode_audio: bool = True
    """Decode received audio; False counts encoded frames and bytes without decoding (cheap
    bots; ``on_audio_frame`` then never fires)."""
    decode_video: bool = True
    """Decode received video; False counts encoded frames only."""
    audio_prefetch: int | None = None
    """Audio frames (20 ms each) aiortc's jitter buffer holds before it releases the oldest:
    its fixed playout delay. ``None`` keeps aiortc's 4 (80 ms). The agent hears with 1: a
    barge-in must stop it within 200 ms, and a late packet costs the recogniser little."""
    connect_timeout_s: float = 5.0
    """Websocket connect deadline, seconds (connection refused fails at once)."""
    join_timeout_s: float = 5.0
    """From the socket being open to ``joined``, seconds."""
    ice_timeout_s: float = 15.0
    """Offer -> ``connected`` deadline per remote peer, seconds; then ``ice-failed``."""
    pin_host_addresses: tuple[str, ...] | None = None
    """Gather ICE host candidates only on these addresses (tests: ``("127.0.0.1",)``); see
    :mod:`media.loopback`. ``None`` uses aioice's discovery (no loopback)."""
    resume_attempts: int = 5
    """Reconnects tried after the socket drops unexpectedly; 0 disables resuming."""
    resume_backoff_s: float = 0.25
    """Delay before the second reconnect; doubles per attempt up to 5 s."""
    heartbeat_s: float | None = 15.0
    """Websocket ping interval, seconds; a silent hub is detected within about this long."""
    send_queue_size: int = 256
    """Frames queued for the hub before the socket is considered stuck and dropped."""
    name: str = ""
    """Label in log lines (e.g. the bot number)."""

    def __post_init__(self) -> None:
        if not self.ws_url.startswith(("ws://", "wss://")):
            raise ValueError(f"ws_url must be ws:// or wss://, got {self.ws_url!r}")
        if self.ice_transport_policy not in ("all", "relay"):
            raise ValueError("ice_transport_policy must be 'all' or 'relay'")
        for name in ("connect_timeout_s", "join_timeout_s", "ice_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.resume_attempts < 0 or self.resume_backoff_s < 0 or self.send_queue_size < 1:
            raise ValueError("resume_attempts, resume_backoff_s and send_queue_size out of range")
        for address in self.pin_host_addresses or ():
            ipaddress.ip_address(address)  # raises ValueError on garbage
