"""Load-test bots: a :class:`~media.peer.PeerClient` with a scripted life and a result.

A bot joins at a given moment, connects to every other bot of its room (the peer client does
the negotiating), marks the start and the end of a *measurement window* with two snapshots,
then leaves. What it received inside the window, against what it should have received, is its
media delivery; its connect and first-audio timings come from the peer client's own records.

Two profiles (:func:`bot_client_config`):

- ``cheap`` (the default, what ``connvo-rtc loadtest`` runs): audio is Opus-encoded once per
  bot and replayed as packets (:class:`~media.sources.OpusSpec`: no encoder per connection),
  received audio and video are counted but never decoded (``decode_audio=False``).
- ``naive``: what a plain aiortc peer does -- a generated tone that aiortc Opus-encodes once per
  connection, and every received track decoded. The benchmark's baseline (``bench/bots.py``).

Delivery is counted from RTP: for each remote peer, inbound audio packets at the window's end
minus those at its start (``getStats()``), against one packet per 20 ms per expected remote
peer. A remote peer that never connected, or a bot that never joined, therefore counts as
nothing received: delivery answers "did every bot hear every other bot the whole time".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from .config import PeerClientConfig
from .errors import PeerClientError
from .peer import PeerClient
from .sources import FRAME_S, AudioSpec, FileSpec, OpusClip, OpusSpec, ToneSpec
from .stats import ClientSnapshot, RemotePeerSnapshot

logger = logging.getLogger(__name__)

BotProfile = Literal["cheap", "naive"]
PROFILES: tuple[BotProfile, ...] = ("cheap", "naive")

#: Audio packets a sender emits per second (one Opus packet per 20 ms frame).
PACKETS_PER_S = 1 / FRAME_S


def bot_client_config(
    ws_url: str,
    token: str,
    *,
    profile: BotProfile = "cheap",
    name: str = "",
    video: bool = False,
    audio_path: str | None = None,
    pin_host_addresses: Sequence[str] | None = None,
    relay: bool = False,
    ice_timeout_s: float = 15.0,
    connect_timeout_s: float = 10.0,
    join_timeout_s: float = 10.0,
    opus_clip: OpusClip | None = None,
) -> PeerClientConfig:
    """The peer-client configuration of one bot of ``profile`` (see the module docstring).

    ``audio_path`` sends a file (looped) instead of a tone; ``relay`` forces TURN-relayed
    candidates; ``pin_host_addresses`` pins ICE host candidates (``("127.0.0.1",)`` on loopback).
    ``opus_clip`` (cheap bots) is audio already encoded with
    :func:`~media.sources.encode_opus_spec`, shared by every bot of a process.
    Bots do not resume: a dropped socket is an error the report must show.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown bot profile {profile!r} (one of {', '.join(PROFILES)})")
    cheap = profile == "cheap"
    audio: AudioSpec
    if cheap:
        audio = OpusSpec(path=audio_path, clip=opus_clip)
    elif audio_path is not None:
        audio = FileSpec(path=audio_path)
    else:
        audio = ToneSpec()
    return PeerClientConfig(
        ws_url=ws_url,
        token=token,
        audio=audio,
        send_video=video,
        decode_audio=not cheap,
        decode_video=not cheap,
        pin_host_addresses=tuple(pin_host_addresses) if pin_host_addresses else None,
        ice_transport_policy="relay" if relay else "all",
        ice_timeout_s=ice_timeout_s,
        connect_timeout_s=connect_timeout_s,
        join_timeout_s=join_timeout_s,
        resume_attempts=0,
        name=name,
    )


@dataclass(frozen=True)
class BotTimes:
    """When a bot does what, on the ``time.monotonic()`` clock of its process."""

    join_at: float
    """Start connecting."""
    window_start: float
    """First snapshot: the measurement window opens."""
    window_end: float
    """Second snapshot: the window closes and the bot leaves."""

    def __post_init__(self) -> None:
        if not self.join_at <= self.window_start < self.window_end:
            raise ValueError("need join_at <= window_start < window_end")


class RemoteResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one bot measured about its connection to one remote peer."""

    peer_id: str
    state: str
    """Connection state at the end of the window."""
    connected_after_s: float | None
    """Offer created or received -> connection ``connected``, seconds."""
    first_audio_after_s: float | None
    """Offer created or received -> first audio packet from this peer, seconds."""
    audio_packets: int
    """Inbound audio RTP packets inside the measurement window."""
    audio_packets_total: int
    """Inbound audio RTP packets over the connection's life."""
    packets_lost: int
    """Inbound audio packets lost inside the window (sequence gaps, as aiortc counts them)."""
    jitter_ms: float | None
    """Inbound audio interarrival jitter at the window's end, milliseconds."""
    video_frames: int
    """Video frames received inside the window."""
    audio_decoded: bool
    error: str | None


