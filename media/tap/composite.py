"""The composite video of a meeting: the participants' video tracks in a grid on the meeting's
clock, with the mixed audio, as one WebM (VP8 + Opus) that a browser simply plays.

Runs after the meeting in the mix's child process (``python -m media.tap.mixdown --composite
OUT --video USER PATH ...``: niced, one codec thread, a CPU-time limit), after the mix, whose
Opus packets it copies into the WebM as they are (no second audio encode).

**Layout.** One tile per participant and concurrent track: a participant's files are placed in
"slots" so that files that follow each other in time (the parts of a failover, a camera turned
off and on) share a tile and files that overlap (camera and screen share) get one each. The
grid is the smallest ``cols x rows`` that holds every tile (1, 2 side by side, 2x2, 3x2, ...);
each tile shows its track's latest decoded frame at that moment, scaled to fit with its aspect
ratio kept, and a grey placeholder with the participant's name (the display name the recorder
wrote into the file's metadata, else the user id) while there is none (before
their video starts, :data:`END_MS` after its last frame, or when no frame came for
:data:`HOLD_S`).

**Bounded memory and CPU.** A pre-pass reads each file's packet times without decoding (where
it starts and ends on the meeting clock: also what a salvaged file's extent is). Then output
frames are made in time order; a track's decoder is opened when the clock reaches the file and
closed when it has passed it, so at any moment only the files on screen are being decoded, each
holding one frame ahead. Encoding is libvpx VP8 in real-time mode, one thread.
"""

from __future__ import annotations

import fractions
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from .glyphs import draw_text

logger = logging.getLogger(__name__)

#: A tile keeps showing a track's last frame this long when no newer frame comes.
HOLD_S = 2.0
#: ... but a file's last frame only this long after it (the track ended there).
END_MS = 250
_MS = fractions.Fraction(1, 1000)
_BLACK_Y, _GREY_Y, _NEUTRAL_UV = 16, 48, 128


@dataclass(frozen=True)
class VideoInput:
    """One video track file and whose it is (the name shown on its placeholder)."""

    path: Path
    label: str


@dataclass(frozen=True)
class VideoExtent:
    """What a pre-pass found in one file: its first and last frame times on the meeting clock
    (ms; ``frames`` 0 when it has none) and the error that cut it short."""

    path: str
    start_ms: int
    end_ms: int
    frames: int
    error: str = ""
    #: The display name the recorder wrote into the file ("" if none).
    title: str = ""


@dataclass(frozen=True)
class CompositeSummary:
    """What was written: size, frames, length, tiles, and each input's extent."""

    width: int
    height: int
    fps: int
    frames: int
    duration_ms: int
    tiles: int
    inputs: tuple[VideoExtent, ...]


def scan(path: Path) -> VideoExtent:
    """First and last packet times of a video file, without decoding (a file cut short by a
    killed recorder reads up to where it was cut)."""
    first: int | None = None
    last = frames = 0
    error = title = ""
    try:
        with av.open(str(path)) as container:
            title = str(container.metadata.get("title", ""))
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                ms = round(packet.pts * packet.time_base * 1000)
                first = ms if first is None else first
                last = max(last, ms)
                frames += 1
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        error = repr(exc)
    return VideoExtent(path=str(path), start_ms=first or 0, end_ms=last, frames=frames,
                       error=error, title=title)


class _Track:
    """One file's frames, decoded lazily: the latest frame at or before a time."""

    def __init__(self, source: VideoInput, extent: VideoExtent) -> None:
        self.source = source
        self.extent = extent
        self._frames: Iterator[av.VideoFrame] | None = None
        self._container: av.container.InputContainer | None = None
        self._ahead: av.VideoFrame | None = None
        self.current: av.VideoFrame | None = None
        self.current_ms = -1
        self.done = False
        self.decoded = 0

    def _open(self) -> None:
        container = av.open(str(self.source.path))
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        self._container = container
        self._frames = container.decode(stream)

    def _pull(self) -> av.VideoFrame | None:
        if self._frames is None:
            self._open()
        assert self._frames is not None
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except (av.FFmpegError, OSError, ValueError) as exc:  # cut short: keep what decoded
            logger.warning("%s: decoding stopped: %r", self.source.path, exc)
            return None
        self.decoded += 1
        return frame

    def at(self, ms: int) -> av.VideoFrame | None:
        """The latest frame at or before ``ms`` (None before the first, or when it is older
        than :data:`HOLD_S`); the decoder is closed once the file is behind the clock."""
        while not self.done:
            if self._ahead is None:
                self._ahead = self._pull()
                if self._ahead is None:
                    self.close()
                    break
            pts = self._ahead.pts
            frame_ms = round(pts * self._ahead.time_base * 1000) if pts is not None \
                and self._ahead.time_base is not None else self.current_ms + 1
            if frame_ms > ms:
                break
            self.current, self.current_ms, self._ahead = self._ahead, frame_ms, None
        if self.current is None or ms - self.current_ms > HOLD_S * 1000:
            return None
        return self.current

    def close(self) -> None:
        self.done = True
        self._ahead = None
        self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None


