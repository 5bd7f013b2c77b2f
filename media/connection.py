"""One remote peer: its ``RTCPeerConnection``, negotiation, media accounting and failure.

Negotiation rules (DESIGN "Websocket protocol"):

- The newcomer offers to every peer listed in its ``joined.peers``; existing peers answer.
  A :class:`RemotePeer` created with ``offerer=True`` makes that offer.
- Perfect negotiation, the peer that joined earlier being polite. aiortc has no
  ``setLocalDescription({type: 'rollback'})``, so this client never *starts* a renegotiation:
  it negotiates every media line it may ever use up front (muting is ``track.enabled``-style,
  see :class:`~media.local.LocalMedia`) and only answers later offers (a browser adding a
  screen share). The only possible collision is therefore a remote offer racing our initial
  offer: the impolite side (the newcomer, which is the offerer here) ignores the remote offer
  and the candidates that follow it; if a polite instance ever collides (a hub bug), it
  emulates the rollback by replacing its still-unconnected peer connection and answering.
- Browser candidates arrive trickled and are held back until the remote description is set
  (:mod:`media.candidates`). aiortc puts all its own candidates into its SDP, so none are sent.

Who sends what by role is :func:`media.plan.plan_media`; :mod:`media.transceivers` applies it to
the connection's media lines.

Failure: the connection going to ``failed``, or not reaching ``connected`` within
``ice_timeout_s`` of the offer, is ``ice-failed``; with ``ice_transport_policy='relay'`` a local
SDP without a ``typ relay`` candidate is ``turn-auth-failed`` (aiortc would sit in ``new``
forever). A failed :class:`RemotePeer` reports through ``on_change``; its owner closes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from signaling import protocol
from signaling.tasks import TaskSet

from .candidates import RemoteCandidates, parse_candidate
from .errors import (
    IceFailedError,
    NegotiationError,
    PeerClientError,
    SendQueueFullError,
    TurnAuthError,
)
from .local import LocalMedia
from .loopback import pin_host_addresses
from .plan import plan_media
from .receive import (
    EncodedFrame,
    consume_track,
    keyframe_requester,
    set_audio_prefetch,
    skip_decoding,
    tee_encoded,
)
from .stats import RemotePeerStats
from .transceivers import Transceivers

__all__ = [
    "AudioFrameCallback",
    "ConnectionOptions",
    "RemotePeer",
    "SignalMessage",
    "parse_candidate",  # lives in media.candidates; still importable from here
    "rtc_configuration",
]

logger = logging.getLogger(__name__)

SignalMessage = protocol.OfferFrom | protocol.AnswerFrom | protocol.CandidateFrom


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ConnectionOptions:
    """Per-connection settings, copied from :class:`~media.peer.PeerClientConfig`."""

    ice_servers: tuple[protocol.IceServer, ...]
    """STUN/TURN servers; empty means host candidates only (never aiortc's public STUN)."""
    ice_transport_policy: str = "all"
    """``all`` or ``relay``."""
    ice_timeout_s: float = 15.0
    """Offer -> ``connected`` deadline, seconds."""
    pin_host_addresses: tuple[str, ...] | None = None
    """Gather host candidates only on these addresses (see :mod:`media.loopback`)."""
    decode_audio: bool = True
    decode_video: bool = True
    tap_video: bool = False
    """The room records video: video lines to and from the tap (``features.recordVideo``)."""
    audio_prefetch: int | None = None
    """Frames aiortc's audio jitter buffer holds before releasing one (``None``: aiortc's 4)."""
    signal_queue_size: int = 256
    """Signalling frames from this peer waiting to be applied before the peer is dropped."""
    pending_candidates: int = 64
    """Candidates held back until the remote description is set (oldest dropped beyond)."""
    close_timeout_s: float = 5.0


def rtc_configuration(options: ConnectionOptions) -> RTCConfiguration:
    """An explicit ``RTCConfiguration``: an empty list, never ``None``, because ``None`` makes
    aiortc use a public STUN server (5 s per ``setLocalDescription`` when unreachable)."""
    servers = [
        RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
        for s in options.ice_servers
    ]
    return RTCConfiguration(
        iceServers=servers,
        iceTransportPolicy=RTCIceTransportPolicy(options.ice_transport_policy),
    )


# --------------------------------------------------------------------------- the connection

_MAKE_OFFER = object()
AudioFrameCallback = Callable[[str, av.AudioFrame], None]
#: ``(peer_id, frame)``: every encoded audio (or video) frame received from that peer
#: (recording).
EncodedAudioCallback = Callable[[str, EncodedFrame], None]


class RemotePeer:
    """This client's connection to one remote peer. Create, :meth:`start`, feed with
    :meth:`post`, close with :meth:`aclose` (idempotent)."""

    def __init__(
        self,
        *,
        peer_id: str,
        remote_role: str,
        local_role: str,
        offerer: bool,
        polite: bool,
        options: ConnectionOptions,
        local_media: LocalMedia,
        stats: RemotePeerStats,
        send: Callable[[protocol.Offer | protocol.Answer], None],
        on_change: Callable[[RemotePeer], None],
        on_audio_frame: AudioFrameCallback | None = None,
        on_encoded_audio: EncodedAudioCallback | None = None,
        on_encoded_video: EncodedAudioCallback | None = None,
        log_prefix: str = "",
    ) -> None:
        self.peer_id = peer_id
        self.remote_role = remote_role
        self.offerer = offerer
        self.polite = polite
        self.plan = plan_media(
            local_role, remote_role, send_audio=local_media.audio_source is not None,
            send_video=local_media.video_capable, tap_video=options.tap_video,
        )
        #: ``new`` -> ``connecting`` -> ``connected``; or ``failed``; finally ``closed``.
        self.state = "new"
        #: Why the connection failed, when it did.
        self.error: PeerClientError | None = None
        self.stats = stats
        self._options = options
        self._send = send
        self._on_change = on_change
        self._on_audio_frame = on_audio_frame
        self._on_encoded_audio = on_encoded_audio
        self._on_encoded_video = on_encoded_video
        self._tracks = 0
        self._log = f"{log_prefix} remote={peer_id}".strip()
        self._inbox: asyncio.Queue[object] = asyncio.Queue(maxsize=options.signal_queue_size)
        self._candidates = RemoteCandidates(max_pending=options.pending_candidates,
                                            log_prefix=self._log)
        self._tasks = TaskSet(self._log, logger=logger, on_crash=lambda exc: self._fail(
            PeerClientError(f"internal error: {exc!r}")))
        self._transceivers = Transceivers(local_media, self.plan)
        self._ignore_offer = False
        self._connected = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._pc = self._new_pc()

    # ------------------------------------------------------------------ public

    @property
    def pc(self) -> RTCPeerConnection:
        """The underlying aiortc connection (replaced only by a polite collision)."""
        return self._pc

    def start(self) -> None:
        """Start the signalling worker (and, for the offerer, make the offer)."""
        if self.offerer:
            self._inbox.put_nowait(_MAKE_OFFER)
        self._spawn(self._work(), "signal")

    def post(self, message: SignalMessage) -> None:
        """Hand a relayed offer/answer/candidate from this peer to the worker (never blocks)."""
        if self.state in ("failed", "closed"):
            return
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            self._fail(NegotiationError("signalling backlog overflow"))

    def apply_media(self) -> None:
        """After :meth:`LocalMedia.set_enabled`: give video senders a track if video was
        turned on for the first time (no renegotiation: the line is already ``sendrecv``)."""
        if self.state in ("failed", "closed"):
            return
        self._transceivers.apply_media(self._pc)

    async def collect_stats(self) -> None:
        """Pull ``getStats()`` into :attr:`stats`."""
        if self.state == "closed":
            return
        try:
            async with asyncio.timeout(2.0):
                self.stats.update_rtp(await self._pc.getStats())
        except Exception as exc:  # noqa: BLE001 - stats are best effort on a dying connection
            logger.debug("%s getStats failed: %r", self._log, exc)

    async def wait_connected(self) -> None:
        """Return once connected (raises nothing; check :attr:`state` / :attr:`error`)."""
        await self._connected.wait()

    async def aclose(self) -> None:
        """Stop everything and close the peer connection (idempotent, safe to cancel: the
        close itself runs to completion in a task this object owns)."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(
                self._close(), name=f"close {self._log}"
            )
        await asyncio.shield(self._close_task)

    # ------------------------------------------------------------------ plumbing

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, what)

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(rtc_configuration(self._options))
        pc.on("connectionstatechange", lambda: self._on_pc_state(pc))
        pc.on("track", lambda track: self._on_track(pc, track))
        return pc

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.stats.state = state
            self._on_change(self)

    def _fail(self, error: PeerClientError) -> None:
        if self.error is not None or self.state == "closed":
            return
        self.error = error
        self.stats.failed(error.code)
        logger.warning("%s connection failed (%s): %s", self._log, error.code, error.message)
        self._set_state("failed")

    # ------------------------------------------------------------------ aiortc events

    def _on_pc_state(self, pc: RTCPeerConnection) -> None:
        if pc is not self._pc or self.state in ("failed", "closed"):
            return
        state = pc.connectionState
        logger.debug("%s connection state %s", self._log, state)
        if state == "connected":
            self.stats.connected()
            self._connected.set()
            self._set_state("connected")
        elif state == "connecting":
            self._set_state("connecting")
        elif state == "failed":
            self._fail(IceFailedError("peer connection failed (ICE or DTLS)"))

    def _on_track(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        if pc is not self._pc:
            return
        receiver = next(
            (t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None
        )
        decode = self._options.decode_audio if track.kind == "audio" else self._options.decode_video
        handler: Callable[[Any], None]
        if track.kind == "audio":
            handler = self._audio_frame
            if self._options.audio_prefetch is not None and receiver is not None:
                set_audio_prefetch(receiver, self._options.audio_prefetch, self._log)
            on_encoded = self._on_encoded_audio
            if on_encoded is not None and receiver is not None:
                # The encoded frames go to the recorder; decoded only if PCM is wanted too
                # (else the tee counts them, as skip_decoding would).
                self._tracks += 1
                peer_id, count = self.peer_id, self.stats.audio_frame

                def listener(frame: EncodedFrame) -> None:
                    if not decode:
                        count(len(frame.data))
                    on_encoded(peer_id, frame)

                if tee_encoded(receiver, f"{peer_id}.{self._tracks}", listener,
                               decode=decode, log_prefix=self._log):
                    self.stats.audio_decoded = decode
                    receiver = None  # the tee owns the decoder queue now
            if not decode and receiver is not None and skip_decoding(
                receiver, self.stats.audio_frame, self._log
            ):
                self.stats.audio_decoded = False
        else:
            handler = self._video_frame
            on_video = self._on_encoded_video
            if on_video is not None and receiver is not None:
                # VP8 frames to the recorder, which asks for key frames itself (PLI).
                self._tracks += 1
                video_peer, video_count = self.peer_id, self.stats.video_frame

                def video_listener(frame: EncodedFrame) -> None:
                    if not decode:
                        video_count()
                    on_video(video_peer, frame)

                if tee_encoded(receiver, f"{video_peer}.{self._tracks}", video_listener,
                               decode=decode, log_prefix=self._log,
                               request_keyframe=keyframe_requester(
                                   receiver, self._spawn, self._log)):
                    receiver = None
            if not decode and receiver is not None:
                skip_decoding(receiver, self._encoded_video_frame, self._log)
        logger.debug("%s receiving %s", self._log, track.kind)
        self._spawn(consume_track(track, handler), f"consume-{track.kind}")

    def _audio_frame(self, frame: av.AudioFrame) -> None:
        self.stats.audio_frame()
        if self._on_audio_frame is not None:
            self._on_audio_frame(self.peer_id, frame)

    def _video_frame(self, frame: object) -> None:
        self.stats.video_frame()

    def _encoded_video_frame(self, size: int) -> None:
        self.stats.video_frame()

    # ------------------------------------------------------------------ negotiation

    async def _work(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                if item is _MAKE_OFFER:
                    await self._make_offer()
                elif isinstance(item, protocol.OfferFrom):
                    await self._on_offer(item)
                elif isinstance(item, protocol.AnswerFrom):
                    await self._on_answer(item)
                elif isinstance(item, protocol.CandidateFrom):
                    await self._on_candidate(item)
            except PeerClientError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # remote SDP can make aiortc raise anything
                logger.debug("%s negotiation error", self._log, exc_info=True)
                self._fail(NegotiationError(f"{type(exc).__name__}: {exc}"))
                return

    def _deliver(self, message: protocol.Offer | protocol.Answer) -> None:
        try:
            self._send(message)
        except SendQueueFullError:
            raise
        except PeerClientError as exc:
            raise NegotiationError(f"cannot reach the hub: {exc.message}") from None

    async def _set_local(self, description: RTCSessionDescription) -> str:
        with pin_host_addresses(self._options.pin_host_addresses):
            await self._pc.setLocalDescription(description)
        sdp = self._pc.localDescription.sdp
        if self._options.ice_transport_policy == "relay" and " typ relay" not in sdp:
            raise TurnAuthError(
                "relay-only ICE but no relay candidate was gathered "
                f"({len(self._options.ice_servers)} ICE server entries): "
                "TURN credentials refused, TURN unreachable, or no TURN server"
            )
        if "a=candidate:" not in sdp:
            raise IceFailedError("no local ICE candidates gathered (pin host addresses?)")
        return sdp

    async def _make_offer(self) -> None:
        self.stats.negotiation_started()
        pc = self._pc
        self._transceivers.add_for_offer(pc)
        sdp = await self._set_local(await pc.createOffer())
        self._deliver(protocol.Offer(to=self.peer_id, sdp=sdp))
        logger.info("%s offer sent", self._log)
        self._start_watchdog()

    async def _on_offer(self, message: protocol.OfferFrom) -> None:
        if self._pc.signalingState != "stable":
            if not self.polite:
                logger.info("%s offer collision: impolite, ignoring the remote offer", self._log)
                self._ignore_offer = True
                return
            logger.info("%s offer collision: polite, restarting as the answerer", self._log)
            await self._replace_pc()
        self._ignore_offer = False
        self.stats.negotiation_started()
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=message.sdp, type="offer"))
        self._transceivers.configure_answer(self._pc)
        sdp = await self._set_local(await self._pc.createAnswer())
        self._deliver(protocol.Answer(to=self.peer_id, sdp=sdp))
        logger.info("%s answer sent", self._log)
        await self._candidates.flush(self._pc)
        self._start_watchdog()

    async def _on_answer(self, message: protocol.AnswerFrom) -> None:
        if self._pc.signalingState != "have-local-offer":
            logger.info("%s ignoring an answer in state %s", self._log, self._pc.signalingState)
            return
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=message.sdp, type="answer"))
        logger.info("%s answer applied", self._log)
        await self._candidates.flush(self._pc)

    async def _on_candidate(self, message: protocol.CandidateFrom) -> None:
        if self._ignore_offer:
            return  # they belong to the remote offer we ignored
        await self._candidates.receive(self._pc, message)

    async def _replace_pc(self) -> None:
        # aiortc has no rollback: a polite collision starts over on a fresh connection.
        old, self._pc = self._pc, self._new_pc()
        self._transceivers.stop()
        self._candidates.clear()
        await self._close_pc(old)

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = self._spawn(self._watch_ice(), "ice-watchdog")

    async def _watch_ice(self) -> None:
        try:
            async with asyncio.timeout(self._options.ice_timeout_s):
                await self._connected.wait()
        except TimeoutError:
            self._fail(IceFailedError(
                f"not connected within {self._options.ice_timeout_s} s (connection "
                f"{self._pc.connectionState}, signalling {self._pc.signalingState})"
            ))

    # ------------------------------------------------------------------ closing

    async def _close_pc(self, pc: RTCPeerConnection) -> None:
        try:
            async with asyncio.timeout(self._options.close_timeout_s):
                await pc.close()
        except TimeoutError:
            logger.warning("%s peer connection close timed out", self._log)

    async def _close(self) -> None:
        await self._tasks.aclose()
        await self.collect_stats()
        await self._close_pc(self._pc)
        self._transceivers.stop()
        if self.error is None:
            self.stats.state = "closed"
        self.state = "closed"
        logger.debug("%s closed", self._log)
        self._on_change(self)