class BotResult(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one bot measured; JSON-ready with ``msgspec.to_builtins``."""

    index: int
    name: str
    room_id: str
    peer_id: str | None
    state: str
    """The peer client's state when the bot finished (``joined`` for a healthy bot)."""
    error: str | None
    """Code of the error that ended the bot (join refused, hub gone ...), if any."""
    errors: dict[str, int]
    """Every error the peer client counted, by code."""
    join_s: float | None
    """Websocket connect + ``join`` -> ``joined``, seconds."""
    ws_connect_s: float | None
    expected_peers: int
    window_s: float
    """Length of the measurement window as this bot measured it, seconds."""
    packets_expected: int
    """``expected_peers`` streams x one packet per 20 ms x ``window_s``."""
    packets_received: int
    """Window inbound audio packets, at most the expected count per remote peer."""
    remotes: list[RemoteResult]


def _inbound(remote: RemotePeerSnapshot, field: str) -> int:
    total = 0
    for stream in remote.rtp:
        if stream.direction == "inbound" and stream.kind == "audio":
            total += getattr(stream, field) or 0
    return total


def _jitter(remote: RemotePeerSnapshot) -> float | None:
    values = [s.jitter_ms for s in remote.rtp
              if s.direction == "inbound" and s.kind == "audio" and s.jitter_ms is not None]
    return max(values) if values else None


class Bot:
    """One load-test bot. :meth:`run` once; :meth:`stop` ends a running bot early (its result
    then covers what was measured so far); :meth:`aclose` is idempotent."""

    def __init__(self, config: PeerClientConfig, *, index: int, room_id: str,
                 expected_peers: int) -> None:
        if expected_peers < 0:
            raise ValueError("expected_peers must be >= 0")
        self.index = index
        self.room_id = room_id
        self.expected_peers = expected_peers
        self.client = PeerClient(config)
        self._phase = "waiting"
        self._error: str | None = None
        self._stopped = asyncio.Event()

    @property
    def phase(self) -> str:
        """``waiting`` -> ``joining`` -> ``joined`` -> ``done``; or ``failed``."""
        if self._error is not None or self.client.error is not None:
            return "failed"
        return self._phase

    @property
    def connected_peers(self) -> int:
        """Remote peers this bot is connected to right now."""
        return sum(r.state == "connected" for r in self.client.remote_peers.values())

    def stop(self) -> None:
        """End the bot's current wait now: it takes its last snapshot and leaves."""
        self._stopped.set()

    async def run(self, times: BotTimes) -> BotResult:
        """Join at ``times.join_at``, measure over the window, leave; never raises a
        :class:`~media.errors.PeerClientError` (failures are in the result)."""
        try:
            if not await self._wait_until(times.join_at):
                return self._result(None, await self.client.snapshot(), 0.0)
            self._phase = "joining"
            try:
                await self.client.connect()
            except PeerClientError as exc:
                self._error = exc.code
                window = times.window_end - times.window_start
                return self._result(None, await self.client.snapshot(), window)
            self._phase = "joined"
            if not await self._wait_until(times.window_start):
                return self._result(None, await self.client.snapshot(), 0.0)
            before = await self.client.snapshot()
            opened = time.monotonic()
            await self._wait_until(times.window_end)
            after = await self.client.snapshot()
            return self._result(before, after, time.monotonic() - opened)
        finally:
            if self._phase == "joined":
                self._phase = "done"
            await self.client.aclose()

    async def aclose(self) -> None:
        """Stop, leave and close the peer client (idempotent)."""
        self.stop()
        await self.client.aclose()

    async def _wait_until(self, deadline: float) -> bool:
        """Sleep until ``deadline`` (monotonic); False if :meth:`stop` came first."""
        delay = deadline - time.monotonic()
        if self._stopped.is_set():
            return False
        if delay <= 0:
            return True
        try:
            async with asyncio.timeout(delay):
                await self._stopped.wait()
        except TimeoutError:
            return True
        return False

    def _result(self, before: ClientSnapshot | None, after: ClientSnapshot,
                window_s: float) -> BotResult:
        error = self._error or (self.client.error.code if self.client.error else None)
        per_stream = round(window_s * PACKETS_PER_S)
        start = {r.peer_id: r for r in before.remote_peers} if before else {}
        remotes: list[RemoteResult] = []
        for remote in after.remote_peers:
            if remote.role not in ("host", "participant"):
                continue  # observers and taps send nothing
            base = start.get(remote.peer_id)
            packets = _inbound(remote, "packets") - (_inbound(base, "packets") if base else 0)
            lost = (_inbound(remote, "packets_lost")
                    - (_inbound(base, "packets_lost") if base else 0))
            frames = remote.video_frames - (base.video_frames if base else 0)
            remotes.append(RemoteResult(
                peer_id=remote.peer_id, state=remote.state,
                connected_after_s=remote.connected_after_s,
                first_audio_after_s=remote.first_audio_after_s,
                audio_packets=max(0, packets) if before else 0,
                audio_packets_total=_inbound(remote, "packets"),
                packets_lost=max(0, lost) if before else 0,
                jitter_ms=_jitter(remote), video_frames=max(0, frames) if before else 0,
                audio_decoded=remote.audio_decoded, error=remote.error,
            ))
        # The best expected_peers streams count, each at most a full window: a peer that
        # rejoined under a new id must not count twice, and a clock edge must not make one
        # stream make up for a missing one.
        received = sorted((min(r.audio_packets, per_stream) for r in remotes), reverse=True)
        return BotResult(
            index=self.index, name=self.client.config.name, room_id=self.room_id,
            peer_id=after.peer_id, state=after.state, error=error, errors=dict(after.errors),
            join_s=(None if after.join_s is None or after.ws_connect_s is None
                    else round(after.ws_connect_s + after.join_s, 4)),
            ws_connect_s=after.ws_connect_s, expected_peers=self.expected_peers,
            window_s=round(window_s, 4), packets_expected=per_stream * self.expected_peers,
            packets_received=sum(received[: self.expected_peers]), remotes=remotes,
        )