@dataclass
class _Tile:
    label: str  # whose tile (the user)
    name: str  # what its placeholder says: the display name the recorder wrote, else label
    tracks: list[_Track] = field(default_factory=list)


def _tiles(inputs: Sequence[VideoInput], extents: Sequence[VideoExtent]) -> list[_Tile]:
    """One tile per participant and concurrent track: each file goes to its participant's
    first tile whose files all ended before it starts (interval colouring, by start time)."""
    tiles: list[_Tile] = []
    ordered = sorted(zip(inputs, extents, strict=True), key=lambda p: (p[1].start_ms, p[0].label))
    for source, extent in ordered:
        if extent.frames == 0:
            continue
        track = _Track(source, extent)
        tile = next((t for t in tiles if t.label == source.label
                     and all(o.extent.end_ms < extent.start_ms for o in t.tracks)), None)
        if tile is None:
            tile = _Tile(source.label, extent.title or source.label)
            tiles.append(tile)
        tile.tracks.append(track)
    return tiles


def grid(count: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """``count`` tiles ``(x, y, w, h)`` (even numbers) filling a ``width x height`` frame in
    the smallest grid with about as many columns as rows (1, 2 side by side, 2x2, 3x2 ...)."""
    if count <= 0:
        return []
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    w, h = width // cols // 2 * 2, height // rows // 2 * 2
    # The last row's tiles are centred when it is not full.
    boxes = []
    for i in range(count):
        row, col = divmod(i, cols)
        in_row = min(cols, count - row * cols)
        x0 = (width - in_row * w) // 2 // 2 * 2
        boxes.append((x0 + col * w, (height - rows * h) // 2 // 2 * 2 + row * h, w, h))
    return boxes


class _Canvas:
    """The output picture as yuv420p planes."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.y = np.full((height, width), _BLACK_Y, np.uint8)
        self.u = np.full((height // 2, width // 2), _NEUTRAL_UV, np.uint8)
        self.v = np.full((height // 2, width // 2), _NEUTRAL_UV, np.uint8)

    def fill(self, box: tuple[int, int, int, int], luma: int) -> None:
        x, y, w, h = box
        self.y[y:y + h, x:x + w] = luma
        self.u[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = _NEUTRAL_UV
        self.v[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = _NEUTRAL_UV

    def place(self, box: tuple[int, int, int, int], frame: av.VideoFrame) -> None:
        """``frame`` scaled to fit ``box`` (aspect kept), centred on black."""
        x, y, w, h = box
        scale = min(w / max(1, frame.width), h / max(1, frame.height))
        fw = max(2, min(w, int(frame.width * scale) // 2 * 2))
        fh = max(2, min(h, int(frame.height * scale) // 2 * 2))
        if (fw, fh) != (w, h):
            self.fill(box, _BLACK_Y)
        scaled = frame.reformat(width=fw, height=fh, format="yuv420p")
        planes = [np.frombuffer(memoryview(p), np.uint8).reshape(-1, p.line_size)
                  for p in scaled.planes]
        ox, oy = x + (w - fw) // 2 // 2 * 2, y + (h - fh) // 2 // 2 * 2
        self.y[oy:oy + fh, ox:ox + fw] = planes[0][:fh, :fw]
        self.u[oy // 2:(oy + fh) // 2, ox // 2:(ox + fw) // 2] = planes[1][:fh // 2, :fw // 2]
        self.v[oy // 2:(oy + fh) // 2, ox // 2:(ox + fw) // 2] = planes[2][:fh // 2, :fw // 2]

    def placeholder(self, box: tuple[int, int, int, int], label: str) -> None:
        """A grey tile with the participant's name in the middle."""
        self.fill(box, _GREY_Y)
        x, y, w, h = box
        draw_text(self.y, label, x=x + w // 2, y=y + h // 2, max_width=w - 8, luma=220)

    def frame(self) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, data in zip(frame.planes, (self.y, self.u, self.v), strict=True):
            rows = data.shape[0]
            if plane.line_size == data.shape[1]:
                plane.update(data.tobytes())
            else:  # FFmpeg pads rows: copy row by row to its layout
                padded = np.zeros((rows, plane.line_size), np.uint8)
                padded[:, :data.shape[1]] = data
                plane.update(padded.tobytes())
        return frame


def _audio_packets(path: Path | None) -> tuple[av.container.InputContainer | None,
                                                Iterator[av.Packet]]:
    if path is None:
        return None, iter(())
    container = av.open(str(path))
    stream = container.streams.audio[0]
    return container, (p for p in container.demux(stream) if p.pts is not None and p.size)


def _ms_of(packet: av.Packet) -> float:
    return float((packet.pts or 0) * packet.time_base * 1000)


def composite(inputs: Sequence[VideoInput], out: Path, *, duration_ms: int,
              audio: Path | None = None, width: int = 640, height: int = 360,
              fps: int = 15, bit_rate: int = 600_000) -> CompositeSummary:
    """Write the composite of ``inputs`` to ``out`` (WebM: VP8, and ``audio``'s Opus packets
    copied when given), covering ``[0, duration_ms)`` of the meeting."""
    if width % 2 or height % 2 or not 1 <= fps <= 60:
        raise ValueError("width and height must be even, fps 1..60")
    extents = [scan(source.path) for source in inputs]
    tiles = _tiles(inputs, extents)
    boxes = grid(len(tiles), width, height)
    canvas = _Canvas(width, height)
    audio_in, audio_packets = _audio_packets(audio)
    container = av.open(str(out), "w", format="webm")
    frames = 0
    try:
        stream = container.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bit_rate
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = fps * 4  # a key frame every 4 s: seeking
        stream.codec_context.options = {"deadline": "realtime", "cpu-used": "8",
                                        "lag-in-frames": "0"}
        audio_stream = None
        if audio_in is not None:
            audio_stream = container.add_stream_from_template(audio_in.streams.audio[0])
        pending_audio = next(audio_packets, None)
        total = math.ceil(duration_ms * fps / 1000)
        for index in range(total):
            ms = index * 1000 // fps
            for tile, box in zip(tiles, boxes, strict=True):
                shown = None
                for track in tile.tracks:
                    if track.done or track.extent.start_ms > ms:
                        continue
                    if track.extent.end_ms + END_MS < ms:
                        track.close()  # behind the clock: its decoder goes
                        continue
                    frame = track.at(ms)
                    if frame is not None:
                        shown = frame
                if shown is not None:
                    canvas.place(box, shown)
                else:
                    canvas.placeholder(box, tile.name)
            picture = canvas.frame()
            picture.pts, picture.time_base = ms, _MS
            # Audio up to this picture's time first: the muxer interleaves, nothing piles up.
            while pending_audio is not None and audio_stream is not None and \
                    _ms_of(pending_audio) <= ms:
                pending_audio.stream = audio_stream
                container.mux(pending_audio)
                pending_audio = next(audio_packets, None)
            for packet in stream.encode(picture):
                container.mux(packet)
            frames += 1
        for packet in stream.encode(None):
            container.mux(packet)
        while pending_audio is not None and audio_stream is not None:
            pending_audio.stream = audio_stream
            container.mux(pending_audio)
            pending_audio = next(audio_packets, None)
    finally:
        container.close()
        if audio_in is not None:
            audio_in.close()
        for tile in tiles:
            for track in tile.tracks:
                track.close()
    logger.info("composite: %d tile(s), %d frames %dx%d at %d fps", len(tiles), frames, width,
                height, fps)
    return CompositeSummary(width=width, height=height, fps=fps, frames=frames,
                            duration_ms=duration_ms, tiles=len(tiles), inputs=tuple(extents))
