"""The agent's voice on the wire: one Opus encoder, one packet per 20 ms, sent on every
connection.

:class:`OutgoingAudio` is an :class:`~media.sources.AudioSource` (``create_track()`` per peer
connection) like the load bots' :class:`~media.sources.OpusSource`: the audio is Opus-encoded
**once** and every connection's track only packetises the same ``av.Packet`` payloads (aiortc
1.16's sender packs an ``av.Packet`` without encoding it, see :mod:`media.sources`). Unlike a
bot's clip the audio is live: :meth:`OutgoingAudio.play` queues 48 kHz mono s16 PCM (what
:class:`Resampler48` makes of a voice's output) and a single producer task, paced at 20 ms,
encodes the next frame and hands the packet to every track's small queue.

Between lines the producer sends a precomputed Opus packet of silence (no encoder runs): the
RTP clock and the stream stay continuous, which aiortc's receiver and browsers' jitter buffers
expect (a sender that stops sending has its receiver's jitter buffer stretch on resume).

Barge-in: :meth:`OutgoingAudio.clear` drops everything queued at once; the next tick sends
silence. At most :data:`TRACK_QUEUE` packets (60 ms) wait in a track, so the audio stops at
the receiver within a tick or two plus its own jitter buffer. What was played of each tagged
piece is counted (:meth:`OutgoingAudio.played`), so an interrupted line's spoken part is known.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import av
from aiortc.mediastreams import MediaStreamError

from media.sources import (
    FRAME_S,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    PacedAudioTrack,
    Pacer,
    opus_encoder,
    s16_frame,
    silent_opus_packet,
)

logger = logging.getLogger(__name__)

FRAME_BYTES = FRAME_SAMPLES * 2
TRACK_QUEUE = 3
"""Packets a connection's track may hold (60 ms): a slow sender drops the oldest rather than
falling behind, and a barge-in never waits behind more than this."""
MAX_QUEUED_S = 300.0
"""Most audio :meth:`OutgoingAudio.play` holds (seconds); more is refused (a runaway voice)."""
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_SILENT_FRAME = bytes(FRAME_BYTES)


class Resampler48:
    """A voice's mono s16 PCM at ``rate`` -> 48 kHz mono s16 (one per stream of speech:
    FFmpeg's resampler keeps a few samples between calls; :meth:`flush` returns them)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = None if rate == SAMPLE_RATE else av.AudioResampler(
            format="s16", layout="mono", rate=SAMPLE_RATE)
        self._odd = b""
        self._pts = 0

    def resample(self, pcm: bytes) -> bytes:
        data = self._odd + pcm
        if len(data) % 2:
            data, self._odd = data[:-1], data[-1:]
        else:
            self._odd = b""
        if not data or self._resampler is None:
            return data
        frame = s16_frame(data, self.rate, self._pts)
        self._pts += len(data) // 2
        return b"".join(bytes(out.planes[0])[: out.samples * 2]
                        for out in self._resampler.resample(frame))

    def flush(self) -> bytes:
        if self._resampler is None:
            return b""
        return b"".join(bytes(out.planes[0])[: out.samples * 2]
                        for out in self._resampler.resample(None))


@dataclass
class _Piece:
    data: bytes
    tag: Hashable
    offset: int = 0


