"""The mixed audio file of a meeting: every track file placed on the meeting's clock, summed,
encoded once as Opus (Ogg). Runs after the meeting in its own process (``python -m
media.tap.mixdown``), niced, one codec thread, with a CPU-time limit. When video was recorded
the same process then makes the composite video (:mod:`media.tap.composite`, ``--composite``)
from the video track files (``--video USER PATH``) and the mix just written.

Inputs may be files a killed recorder left unfinished: an Ogg file decodes up to its last
complete page, and what decoded is mixed; each input's extent on the meeting clock is printed
as a JSON line (the hub commits such a salvaged file with it).

Bounded memory whatever the meeting's length: all track files are decoded side by side and
mixed one window (1 s) at a time; each track keeps at most one decoded frame beyond the window.
A track's frames are placed by their ``pts`` (meeting time, as the recorder wrote them), so
late joiners, leavers and gaps land where they happened. The sum is scaled down only where it
would clip.
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import resource
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .composite import VideoInput, composite

RATE = 48_000
WINDOW = RATE  # samples mixed at a time
_TIME_BASE = fractions.Fraction(1, RATE)


@dataclass(frozen=True)
class TrackExtent:
    """What of one input decoded: its span on the meeting clock (ms; ``duration_ms`` 0 when
    nothing did) and the error that stopped it early, if any."""

    path: str
    start_ms: int
    duration_ms: int
    error: str = ""


@dataclass(frozen=True)
class MixSummary:
    """What was written: length in ms (from the meeting's start) and each input's extent."""

    duration_ms: int
    tracks: tuple[TrackExtent, ...]


def _frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample on the meeting clock, mono float32 samples) per decoded frame."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = 1
        position: int | None = None
        for frame in container.decode(stream):
            samples = frame.to_ndarray().astype(np.float32)
            if frame.format.name.startswith("s16"):
                samples /= 32768.0
            mono = samples.reshape(len(frame.layout.channels), -1).mean(axis=0) \
                if frame.format.is_planar else \
                samples.reshape(-1, len(frame.layout.channels)).mean(axis=1)
            if frame.pts is not None and frame.time_base is not None:
                position = round(frame.pts * frame.time_base * RATE)
            elif position is None:
                position = 0
            yield position, mono
            position += len(mono)


class _Track:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._frames = _frames(path)
        self._held: tuple[int, np.ndarray] | None = None
        self.done = False
        #: Meeting-clock extent of what decoded (samples), and why decoding stopped early.
        self.first: int | None = None
        self.end = 0
        self.error = ""

    def _next(self) -> tuple[int, np.ndarray] | None:
        try:
            position, samples = next(self._frames)
        except StopIteration:
            return None
        except (av.FFmpegError, OSError, ValueError) as exc:
            # A file cut short (its recorder was killed): what decoded so far is kept.
            self.error = repr(exc)
            return None
        if self.first is None:
            self.first = position
        self.end = max(self.end, position + len(samples))
        return position, samples

    def add_into(self, out: np.ndarray, start: int) -> None:
        """Add this track's samples that fall in ``[start, start + len(out))``."""
        end = start + len(out)
        while not self.done:
            if self._held is None:
                self._held = self._next()
                if self._held is None:
                    self.done = True
                    return
            position, samples = self._held
            if position >= end:
                return  # belongs to a later window
            lo, hi = max(position, start), min(position + len(samples), end)
            if hi > lo:
                out[lo - start:hi - start] += samples[lo - position:hi - position]
            if position + len(samples) > end:
                return  # the rest goes in the next window
            self._held = None


def mix(tracks: Sequence[Path], out: Path, *, duration_ms: int) -> MixSummary:
    """Mix ``tracks`` into ``out`` (Ogg/Opus, mono, 48 kHz) covering ``[0, duration_ms)`` of
    the meeting."""
    total = round(duration_ms * RATE / 1000)
    sources = [_Track(path) for path in tracks]
    container = av.open(str(out), "w", format="ogg")
    try:
        stream = container.add_stream("libopus", rate=RATE)
        stream.layout = "mono"
        stream.codec_context.thread_count = 1
        stream.codec_context.bit_rate = 48_000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE, frame_size=960)
        start = 0
        while start < total:
            window = np.zeros(min(WINDOW, total - start), dtype=np.float32)
            for source in sources:
                source.add_into(window, start)
            peak = float(np.abs(window).max(initial=0.0))
            if peak > 1.0:
                window /= peak
            frame = av.AudioFrame.from_ndarray(
                (window * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = RATE, start, _TIME_BASE
            for chunk in resampler.resample(frame):
                for packet in stream.encode(chunk):
                    container.mux(packet)
            start += len(window)
        for chunk in resampler.resample(None):
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    for source in sources:  # inputs longer than the meeting: read to their end for extents
        while not source.done:
            source.add_into(np.zeros(WINDOW, dtype=np.float32), max(start, source.end))
    return MixSummary(duration_ms=round(total * 1000 / RATE), tracks=tuple(
        TrackExtent(path=str(s.path), start_ms=round((s.first or 0) * 1000 / RATE),
                    duration_ms=round((s.end - (s.first or 0)) * 1000 / RATE)
                    if s.first is not None else 0, error=s.error)
        for s in sources))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m media.tap.mixdown --out MIX --duration-ms N [--cpu-seconds S]
    [--composite OUT --video USER PATH ...] TRACK...``"""
    parser = argparse.ArgumentParser(prog="python -m media.tap.mixdown")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--duration-ms", required=True, type=int)
    parser.add_argument("--cpu-seconds", type=int, default=600,
                        help="CPU-time limit of this process (it is killed beyond it)")
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--composite", type=Path,
                        help="also write the composite video (WebM) of the --video tracks here")
    parser.add_argument("--video", nargs=2, action="append", default=[],
                        metavar=("USER", "PATH"), help="a video track file and whose it is")
    parser.add_argument("--size", default="640x360", help="composite WIDTHxHEIGHT (even)")
    parser.add_argument("--fps", type=int, default=15, help="composite frames per second")
    parser.add_argument("tracks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    if args.duration_ms < 0 or args.duration_ms > 7 * 86_400_000:
        print("mixdown: --duration-ms out of range", file=sys.stderr)
        return 2
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        width = height = -1
    if not (16 <= width <= 3840 and 16 <= height <= 2160 and width % 2 == height % 2 == 0
            and 1 <= args.fps <= 60) or (args.video and args.composite is None):
        print("mixdown: --size must be even WIDTHxHEIGHT (16..3840 x 16..2160), --fps 1..60, "
              "and --video needs --composite", file=sys.stderr)
        return 2
    os.nice(max(0, args.nice))
    resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_seconds, args.cpu_seconds + 5))
    summary = mix(args.tracks, args.out, duration_ms=args.duration_ms)
    # One JSON line per input (the hub commits salvaged files with these extents).
    for extent in summary.tracks:
        print(json.dumps({"path": extent.path, "startMs": extent.start_ms,
                          "durationMs": extent.duration_ms, "error": extent.error}))
    if args.composite is not None:
        made = composite([VideoInput(Path(path), user) for user, path in args.video],
                         args.composite, duration_ms=args.duration_ms, audio=args.out,
                         width=width, height=height, fps=args.fps)
        for video in made.inputs:
            print(json.dumps({"path": video.path, "startMs": video.start_ms,
                              "durationMs": video.end_ms - video.start_ms + 1000 // args.fps
                              if video.frames else 0, "error": video.error}))
        print(json.dumps({"composite": str(args.composite), "frames": made.frames,
                          "width": made.width, "height": made.height, "tiles": made.tiles}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
