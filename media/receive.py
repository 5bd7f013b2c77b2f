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
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_STARTED = "_RTCRtpReceiver__started"


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
