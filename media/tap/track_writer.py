"""One participant track's audio, written as it arrives: the sender's Opus packets, untouched,
muxed by PyAV into an Ogg/Opus file stamped on the meeting's clock.

No decoding, no encoding: each packet is the RTP payload aiortc's jitter buffer handed to its
decoder (:func:`media.receive.tee_encoded`). Ogg rather than WebM because an Ogg file is a
sequence of self-contained pages: a recorder killed mid-meeting leaves a file that decodes up
to its last complete page (WebM's cues and sizes are written at the end).

**The clock.** A packet's time is its RTP timestamp (48 kHz for Opus) relative to the track's
first packet, plus where that first packet fell on the meeting's clock (its arrival, in ms
since the meeting started). Gaps in the RTP timestamps (DTX, a paused sender) stay gaps in the
file's timestamps (granule positions); a late burst (the network or the tap stalled) keeps
the times the sender gave it. A packet that goes back in time (a reordered or repeated
timestamp) is dropped: the muxer needs increasing times.

The muxer writes each Ogg page to the file as it fills (a page holds about a second of voice;
``flush_packets``: straight to the file, not FFmpeg's write buffer),
so memory per track stays bounded whatever the meeting's length. libopus' default header has a
pre-skip of 312 samples (6.5 ms): that much of the start of each file is not played.
"""

from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass
from pathlib import Path

import av

from media.receive import EncodedFrame

logger = logging.getLogger(__name__)

RATE = 48_000
TIME_BASE = fractions.Fraction(1, RATE)
MIME_TYPE = "audio/ogg; codecs=opus"
_FRAME = 960  # 20 ms: the duration assumed for the last packet
_WRAP = 1 << 32


@dataclass(frozen=True)
class TrackSummary:
    """A closed track file: where it starts on the meeting clock, how long it is (first packet
    to the end of the last), how many packets it holds."""

    start_ms: int
    duration_ms: int
    packets: int


class OpusTrackWriter:
    """Writes one track's Opus packets to ``path`` (Ogg). ``started_at_ms``: the meeting's
    start (unix ms), the zero of the file's timestamps. :meth:`close` is idempotent."""

    def __init__(self, path: Path, *, started_at_ms: int, name: str = "") -> None:
        self.path = path
        self.started_at_ms = started_at_ms
        self._log = name or str(path)
        self._container: av.container.OutputContainer | None = None
        self._stream: av.audio.stream.AudioStream | None = None
        self._origin = 0  # pts of the first packet (samples since the meeting started)
        self._first_rtp = 0
        self._unwrapped = 0  # RTP timestamp of the last packet, unwrapped, relative to the first
        self._last_rtp = 0
        self._last_pts: int | None = None
        self.packets = 0
        self.dropped = 0
        self._closed = False

    def push(self, frame: EncodedFrame) -> None:
        """Mux one packet (on the caller's thread; a page write at most)."""
        if self._closed:
            return
        if self._container is None:
            self._open(frame)
        assert self._stream is not None and self._container is not None
        step = (frame.timestamp - self._last_rtp) % _WRAP
        if self.packets and (step == 0 or step >= _WRAP // 2):  # back in time or repeated
            self.dropped += 1
            return
        if self.packets:
            self._unwrapped += step
        self._last_rtp = frame.timestamp
        pts = self._origin + self._unwrapped
        packet = av.Packet(frame.data)
        packet.stream = self._stream
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        packet.duration = _FRAME
        self._container.mux(packet)
        self._last_pts = pts
        self.packets += 1

    def _open(self, frame: EncodedFrame) -> None:
        since_start_ms = max(0.0, frame.arrival * 1000 - self.started_at_ms)
        self._origin = round(since_start_ms * RATE / 1000)
        self._first_rtp = self._last_rtp = frame.timestamp
        # flush_packets: each page reaches the file as it is muxed; without it FFmpeg's write
        # buffer held well over 10 s of voice, all lost if the recorder was killed.
        container = av.open(str(self.path), "w", format="ogg", options={"flush_packets": "1"})
        stream = container.add_stream("opus", rate=RATE)
        stream.layout = "stereo"  # what WebRTC Opus is declared as (opus/48000/2)
        stream.time_base = TIME_BASE
        self._container, self._stream = container, stream
        logger.info("%s recording from %.3f s on the meeting clock", self._log,
                    since_start_ms / 1000)

    def summary(self) -> TrackSummary:
        start = self._origin if self.packets else 0
        end = (self._last_pts + _FRAME) if self._last_pts is not None else start
        return TrackSummary(start_ms=round(start * 1000 / RATE),
                            duration_ms=round((end - start) * 1000 / RATE),
                            packets=self.packets)

    def close(self) -> TrackSummary:
        """Finish the file (its last page and end-of-stream flag). Idempotent."""
        if not self._closed:
            self._closed = True
            container, self._container = self._container, None
            if container is not None:
                container.close()
        return self.summary()
