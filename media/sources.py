"""Media sources for the peer client: what a bot sends.

Three audio sources, chosen by a frozen *spec* (plain config) and turned into a runtime
*source* once per client with :func:`open_audio_source`; the source then makes one track per
peer connection with ``create_track()`` (an aiortc sender consumes its track, so tracks are never
shared between connections):

- :class:`ToneSpec` -> :class:`ToneTrack`: a generated sine, s16 mono 48 kHz ``AudioFrame``s.
  aiortc Opus-encodes it per connection (about 10 % of a core each, see DESIGN "Media").
- :class:`FileSpec` -> :class:`FileTrack`: any file PyAV can decode, resampled to s16 mono
  48 kHz in 20 ms frames, optionally looped. Also encoded per connection.
- :class:`OpusSpec` -> :class:`OpusPacketTrack`: the cheap bot source. The audio (a file or a
  tone) is Opus-encoded **once** per client into 20 ms ``av.Packet`` payloads; every track replays
  them as ``av.Packet``s with ``pts``/``time_base`` set. aiortc 1.16's
  ``RTCRtpSender._next_encoded_frame`` checks ``isinstance(data, Frame)``; anything else goes to
  ``encoder.pack(packet)``, which for Opus just returns ``[bytes(packet)]`` and converts ``pts``
  to the 48 kHz RTP clock -- no encoder runs per connection.

All tracks are paced in real time (20 ms per audio frame) by :class:`Pacer` and have an
``enabled`` flag with browser semantics: a disabled audio track keeps its clock running and sends
silence, a disabled video track sends black frames. A non-looping source that reaches its end
ends its track (``MediaStreamError``, as aiortc's ``MediaPlayer`` does); the sender then stops
sending but the connection stays up.

:class:`PatternVideoTrack` is a small synthetic video source (a moving bar) for ``send_video``.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, cast

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.codeccontext import AudioCodecContext

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
"""Sample rate of every audio frame produced here (Hz); Opus' native rate."""
FRAME_SAMPLES = 960
"""Samples per audio frame: 20 ms at 48 kHz, the WebRTC default Opus packet time."""
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)

# --------------------------------------------------------------------------- specs (config)


@dataclass(frozen=True)
class ToneSpec:
    """A generated sine tone, encoded by aiortc per connection."""

    frequency_hz: float = 440.0
    """Tone frequency in Hz (whole numbers loop seamlessly every second)."""
    amplitude: float = 0.25
    """Peak amplitude as a fraction of full scale, 0..1."""


@dataclass(frozen=True)
class FileSpec:
    """An audio file decoded with PyAV, encoded by aiortc per connection."""

    path: str
    """Any file PyAV (FFmpeg) can decode; its first audio stream is used."""
    loop: bool = True
    """Start over at the end instead of ending the track."""


@dataclass(frozen=True)
class OpusSpec:
    """Audio Opus-encoded once per client and replayed as packets (cheap bots)."""

    path: str | None = None
    """File to encode; ``None`` encodes :attr:`tone` instead."""
    loop: bool = True
    """Start over at the end instead of ending the track."""
    bitrate: int = 32_000
    """Opus target bitrate in bit/s."""
    tone: ToneSpec = ToneSpec()
    """Tone to encode when :attr:`path` is ``None``."""
    tone_duration_s: float = 2.0
    """Length of the encoded tone clip in seconds (it loops)."""
    clip: OpusClip | None = field(default=None, repr=False, compare=False)
    """Already encoded audio (:func:`encode_opus_spec`), shared by every client of a process
    that is given this spec: skips the per-client encode (about 30 ms of CPU, mostly holding
    the GIL -- it showed as event-loop lag while a load test ramps up). When set, ``path``,
    ``bitrate`` and the tone fields are not looked at; ``loop`` still is."""


@dataclass(frozen=True)
class SourceSpec:
    """A live audio source the caller made and feeds (the agent's voice,
    :class:`media.agent.outgoing.OutgoingAudio`): used as it is."""

    source: AudioSource
    """Makes the track of each connection."""


AudioSpec = ToneSpec | FileSpec | OpusSpec | SourceSpec

# --------------------------------------------------------------------------- pacing


