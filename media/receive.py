"""Consuming remote tracks: every incoming track is drained, decoded or not.

aiortc hands decoded frames to a ``RemoteStreamTrack`` whose queue is unbounded; a track nobody
calls ``recv()`` on grows without limit. :func:`consume_track` drains one track until it ends
and reports every frame to a callback, so nothing piles up as long as callbacks return quickly
(they are synchronous on purpose: a slow consumer must drop or hand off, not block the drain).

Receiving without decoding (``decode_audio=False``, for cheap bots): aiortc's
``RTCRtpReceiver`` reassembles RTP packets into encoded frames in its jitter buffer (on the event
loop), then puts ``(codec, encoded_frame)`` on a ``queue.Queue`` read by a decoder thread.
:func:`skip_decoding` swaps that queue, before the receiver starts, for a
:class:`CountingQueue` that counts each encoded frame and its bytes and drops it; only the
end-of-stream ``None`` goes through, so the decoder thread still exits and the track still ends.
Everything before the decoder (SRTP, RTCP receiver reports, jitter, ``getStats()``) is
untouched. The swap uses aiortc's private attribute ``_RTCRtpReceiver__decoder_queue`` (checked
on aiortc 1.16); if it is missing or the receiver has already started, :func:`skip_decoding`
returns False and the caller falls back to decoding.

Recording without re-encoding uses the same seam: :func:`tee_encoded` swaps in a
:class:`TeeQueue` that hands each encoded frame (for Opus: one RTP payload, the exact bytes the
sender's encoder produced, in order after the jitter buffer) to a callback and then on to the
decoder (or drops it when nobody needs the decoded audio). Video frames come the same way:
aiortc's video jitter buffer hands over whole, reassembled VP8 frames (the RTP payload
descriptors already stripped); :func:`keyframe_requester` lets the consumer ask the sender for a
key frame (RTCP PLI), which a recorder that does not decode must do itself: aiortc only sends
one on lost packets or decoder errors.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_STARTED = "_RTCRtpReceiver__started"
_REMOTE_STREAMS = "_RTCRtpReceiver__remote_streams"
_RTX_SSRC = "_RTCRtpReceiver__rtx_ssrc"


class CountingQueue(queue.Queue[Any]):
    """Replaces a receiver's decoder queue: counts encoded frames instead of decoding them.

    ``put`` is called on the event loop (from ``RTCRtpReceiver._handle_rtp_packet``), so the
    callback runs there too.
    """

    def __init__(self, on_encoded_frame: Callable[[int], None]) -> None:
        super().__init__()
        self._on_encoded_frame = on_encoded_frame

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # end of stream: let the decoder thread see it and exit
            super().put(None, block, timeout)
            return
        _codec, encoded_frame = item
        self._on_encoded_frame(len(encoded_frame.data))


def skip_decoding(
    receiver: RTCRtpReceiver, on_encoded_frame: Callable[[int], None], log_prefix: str = ""
) -> bool:
    """Make ``receiver`` count encoded frames instead of decoding them.

    Must be called before the receiver starts (from the peer connection's ``track`` event).
    Returns False, changing nothing, when that is not possible.
    """
    current = getattr(receiver, _DECODER_QUEUE, None)
    if not isinstance(current, queue.Queue) or getattr(receiver, _STARTED, True):
        logger.warning("%s cannot skip decoding on this aiortc receiver; decoding instead",
                       log_prefix)
        return False
    if not current.empty():
        return False
    setattr(receiver, _DECODER_QUEUE, CountingQueue(on_encoded_frame))
    return True


_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"


def set_audio_prefetch(receiver: RTCRtpReceiver, prefetch: int, log_prefix: str = "") -> bool:
    """Give an audio ``receiver`` a jitter buffer that releases a frame once ``prefetch``
    frames follow it (aiortc fixes 4: 80 ms of delay on every audio track it receives).
    Must be called before the receiver starts (from the ``track`` event); uses aiortc's
    private ``_RTCRtpReceiver__jitter_buffer`` (checked on aiortc 1.16) and returns False,
    changing nothing, if that is not possible."""
    current = getattr(receiver, _JITTER_BUFFER, None)
    if not isinstance(current, JitterBuffer) or getattr(receiver, _STARTED, True):
        logger.warning("%s cannot set the audio jitter buffer on this aiortc receiver",
                       log_prefix)
        return False
    setattr(receiver, _JITTER_BUFFER, JitterBuffer(capacity=current.capacity,
                                                   prefetch=max(0, prefetch)))
    return True


async def consume_track(track: MediaStreamTrack, on_frame: Callable[[Any], None]) -> int:
    """Receive frames from ``track`` until it ends; call ``on_frame`` for each.

    Returns the number of frames seen. Exceptions raised by ``on_frame`` propagate (a bug in
    the consumer should be loud), ``MediaStreamError`` (the track ended) does not.
    """
    count = 0
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return count
        count += 1
        on_frame(frame)


# --------------------------------------------------------------------------- encoded frames


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded frame as aiortc's jitter buffer hands it to the decoder: ``data`` (for
    Opus, one Opus packet: normally 20 ms; for VP8 one whole frame), ``timestamp`` (the RTP
    timestamp, 32-bit, in the codec's clock: 48 kHz for Opus, 90 kHz for video), ``codec`` (the
    MIME type, ``audio/opus``, ``video/VP8``), ``track`` (an id of the remote track, unique
    within this client), ``arrival`` (``time.time()`` when it left the jitter buffer) and
    ``request_keyframe`` (video: asks the sender for a key frame; None for audio)."""

    track: str
    codec: str
    data: bytes
    timestamp: int
    arrival: float
    request_keyframe: Callable[[], None] | None = None


EncodedFrameCallback = Callable[[EncodedFrame], None]


class TeeQueue(queue.Queue[Any]):
    """Replaces a receiver's decoder queue: hands every encoded frame to a callback, then to
    the decoder thread (``decode=True``) or nowhere (``decode=False``: nobody needs PCM).

    ``put`` is called on the event loop (from ``RTCRtpReceiver._handle_rtp_packet``), so the
    callback runs there and must return quickly. The end-of-stream ``None`` always goes
    through, so the decoder thread exits and the track ends.
    """

    def __init__(self, track_id: str, on_frame: EncodedFrameCallback, *, decode: bool,
                 request_keyframe: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._track_id = track_id
        self._on_frame = on_frame
        self._decode = decode
        self._request_keyframe = request_keyframe

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None, block, timeout)
            return
        codec, encoded_frame = item
        try:
            self._on_frame(EncodedFrame(
                track=self._track_id, codec=str(getattr(codec, "mimeType", "")),
                data=bytes(encoded_frame.data), timestamp=int(encoded_frame.timestamp),
                arrival=time.time(), request_keyframe=self._request_keyframe))
        except Exception:  # a consumer bug must not stop the receiver (nor decoding)
            logger.exception("track=%s encoded frame consumer failed", self._track_id)
        if self._decode:
            super().put(item, block, timeout)


def tee_encoded(receiver: RTCRtpReceiver, track_id: str, on_frame: EncodedFrameCallback, *,
                decode: bool, log_prefix: str = "",
                request_keyframe: Callable[[], None] | None = None) -> bool:
    """Give ``receiver``'s encoded frames to ``on_frame`` before (``decode``) or instead of
    decoding them. Must be called before the receiver starts (from the ``track`` event);
    returns False, changing nothing, when that is not possible (the private attribute moved:
    checked on aiortc 1.16). ``request_keyframe`` is handed to the consumer with every frame
    (:func:`keyframe_requester`)."""
    current = getattr(receiver, _DECODER_QUEUE, None)
    if not isinstance(current, queue.Queue) or getattr(receiver, _STARTED, True) \
            or not current.empty():
        logger.warning("%s cannot reach the encoded frames of this aiortc receiver",
                       log_prefix)
        return False
    setattr(receiver, _DECODER_QUEUE, TeeQueue(track_id, on_frame, decode=decode,
                                               request_keyframe=request_keyframe))
    return True


def keyframe_requester(
    receiver: RTCRtpReceiver, spawn: Callable[[Coroutine[Any, Any, Any], str], object],
    log_prefix: str = "",
) -> Callable[[], None]:
    """A function that asks the sender of ``receiver``'s track for a key frame: an RTCP PLI
    (RFC 4585 6.3.1) for each media SSRC the receiver has seen (RTX SSRCs left out), sent by
    aiortc's own ``_send_rtcp_pli`` in a task ``spawn`` owns. Before any packet has arrived
    there is nobody to ask and it does nothing (callers ask again later)."""
    send = getattr(receiver, "_send_rtcp_pli", None)

    def request() -> None:
        streams = getattr(receiver, _REMOTE_STREAMS, None)
        rtx = getattr(receiver, _RTX_SSRC, None) or {}
        if send is None or not isinstance(streams, dict):
            logger.warning("%s cannot request a key frame from this aiortc receiver",
                           log_prefix)
            return
        for ssrc in [s for s in streams if s not in rtx]:
            logger.debug("%s PLI to ssrc %d", log_prefix, ssrc)
            spawn(send(ssrc), "pli")

    return request
