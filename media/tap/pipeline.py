"""One participant's audio: aiortc frames -> 16 kHz mono s16 -> voiced segments -> recogniser.

Runs on the tap's event loop, inline in the track consumer (``PeerClient.on_audio_frame``),
so it must stay cheap and never block: per 20 ms frame it resamples (FFmpeg's swresample via
``av.AudioResampler``), and per 30 ms of output it compares the peak level with a gate and only
then asks the WebRTC VAD (``pocketsphinx.Vad``, C). A participant who never speaks costs that
and nothing else: no segment, no recogniser traffic, a few hundred bytes of ring buffer.

Segmentation (:class:`Segmenter`) is our own small state machine over the VAD's per-frame
decisions rather than ``pocketsphinx.Endpointer``, because the tap needs what the endpointer
lacks: a hard maximum segment length, a level gate in front of the VAD (muted participants,
noise floors), and timestamps on the media clock rather than frames-fed. A segment starts when
``speech_ratio`` of the frames in the last ``speech_start_s`` are voiced, ends after
``speech_end_s`` without voice, and is split at ``max_segment_s``. Its audio runs from
``pre_roll_s`` before its first voiced frame to the end (the hang-over after the last voiced
frame), digital silence in it replaced by quiet noise: the recogniser must hear background
before the first word and after the last (docs/transcription.md, "Segmentation"). Its
start/end times are those of its first and last voiced frames.

Buffers are bounded by construction: the ring holds ``pre_roll_s + speech_start_s`` of audio,
the chunk buffer ``chunk_s``; audio goes to the recogniser as it arrives, whose own back-pressure
drops segments when it is behind (:mod:`media.tap.procpool`).
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import av

from .config import TapConfig
from .overload import Pressure
from .transcriber import (
    BYTES_PER_SECOND,
    SAMPLE_RATE,
    Recognition,
    SpeechStream,
    Transcriber,
)

logger = logging.getLogger(__name__)

FRAME_S = 0.03
"""VAD frame length: 30 ms, one of the lengths the WebRTC VAD accepts."""
FRAME_BYTES = int(SAMPLE_RATE * FRAME_S) * 2
DIGITAL_SILENCE = 4
"""Frames whose peak is below this (about -78 dBFS) are digital silence: a muted track, a
zero-padded file, Opus decoding a silent sender. The recogniser never gets them: log-energy
features of exact zeros throw pocketsphinx's noise and cepstral-mean estimates far off
(measured: jfk.flac behind 1 s of zeros, WER 0.18 -> 0.5). Inside a segment (its pre-roll and
hang-over) they are sent as :data:`COMFORT_NOISE` instead."""
COMFORT_NOISE_DBFS = -70.0
"""RMS level of the comfort noise, dBFS: a quiet microphone's noise floor, far below the level
gate (its peaks are about -58 dBFS)."""


def _comfort_noise(frames: int = 8) -> tuple[bytes, ...]:
    rng = random.Random(14)  # fixed: the same audio gives the same transcript
    sigma = 32767 * math.pow(10.0, COMFORT_NOISE_DBFS / 20.0)
    return tuple(array("h", (round(rng.gauss(0.0, sigma)) for _ in range(FRAME_BYTES // 2)))
                 .tobytes() for _ in range(frames))


COMFORT_NOISE = _comfort_noise()
"""30 ms frames of white noise at :data:`COMFORT_NOISE_DBFS`, sent in turn in place of digital
silence inside a segment. pocketsphinx needs to hear background before the first word and after
the last: a segment that started right at the onset lost its first word ("can everyone hear
me" -> "and everyone hear me"; measured in docs/transcription.md, "Segmentation")."""
LATE_AUDIO = 0.2
"""Audio arriving this fraction of ``max_backlog_s`` late (3 s by default, where a recogniser
turns partials off) makes a speaker's transcription ``delayed``."""
GAP_S = 0.25
"""A gap in a stream's audio (DTX, loss, a paused sender) this long or longer moves its media
clock on: shown by the sender's timestamps jumping ahead or, for audio without them, by a
late arrival."""


def dbfs_to_peak(dbfs: float) -> int:
    """The s16 sample magnitude for a level in dBFS."""
    return int(32767 * math.pow(10.0, dbfs / 20.0))


# --------------------------------------------------------------------------- resampling


class Resampler:
    """Any ``av.AudioFrame`` -> 16 kHz mono s16 bytes (stateful: keep one per stream)."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def resample(self, frame: av.AudioFrame) -> bytes:
        out = b""
        for chunk in self._resampler.resample(frame):
            out += bytes(chunk.planes[0])[: chunk.samples * 2]
        return out


# --------------------------------------------------------------------------- segmentation


class Vad(Protocol):
    """Per-frame voice decisions (``pocketsphinx.Vad`` has this shape)."""

    def is_speech(self, frame: bytes) -> bool:
        """Whether a 30 ms frame of 16 kHz mono s16 holds voice."""
        ...


@dataclass(frozen=True)
class SegmentStart:
    """A voiced segment begins; ``time_s`` is its first voiced frame's start."""

    time_s: float


@dataclass(frozen=True)
class SegmentAudio:
    """Audio of the open segment (pre-roll included in the first; digital silence sent as
    :data:`COMFORT_NOISE`)."""

    pcm: bytes
    time_s: float
    """Media time at the end of this audio."""


@dataclass(frozen=True)
class SegmentEnd:
    """The segment ended; ``time_s`` is the end of its last voiced frame."""

    time_s: float


SegmentEvent = SegmentStart | SegmentAudio | SegmentEnd


class Segmenter:
    """Voice-activity segmentation of 16 kHz mono s16 audio in 30 ms frames.

    Feed with :meth:`push` (any length; a remainder waits for the next call) and read the
    events it returns. ``vad`` defaults to ``pocketsphinx.Vad(config.vad_mode)``; tests may pass
    any object with ``is_speech(frame: bytes) -> bool``.

    A segment's audio runs from ``pre_roll_s`` before its first voiced frame to ``speech_end_s``
    after its last one (the hang-over), digital silence in it sent as :data:`COMFORT_NOISE`:
    the recogniser hears the background before the first word and after the last, as it does
    when it decodes a recording whole.
    """

    def __init__(self, config: TapConfig, vad: Vad | None = None) -> None:
        if vad is None:
            import pocketsphinx

            vad = pocketsphinx.Vad(config.vad_mode, SAMPLE_RATE, FRAME_S)
        self._vad: Vad = vad
        self._gate = dbfs_to_peak(config.silence_dbfs)
        self._window = max(1, round(config.speech_start_s / FRAME_S))
        self._needed = max(1, math.ceil(config.speech_ratio * self._window))
        self._end_frames = max(1, round(config.speech_end_s / FRAME_S))
        self._max_frames = max(self._window + 1, round(config.max_segment_s / FRAME_S))
        self._pre_roll = round(config.pre_roll_s / FRAME_S)
        # The last frames heard, in a segment or not: the start window and the pre-roll before
        # its first voiced frame (which may reach back into the previous segment's hang-over).
        self._ring: deque[tuple[bytes, float, bool, bool]] = deque(
            maxlen=self._pre_roll + self._window)
        self._recent: deque[bool] = deque(maxlen=self._window)
        self._pending = b""
        self._in_segment = False
        self._frames = 0
        self._silent_run = 0
        self._last_voice_end = 0.0
        self._noise = 0
        #: Frames judged so far, and how many of them reached the VAD (past the level gate).
        self.frames_seen = 0
        self.frames_vad = 0

    @property
    def in_segment(self) -> bool:
        return self._in_segment

    def is_voiced(self, frame: bytes) -> bool:
        """The level gate, then the VAD."""
        return self._judge(frame)[0]

    def _judge(self, frame: bytes) -> tuple[bool, int]:
        samples = array("h", frame)
        peak = max(max(samples), -min(samples))
        if peak < self._gate:
            return False, peak
        self.frames_vad += 1
        return bool(self._vad.is_speech(frame)), peak

    def push(self, pcm: bytes, time_s: float) -> list[SegmentEvent]:
        """Audio whose first sample is at media time ``time_s``; returns what happened."""
        data = self._pending + pcm
        start_s = time_s - len(self._pending) / BYTES_PER_SECOND
        events: list[SegmentEvent] = []
        offset = 0
        while offset + FRAME_BYTES <= len(data):
            frame = data[offset : offset + FRAME_BYTES]
            frame_s = start_s + offset / BYTES_PER_SECOND
            self._frame(frame, frame_s, events)
            offset += FRAME_BYTES
        self._pending = data[offset:]
        return events

    def flush(self) -> list[SegmentEvent]:
        """End any open segment (the speaker left)."""
        self._pending = b""
        self._ring.clear()
        self._recent.clear()
        if not self._in_segment:
            return []
        self._in_segment = False
        return [SegmentEnd(self._last_voice_end)]

    def _frame(self, frame: bytes, frame_s: float, events: list[SegmentEvent]) -> None:
        voiced, peak = self._judge(frame)
        self.frames_seen += 1
        end_s = frame_s + FRAME_S
        silent = peak < DIGITAL_SILENCE
        if silent:
            # Exact zeros would wreck the recogniser's estimates (see DIGITAL_SILENCE); the
            # same time of quiet background keeps the words' timing and the pauses around them.
            frame = COMFORT_NOISE[self._noise]
            self._noise = (self._noise + 1) % len(COMFORT_NOISE)
        self._ring.append((frame, frame_s, voiced, silent))
        if not self._in_segment:
            self._recent.append(voiced)
            if voiced and sum(self._recent) >= self._needed:
                self._open(events, end_s)
            return
        self._frames += 1
        events.append(SegmentAudio(frame, end_s))
        if voiced:
            self._silent_run = 0
            self._last_voice_end = end_s
        else:
            self._silent_run += 1
        if self._silent_run >= self._end_frames:
            self._close(events)
        elif self._frames >= self._max_frames:
            # Too long: cut here and carry on in a new segment at once (no start window).
            events.append(SegmentEnd(end_s if voiced else self._last_voice_end))
            events.append(SegmentStart(end_s))
            self._frames, self._silent_run, self._last_voice_end = 0, 0, end_s

    def _open(self, events: list[SegmentEvent], end_s: float) -> None:
        frames = list(self._ring)
        window_start = len(frames) - min(self._window, len(self._recent))
        first = next(i for i in range(window_start, len(frames)) if frames[i][2])
        # The pre-roll counts back from the first voiced frame, so its length does not depend
        # on how fast the window filled: it was the whole ring (0.30-0.42 s before the first
        # voiced frame), and background beyond ~0.3 s costs pocketsphinx words again.
        begin = max(0, first - self._pre_roll)
        while begin < first and frames[begin][3]:
            # Never open with comfort noise: its -70 dBFS becomes the recogniser's first noise
            # and cepstral-mean estimate, which a speaker's decoder keeps for the segments after
            # (jfk.flac over WebRTC behind 1 s of zeros: WER 0.27 -> 0.77). Inside a segment it
            # stays, in place of the zeros.
            begin += 1
        events.append(SegmentStart(frames[first][1]))
        events.append(SegmentAudio(b"".join(f[0] for f in frames[begin:]), end_s))
        self._in_segment = True
        self._frames = len(frames) - first
        self._silent_run = 0
        self._last_voice_end = end_s
        self._recent.clear()

    def _close(self, events: list[SegmentEvent]) -> None:
        events.append(SegmentEnd(self._last_voice_end))
        self._in_segment = False


# --------------------------------------------------------------------------- per speaker


@dataclass
class SegmentTimes:
    """Wall-clock times (unix seconds) of one segment, for ``startMs``/``endMs``."""

    start_s: float
    end_s: float | None = None
    last_audio_s: float = 0.0
    partial_sent: bool = False


SegmentCallback = Callable[[str, SegmentTimes, Recognition], None]
#: ``(event, segment_id, time_s)``: ``"start"`` (the segmenter's onset; ``time_s`` its first
#: voiced frame) or ``"end"`` (end of speech, after the hang-over; ``time_s`` its last voiced
#: frame), unix seconds by the media clock. The agent's turn-taking listens.
EdgeCallback = Callable[[str, str, float], None]


class SpeakerPipeline:
    """One participant: resample, segment, stream segments to the recogniser, and report
    results with their segment's wall-clock times to ``on_result(segment_id, times, result)``.

    The media clock is the stream's own time -- the samples received, plus the gaps the
    sender's timestamps show (DTX, a paused sender) -- anchored to arrival (``clock()``, unix
    seconds) by its earliest-arriving audio. A late burst of audio (this process or the
    network stalled) is not a gap and moves no time: the segments of a busy tap keep the times
    their words were spoken. Audio without timestamps (:meth:`push_pcm` alone) takes a late
    arrival for a gap.
    """

    def __init__(
        self,
        config: TapConfig,
        transcriber: Transcriber,
        on_result: SegmentCallback,
        *,
        name: str = "",
        vad: Vad | None = None,
        clock: Callable[[], float] = time.time,
        on_edge: EdgeCallback | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._on_result = on_result
        self._on_edge = on_edge
        self._clock = clock
        self._resampler = Resampler()
        self._segmenter = Segmenter(config, vad)
        self._chunk_bytes = max(FRAME_BYTES, int(config.chunk_s * SAMPLE_RATE) * 2)
        self._buffer = bytearray()
        self._anchor_s: float | None = None  # unix time of the stream's time 0
        self._samples = 0
        self._skipped_s = 0.0  # gaps in the stream so far (stream time without audio)
        self._pts: int | None = None  # the last frame's timestamp, and its stream time
        self._pts_s = 0.0
        self._arrival_lag_s = 0.0
        self._segment: str | None = None
        self._times: dict[str, SegmentTimes] = {}
        self._closed = False
        self._last_push = 0.0
        self._stream: SpeechStream = transcriber.open_stream(self.on_recognition, name=name)
        #: Segments started / voiced seconds streamed, for logs and tests.
        self.segments = 0
        self.voiced_s = 0.0

    @property
    def segmenter(self) -> Segmenter:
        return self._segmenter

    @property
    def open_results(self) -> int:
        """Segments still waiting for their final."""
        return len(self._times)

    @property
    def behind_s(self) -> float:
        """Seconds this speaker's transcription is behind their speech: how late their audio
        reaches the tap (:attr:`arrival_lag_s`) plus the audio the recogniser has not consumed
        yet."""
        backlog = self._stream.behind_s if isinstance(self._stream, Pressure) else 0.0
        return self.arrival_lag_s + backlog

    @property
    def arrival_lag_s(self) -> float:
        """How much later than the media clock the latest audio arrived, seconds: a tap whose
        own process is starved hears speech late, before any recogniser is behind."""
        return self._arrival_lag_s

    @property
    def degraded(self) -> bool:
        """The speaker's transcription is behind (:mod:`media.tap.overload`): the recogniser
        (no partials until it catches up), or the audio itself arrives more than
        ``max_backlog_s`` / 5 late."""
        if isinstance(self._stream, Pressure) and self._stream.degraded:
            return True
        return self._arrival_lag_s >= self.config.max_backlog_s * LATE_AUDIO

    def push_frame(self, frame: av.AudioFrame) -> None:
        """One decoded frame from the participant's track (any rate/layout/format)."""
        if self._closed:
            return
        stream_s = self._stream_time(frame)
        pcm = self._resampler.resample(frame)
        if pcm:
            self.push_pcm(pcm, stream_s=stream_s)

    def _stream_time(self, frame: av.AudioFrame) -> float | None:
        """The frame's start in stream time by its sender's timestamps (RTP's, from aiortc:
        32-bit, wrapping), or None: no timestamps, or they jumped back (a new sender)."""
        if frame.pts is None or frame.time_base is None:
            return None
        if self._pts is None:
            self._pts, self._pts_s = frame.pts, self._skipped_s + self._samples / SAMPLE_RATE
            return self._pts_s
        step = frame.pts - self._pts
        if abs(step) >= 1 << 31:  # an RTP timestamp wrapped
            step -= (1 << 32) if step > 0 else -(1 << 32)
        self._pts = frame.pts
        self._pts_s += float(step * frame.time_base)
        return self._pts_s

    def push_pcm(self, pcm: bytes, *, stream_s: float | None = None) -> None:
        """16 kHz mono s16 audio that just arrived; ``stream_s``: where it starts in stream
        time by the sender's timestamps, if known."""
        if self._closed:
            return
        now = self._clock()
        self._last_push = time.monotonic()
        length_s = len(pcm) / BYTES_PER_SECOND
        received_s = self._skipped_s + self._samples / SAMPLE_RATE  # stream time of this chunk
        if self._anchor_s is None:
            self._anchor_s = now - length_s - received_s  # first audio: its end is now
        elif stream_s is not None:
            if stream_s - received_s > GAP_S:  # the sender's clock ran on without audio
                self._skipped_s += stream_s - received_s
            elif stream_s < received_s - 1.0:  # timestamps jumped back: take them afresh
                self._pts_s = received_s
        elif now - (self._anchor_s + received_s) > GAP_S:  # no timestamps: late is a gap
            self._skipped_s += now - length_s - (self._anchor_s + received_s)
        start_s = self._anchor_s + self._skipped_s + self._samples / SAMPLE_RATE
        if now < start_s + length_s:
            # Audio is never heard before it was sent: an earlier arrival than the clock
            # allows means the anchor came from a late one (a busy first moment), or the
            # sender's clock runs fast. The earliest arrival wins.
            self._anchor_s -= start_s + length_s - now
            start_s = now - length_s
        self._arrival_lag_s = now - (start_s + length_s)
        self._samples += len(pcm) // 2
        self._handle(self._segmenter.push(pcm, start_s))

    @property
    def stream_start_s(self) -> float | None:
        """Unix time of the stream's time 0 (its first sample), as the clock has it now."""
        return self._anchor_s

    @property
    def clock_s(self) -> float | None:
        """Unix time at which the audio received so far ends, by the media clock."""
        if self._anchor_s is None:
            return None
        return self._anchor_s + self._skipped_s + self._samples / SAMPLE_RATE

    def flush_if_idle(self, idle_s: float) -> None:
        """End an open segment whose audio stopped coming ``idle_s`` ago (the connection died
        without a ``peer-left``, or the sender paused mid-word)."""
        if self._segmenter.in_segment and time.monotonic() - self._last_push > idle_s:
            logger.info("%s no audio for %.1f s: ending the open segment", self.name, idle_s)
            self._handle(self._segmenter.flush())

    def close(self) -> None:
        """The participant left: end the open segment (its final still comes) and the stream."""
        if self._closed:
            return
        self._handle(self._segmenter.flush())
        self._closed = True
        self._stream.close()

    def _handle(self, events: list[SegmentEvent]) -> None:
        for event in events:
            if isinstance(event, SegmentAudio):
                if self._segment is not None:
                    self._buffer += event.pcm
                    self._times[self._segment].last_audio_s = event.time_s
                    self.voiced_s += len(event.pcm) / BYTES_PER_SECOND
                    if len(self._buffer) >= self._chunk_bytes:
                        self._flush()
            elif isinstance(event, SegmentStart):
                self._end_segment(None)
                segment_id = "seg_" + secrets.token_hex(6)
                self._segment = segment_id
                self._times[segment_id] = SegmentTimes(start_s=event.time_s,
                                                       last_audio_s=event.time_s)
                self.segments += 1
                logger.debug("%s segment %s starts", self.name, segment_id)
                self._stream.start_segment(segment_id)
                if self._on_edge is not None:
                    self._on_edge("start", segment_id, event.time_s)
            else:
                self._end_segment(event.time_s)

    def _flush(self) -> None:
        if self._buffer:
            self._stream.write(bytes(self._buffer))
            self._buffer.clear()

    def _end_segment(self, end_s: float | None) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        self._flush()
        times = self._times[segment]
        times.end_s = end_s if end_s is not None else times.last_audio_s
        logger.debug("%s segment %s ends (%.2f s)", self.name, segment,
                     times.end_s - times.start_s)
        self._stream.end_segment()
        if self._on_edge is not None:
            self._on_edge("end", segment, times.end_s)

    def on_recognition(self, result: Recognition) -> None:
        """The stream's callback: attach times and pass on."""
        times = self._times.get(result.segment_id)
        if times is None:
            return
        if result.final:
            del self._times[result.segment_id]
            if result.segment_id == self._segment:
                # Finished early (dropped by the recogniser): the rest of it goes nowhere.
                self._segment = None
                self._buffer.clear()
                if times.end_s is None:
                    times.end_s = times.last_audio_s
        self._on_result(result.segment_id, times, result)