class Pacer:
    """Real-time pacing for a frame sequence: frame ``n`` is released at ``start + n * period``.

    If the caller falls more than ``max_lag_s`` behind (a stalled event loop, a paused sender)
    the schedule is rebased instead of bursting all the late frames at once, which no browser
    would do either.
    """

    def __init__(self, period_s: float, *, max_lag_s: float = 0.2) -> None:
        self._period_s = period_s
        self._max_lag_s = max_lag_s
        self._start: float | None = None
        self._rebase_index = 0

    async def wait(self, index: int) -> None:
        """Sleep until frame ``index`` is due."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._start is None:
            self._start = now
            self._rebase_index = index
        due = self._start + (index - self._rebase_index) * self._period_s
        if now - due > self._max_lag_s:
            self._start, self._rebase_index = now, index
            due = now
        if due > now:
            await asyncio.sleep(due - now)


# --------------------------------------------------------------------------- audio helpers


def s16_frame(data: bytes, rate: int = SAMPLE_RATE, pts: int = 0) -> av.AudioFrame:
    """Mono s16 bytes at ``rate`` as an ``av.AudioFrame`` stamped ``pts`` (in 1/rate s)."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(data) // 2)
    frame.planes[0].update(data)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame


def _frame_from_s16(data: bytes, pts: int) -> av.AudioFrame:
    return s16_frame(data, SAMPLE_RATE, pts)


def tone_table(spec: ToneSpec) -> bytes:
    """One second of the tone as s16 mono 48 kHz bytes (a whole number of 20 ms frames)."""
    if not 0.0 <= spec.amplitude <= 1.0:
        raise ValueError(f"amplitude must be within 0..1, got {spec.amplitude}")
    if not 0.0 < spec.frequency_hz < SAMPLE_RATE / 2:
        raise ValueError(f"frequency must be within 0..{SAMPLE_RATE // 2} Hz")
    peak = spec.amplitude * 32767
    step = 2 * math.pi * spec.frequency_hz / SAMPLE_RATE
    return array("h", (int(peak * math.sin(step * i)) for i in range(SAMPLE_RATE))).tobytes()


_SILENCE = bytes(FRAME_SAMPLES * 2)


def decode_audio_file(path: str) -> Iterator[av.AudioFrame]:
    """Decode ``path``'s first audio stream to s16 mono 48 kHz frames of 20 ms (the last one
    may be shorter). ``pts`` is left as the resampler sets it; callers restamp."""
    with av.open(path) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(
            format="s16", layout="mono", rate=SAMPLE_RATE, frame_size=FRAME_SAMPLES
        )
        for frame in container.decode(stream):
            yield from resampler.resample(frame)
        yield from resampler.resample(None)


# --------------------------------------------------------------------------- audio tracks