class OutgoingTrack(PacedAudioTrack):
    """One connection's view of :class:`OutgoingAudio`: the shared packets, restamped."""

    def __init__(self, owner: OutgoingAudio) -> None:
        super().__init__(paced=False)  # the producer paces
        self._owner = owner
        self._queue: deque[bytes] = deque(maxlen=TRACK_QUEUE)
        self._ready = asyncio.Event()

    def push(self, payload: bytes) -> None:
        self._queue.append(payload)
        self._ready.set()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        while not self._queue:
            if self.readyState != "live" or self._owner.closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._tick()
        payload = self._queue.popleft() if self.enabled else self._owner.silence
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = _TIME_BASE
        return packet

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class OutgoingAudio:
    """The agent's one outgoing audio stream (see the module docstring). :meth:`start` the
    producer, :meth:`play` PCM, :meth:`clear` on barge-in, :meth:`aclose` (idempotent)."""

    def __init__(self, *, bitrate: int = 32_000, name: str = "") -> None:
        self.bitrate = bitrate
        self.name = name
        self._encoder = opus_encoder(bitrate)
        self.silence = silent_opus_packet(bitrate)
        self._tracks: weakref.WeakSet[OutgoingTrack] = weakref.WeakSet()
        self._pieces: deque[_Piece] = deque()
        self._queued_bytes = 0
        self._played: dict[Hashable, int] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._pts = 0
        self.closed = False
        #: Wall-clock time (unix s) the current (or last) run of speech started going out.
        self.speech_started_at: float | None = None
        #: Frames sent: of speech, and in all (speech + silence).
        self.speech_frames = 0
        self.frames = 0
        #: Called with every packet as it goes out and its timestamp (48 kHz, continuous from
        #: the first): the room's recorder keeps the agent's voice (it never receives it).
        self.monitor: Callable[[bytes, int], None] | None = None

    # ------------------------------------------------------------------ source

    def create_track(self) -> OutgoingTrack:
        track = OutgoingTrack(self)
        self._tracks.add(track)
        return track

    def start(self) -> None:
        """Start the producer (idempotent; needs a running loop)."""
        if self._task is None and not self.closed:
            self._task = asyncio.get_running_loop().create_task(
                self._produce(), name=f"agent audio {self.name}")

    async def aclose(self) -> None:
        self.closed = True
        self.clear()
        for track in list(self._tracks):
            track.stop()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------------ speech

    @property
    def speaking(self) -> bool:
        """Audio is queued or going out."""
        return not self._idle.is_set()

    @property
    def queued_s(self) -> float:
        return self._queued_bytes / (2 * SAMPLE_RATE)

    def play(self, pcm48: bytes, tag: Hashable = None) -> None:
        """Queue 48 kHz mono s16 ``pcm48``; what of it is played is counted under ``tag``."""
        if self.closed or not pcm48:
            return
        if self._queued_bytes + len(pcm48) > MAX_QUEUED_S * 2 * SAMPLE_RATE:
            raise ValueError(f"more than {MAX_QUEUED_S:.0f} s of speech queued")
        self._pieces.append(_Piece(pcm48, tag))
        self._queued_bytes += len(pcm48)
        self._played.setdefault(tag, 0)
        self._idle.clear()

    def clear(self) -> None:
        """Drop everything queued (barge-in): the next frame out is silence."""
        self._pieces.clear()
        self._queued_bytes = 0
        for track in list(self._tracks):
            track._queue.clear()  # speech packets not yet sent go too
        self._idle.set()

    def played(self, tag: Hashable) -> int:
        """Samples of ``tag``'s audio sent so far."""
        return self._played.get(tag, 0) // 2

    def forget(self, tag: Hashable) -> None:
        self._played.pop(tag, None)

    async def wait_idle(self) -> None:
        """Return when everything queued has gone out."""
        await self._idle.wait()

    # ------------------------------------------------------------------ producer

    def _next_frame(self) -> bytes | None:
        if not self._pieces:
            return None
        out = bytearray()
        while self._pieces and len(out) < FRAME_BYTES:
            piece = self._pieces[0]
            take = min(FRAME_BYTES - len(out), len(piece.data) - piece.offset)
            out += piece.data[piece.offset : piece.offset + take]
            piece.offset += take
            self._played[piece.tag] = self._played.get(piece.tag, 0) + take
            if piece.offset >= len(piece.data):
                self._pieces.popleft()
        self._queued_bytes = max(0, self._queued_bytes - len(out))
        if len(out) < FRAME_BYTES:
            out += _SILENT_FRAME[: FRAME_BYTES - len(out)]
        return bytes(out)

    async def _produce(self) -> None:
        pacer = Pacer(FRAME_S)
        index = 0
        was_speaking = False
        while not self.closed:
            await pacer.wait(index)
            index += 1
            data = self._next_frame()
            if data is None:
                payload = self.silence
                if was_speaking:
                    self._idle.set()
                was_speaking = False
            else:
                if not was_speaking:
                    self.speech_started_at = time.time()
                was_speaking = True
                payload = b""
                for packet in self._encoder.encode(s16_frame(data, SAMPLE_RATE, self._pts)):
                    payload = bytes(packet)
                self._pts += FRAME_SAMPLES
                self.speech_frames += 1
                if not payload:  # the encoder's first frame (look-ahead): nothing yet
                    payload = self.silence
                if not self._pieces:
                    self._idle.set()
            self.frames += 1
            if self.monitor is not None:  # the recorder: the agent's voice as sent
                self.monitor(payload, (index - 1) * FRAME_SAMPLES)
            for track in list(self._tracks):
                if track.readyState == "live":
                    track.push(payload)
