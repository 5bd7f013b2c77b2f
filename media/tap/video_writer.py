"""One participant video track, written as it arrives: the sender's VP8 frames, untouched,
muxed by PyAV into a WebM file stamped on the meeting's clock.

No decoding, no encoding: each frame is what aiortc's video jitter buffer reassembled from the
RTP packets (:func:`media.receive.tee_encoded`, the same seam as audio). The file starts on a
key frame: frames before the first one cannot be decoded, so they are dropped, and the sender
is asked for a key frame (RTCP PLI, :attr:`~media.receive.EncodedFrame.request_keyframe`) when
the track's first frame arrives and again every :data:`KEYFRAME_RETRY_S` until one comes. A
recorder that does not decode has to: aiortc sends a PLI only on lost packets or decoder
errors, and a sender's periodic key frames can be minutes apart.

**The clock** is the audio writer's: the track's first frame is placed at its arrival (ms since
the meeting started) and every later frame at that plus its RTP timestamp distance (90 kHz)
from the first, modulo 2^32; a frame going back in time (or repeating a timestamp) is dropped.
Decoded with PyAV, frame ``pts`` (time base 1/1000: WebM's) are meeting time.

**WebM** (Matroska) rather than Ogg: it is what browsers play VP8 in. A cluster is written at
least every second (``cluster_time_limit``), so a recorder killed mid-meeting leaves a file
that decodes up to its last written cluster (FFmpeg reads Matroska with unfinished sizes); the
seek index (cues) is written on :meth:`VP8TrackWriter.close`; each cluster goes straight to
the file (``flush_packets``). Memory per track stays bounded:
the muxer holds at most one cluster.

Chrome may change the resolution mid-call (bandwidth or CPU adaptation) with a new key frame;
the file keeps the first key frame's size in its header and the frames their own (decoders
follow the bitstream).
"""

from __future__ import annotations

import fractions
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import av

from media.receive import EncodedFrame

from .track_writer import TrackSummary

logger = logging.getLogger(__name__)

RATE = 90_000
TIME_BASE = fractions.Fraction(1, RATE)
MIME_TYPE = "video/webm; codecs=vp8"
#: Seconds between key frame requests while waiting for the first key frame.
KEYFRAME_RETRY_S = 1.0
_WRAP = 1 << 32
_DEFAULT_FRAME = RATE // 30  # the duration assumed for the last frame (one at 30 fps)


@dataclass(frozen=True)
class KeyFrame:
    """A VP8 key frame's picture size (RFC 6386 9.1: the uncompressed data chunk)."""

    width: int
    height: int


def vp8_keyframe(data: bytes) -> KeyFrame | None:
    """The picture size if ``data`` is a VP8 key frame, else None (an inter frame, or not
    VP8). The frame tag's bit 0 is 0 on key frames, which then carry the start code
    ``9d 01 2a`` and 14-bit width and height."""
    if len(data) < 10 or data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return KeyFrame(width, height) if width and height else None


class VP8TrackWriter:
    """Writes one track's VP8 frames to ``path`` (WebM). ``started_at_ms``: the meeting's
    start (unix ms), the zero of the file's timestamps; ``title``: the participant's display
    name, kept in the file's metadata (the composite shows it). :meth:`close` is
    idempotent."""

    def __init__(self, path: Path, *, started_at_ms: int, name: str = "",
                 title: str = "") -> None:
        self.path = path
        self.started_at_ms = started_at_ms
        self.title = title
        self._log = name or str(path)
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._origin: int | None = None  # pts (90 kHz since the meeting started) of frame one
        self._unwrapped = 0  # RTP timestamp of the last frame seen, relative to the first
        self._last_rtp = 0
        self._seen = 0
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        self._last_step = _DEFAULT_FRAME
        self._asked_at: float | None = None
        #: Frames written, frames dropped (before the first key frame, or out of order), key
        #: frames written, key frame requests sent, and the first key frame's size.
        self.frames = 0
        self.dropped = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self.size: KeyFrame | None = None
        self._closed = False

    def push(self, frame: EncodedFrame) -> None:
        """Mux one frame (on the caller's thread; a cluster write at most)."""
        if self._closed:
            return
        if self._origin is None:
            since_start_ms = max(0.0, frame.arrival * 1000 - self.started_at_ms)
            self._origin = round(since_start_ms * RATE / 1000)
            self._last_rtp = frame.timestamp
        else:
            step = (frame.timestamp - self._last_rtp) % _WRAP
            if step == 0 or step >= _WRAP // 2:  # back in time or repeated
                self.dropped += 1
                return
            self._unwrapped += step
            self._last_rtp = frame.timestamp
        self._seen += 1
        pts = self._origin + self._unwrapped
        key = vp8_keyframe(frame.data)
        if self._container is None:
            if key is None:  # undecodable without its key frame: drop, and ask for one
                self.dropped += 1
                self._ask(frame)
                return
            self._open(key, pts)
        assert self._stream is not None and self._container is not None
        packet = av.Packet(frame.data)
        packet.stream = self._stream
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        packet.is_keyframe = key is not None
        self._container.mux(packet)
        if self._last_pts is not None:
            self._last_step = pts - self._last_pts
        self._last_pts = pts
        self.frames += 1
        self.keyframes += key is not None

    def _ask(self, frame: EncodedFrame) -> None:
        now = time.monotonic()
        if frame.request_keyframe is None or (
                self._asked_at is not None and now - self._asked_at < KEYFRAME_RETRY_S):
            return
        self._asked_at = now
        self.keyframe_requests += 1
        logger.info("%s waiting for a key frame: asking the sender (PLI)", self._log)
        frame.request_keyframe()

    def _open(self, key: KeyFrame, pts: int) -> None:
        # Matroska's own default cluster limit is 5 s: a killed recorder would lose that much;
        # and without flush_packets a cluster waits in FFmpeg's write buffer (measured: the
        # bots' 4 KB of 60 frames never reached the file before close).
        container = av.open(str(self.path), "w", format="webm",
                            options={"cluster_time_limit": "1000", "flush_packets": "1"})
        if self.title:
            container.metadata["title"] = self.title[:200]
        stream = container.add_stream("libvpx", rate=30)
        stream.width, stream.height = key.width, key.height
        stream.time_base = TIME_BASE
        self._container, self._stream = container, stream
        self._first_pts = pts
        self.size = key
        logger.info("%s video %dx%d from %.3f s on the meeting clock (%d frame(s) dropped "
                    "before the key frame)", self._log, key.width, key.height, pts / RATE,
                    self.dropped)

    @property
    def packets(self) -> int:
        """Frames written (the name the audio writer uses for its packets)."""
        return self.frames

    def summary(self) -> TrackSummary:
        """Where the file starts on the meeting clock, how long it is, how many frames."""
        if self._first_pts is None or self._last_pts is None:
            return TrackSummary(start_ms=0, duration_ms=0, packets=0)
        end = self._last_pts + max(1, min(self._last_step, RATE))
        return TrackSummary(start_ms=round(self._first_pts * 1000 / RATE),
                            duration_ms=round((end - self._first_pts) * 1000 / RATE),
                            packets=self.frames)

    def close(self) -> TrackSummary:
        """Finish the file (its last cluster and the cues). Idempotent."""
        if not self._closed:
            self._closed = True
            container, self._container = self._container, None
            if container is not None:
                container.close()
        return self.summary()