class PacedAudioTrack(MediaStreamTrack):
    """Shared clock for the audio tracks: ``pts`` counts samples from 0, 20 ms per frame."""

    kind = "audio"

    def __init__(self, *, paced: bool = True) -> None:
        super().__init__()
        #: False sends silence (browser ``track.enabled = false`` semantics).
        self.enabled = True
        self._paced = paced
        self._pacer = Pacer(FRAME_S)
        self._index = 0

    async def _tick(self) -> int:
        """Wait for the next frame slot; return its ``pts``."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._paced:
            await self._pacer.wait(self._index)
        pts = self._index * FRAME_SAMPLES
        self._index += 1
        return pts


class ToneTrack(PacedAudioTrack):
    """A sine tone as 20 ms s16 mono 48 kHz frames."""

    def __init__(self, table: bytes, *, paced: bool = True) -> None:
        super().__init__(paced=paced)
        self._table = table

    async def recv(self) -> av.AudioFrame:
        pts = await self._tick()
        if not self.enabled:
            return _frame_from_s16(_SILENCE, pts)
        offset = (pts * 2) % len(self._table)
        return _frame_from_s16(self._table[offset : offset + FRAME_SAMPLES * 2], pts)


class FileTrack(PacedAudioTrack):
    """An audio file decoded on the fly (PyAV) into 20 ms s16 mono 48 kHz frames.

    Decoding runs on the event loop: a 20 ms chunk of FLAC/Opus/MP3 costs microseconds, far
    less than handing it to a thread. ``pts`` keeps counting across loops.
    """

    def __init__(self, path: str, *, loop: bool = True, paced: bool = True) -> None:
        super().__init__(paced=paced)
        self._path = path
        self._looping = loop
        self._frames: Iterator[av.AudioFrame] | None = None

    def _next_data(self) -> bytes | None:
        for _attempt in range(2):  # at most one restart per frame: an empty file must not spin
            if self._frames is None:
                self._frames = decode_audio_file(self._path)
            frame = next(self._frames, None)
            if frame is not None:
                return bytes(frame.planes[0])[: frame.samples * 2]
            self._frames = None
            if not self._looping:
                return None
        return None

    async def recv(self) -> av.AudioFrame:
        pts = await self._tick()
        if not self.enabled:
            return _frame_from_s16(_SILENCE, pts)
        data = self._next_data()
        if data is None:
            self.stop()
            raise MediaStreamError
        return _frame_from_s16(data, pts)

    def stop(self) -> None:
        if self._frames is not None:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()  # closes the generator and with it the container
            self._frames = None
        super().stop()


@dataclass(frozen=True)
class OpusClip:
    """Audio Opus-encoded once: one payload per 20 ms, plus a payload of silence."""

    packets: tuple[bytes, ...]
    silence: bytes
    bitrate: int

    @property
    def duration_s(self) -> float:
        return len(self.packets) * FRAME_S

    @property
    def payload_bytes(self) -> int:
        return sum(len(p) for p in self.packets)


def opus_encoder(bitrate: int) -> AudioCodecContext:
    """A libopus encoder for 48 kHz mono s16 in 20 ms frames (the bots' clips, the agent)."""
    encoder = cast(AudioCodecContext, av.CodecContext.create("libopus", "w"))
    encoder.bit_rate = bitrate
    encoder.format = "s16"
    encoder.layout = "mono"
    encoder.sample_rate = SAMPLE_RATE
    encoder.time_base = AUDIO_TIME_BASE
    encoder.options = {"application": "voip"}
    return encoder


def encode_opus(frames: Iterable[av.AudioFrame], *, bitrate: int = 32_000) -> OpusClip:
    """Opus-encode s16 mono 48 kHz frames into 20 ms packets (blocking; run it in a thread)."""
    encoder = opus_encoder(bitrate)
    packets: list[bytes] = []
    for frame in frames:
        packets += (bytes(p) for p in encoder.encode(frame))
    packets += (bytes(p) for p in encoder.encode(None))
    if not packets:
        raise ValueError("no audio to encode")
    return OpusClip(packets=tuple(packets), silence=silent_opus_packet(bitrate),
                    bitrate=bitrate)


def silent_opus_packet(bitrate: int) -> bytes:
    """An Opus packet of 20 ms of silence from a warmed-up encoder (the first packets carry
    start-up state)."""
    silent = opus_encoder(bitrate)
    quiet: list[bytes] = []
    for i in range(5):
        quiet += (bytes(p) for p in silent.encode(_frame_from_s16(_SILENCE, i * FRAME_SAMPLES)))
    return quiet[-1]


def encode_opus_spec(spec: OpusSpec) -> OpusClip:
    """Encode what an :class:`OpusSpec` names (blocking; run it in a thread)."""
    if spec.path is not None:
        return encode_opus(decode_audio_file(spec.path), bitrate=spec.bitrate)
    table = tone_table(spec.tone)
    count = max(1, round(spec.tone_duration_s / FRAME_S))
    size = FRAME_SAMPLES * 2

    def frames() -> Iterator[av.AudioFrame]:
        for i in range(count):
            offset = (i * size) % len(table)
            yield _frame_from_s16(table[offset : offset + size], i * FRAME_SAMPLES)

    return encode_opus(frames(), bitrate=spec.bitrate)


class OpusPacketTrack(PacedAudioTrack):
    """Replays an :class:`OpusClip` as ``av.Packet``s; aiortc only packetizes them."""

    def __init__(self, clip: OpusClip, *, loop: bool = True, paced: bool = True) -> None:
        super().__init__(paced=paced)
        self._clip = clip
        self._looping = loop
        self._position = 0

    async def recv(self) -> av.Packet:  # type: ignore[override]
        pts = await self._tick()
        if not self.enabled:
            payload = self._clip.silence
        else:
            if self._position >= len(self._clip.packets):
                if not self._looping:
                    self.stop()
                    raise MediaStreamError
                self._position = 0
            payload = self._clip.packets[self._position]
            self._position += 1
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = AUDIO_TIME_BASE
        return packet


# --------------------------------------------------------------------------- runtime sources


class AudioSource(Protocol):
    """Makes a fresh track per peer connection; prepared once per client."""

    def create_track(self) -> PacedAudioTrack:
        """A new, live track."""
        ...


class ToneSource:
    """Tone tracks sharing one precomputed second of samples."""

    def __init__(self, spec: ToneSpec) -> None:
        self.spec = spec
        self._table = tone_table(spec)

    def create_track(self) -> ToneTrack:
        return ToneTrack(self._table)


class FileSource:
    """File tracks, each decoding the file on its own."""

    def __init__(self, spec: FileSpec) -> None:
        self.spec = spec

    def create_track(self) -> FileTrack:
        return FileTrack(self.spec.path, loop=self.spec.loop)


class OpusSource:
    """Packet tracks replaying one shared :class:`OpusClip`."""

    def __init__(self, spec: OpusSpec, clip: OpusClip) -> None:
        self.spec = spec
        self.clip = clip

    def create_track(self) -> OpusPacketTrack:
        return OpusPacketTrack(self.clip, loop=self.spec.loop)


async def open_audio_source(spec: AudioSpec | None) -> AudioSource | None:
    """Prepare the source a spec names (Opus encoding runs in a worker thread)."""
    if spec is None:
        return None
    if isinstance(spec, SourceSpec):
        return spec.source
    if isinstance(spec, ToneSpec):
        return ToneSource(spec)
    if isinstance(spec, FileSpec):
        # Fail now, not in the middle of a call, if the file cannot be decoded.
        await asyncio.to_thread(_probe_audio_file, spec.path)
        return FileSource(spec)
    if isinstance(spec, OpusSpec):
        clip = spec.clip if spec.clip is not None else await asyncio.to_thread(
            encode_opus_spec, spec)
        logger.debug(
            "opus clip ready: %.1f s, %d bytes at %d bit/s",
            clip.duration_s, clip.payload_bytes, clip.bitrate,
        )
        return OpusSource(spec, clip)
    raise TypeError(f"unknown audio spec {spec!r}")


def _probe_audio_file(path: str) -> None:
    with av.open(path) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream")


# --------------------------------------------------------------------------- video


class PatternVideoTrack(MediaStreamTrack):
    """A synthetic video: a bright bar sweeping over grey, yuv420p, paced at ``fps``.

    Frames are built from cached plane bytes (the bar position cycles through ``fps``
    positions), so producing one costs an allocation and three copies.
    """

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15) -> None:
        super().__init__()
        if width % 2 or height % 2:
            raise ValueError("width and height must be even for yuv420p")
        #: False sends black frames (browser ``track.enabled = false`` semantics).
        self.enabled = True
        self._width, self._height, self._fps = width, height, fps
        self._pacer = Pacer(1 / fps)
        self._index = 0
        # Rows may be padded (line_size >= width): build plane bytes to FFmpeg's own layout.
        probe = av.VideoFrame(width, height, "yuv420p")
        self._line_sizes = tuple(plane.line_size for plane in probe.planes)
        self._black = self._planes(16, 16, 0, 0)
        self._frames = deque(self._pattern(i) for i in range(fps))

    def _planes(self, luma: int, bar_luma: int, left: int, bar: int) -> tuple[bytes, ...]:
        y_line, u_line, v_line = self._line_sizes
        row = bytes([luma]) * left + bytes([bar_luma]) * bar
        row += bytes([luma]) * (y_line - len(row))
        h2 = self._height // 2
        return (row * self._height, bytes([128]) * (u_line * h2), bytes([128]) * (v_line * h2))

    def _pattern(self, step: int) -> tuple[bytes, ...]:
        bar = max(2, self._width // 10)
        left = step * (self._width - bar) // max(1, self._fps - 1)
        return self._planes(90, 235, left, bar)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacer.wait(self._index)
        planes = self._frames[0] if self.enabled else self._black
        self._frames.rotate(-1)
        frame = av.VideoFrame(self._width, self._height, "yuv420p")
        for plane, data in zip(frame.planes, planes):
            plane.update(data)
        frame.pts = self._index * 90_000 // self._fps
        frame.time_base = VIDEO_TIME_BASE
        self._index += 1
        return frame
