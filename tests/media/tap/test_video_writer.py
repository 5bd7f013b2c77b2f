"""The VP8 track writer and the composite on their own: real libvpx frames in, WebM files out,
read back with PyAV. The writer: frames before the first key frame dropped (and a key frame
asked for, not more than once a second), times on the meeting clock across an RTP wrap, frames
going back in time dropped. The composite: a grid of the tracks on the meeting clock, with
placeholders where someone has no video, the mix's audio copied in; the mixdown command line
makes both and reports each input's extent."""

from __future__ import annotations

import fractions
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from media.receive import EncodedFrame
from media.tap.composite import VideoInput, composite, grid, scan
from media.tap.video_writer import VP8TrackWriter, vp8_keyframe

WRAP = 1 << 32
STARTED_AT_MS = 1_700_000_000_000


def vp8_frames(n: int, *, width: int = 320, height: int = 240, fps: int = 15,
               luma: int = 200) -> list[tuple[bytes, int]]:
    """``n`` VP8 frames (data, 90 kHz pts) of a bright bar moving over grey; one key frame
    (the first)."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90_000)
    encoder.options = {"deadline": "realtime", "cpu-used": "8"}
    out: list[tuple[bytes, int]] = []
    for i in range(n):
        image = np.full((height * 3 // 2, width), 128, np.uint8)
        image[:height] = 120
        x = i * 8 % (width - 16)
        image[:height, x:x + 16] = luma
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts, frame.time_base = i * 90_000 // fps, encoder.time_base
        out += [(bytes(p), int(p.pts or 0)) for p in encoder.encode(frame)]  # type: ignore[union-attr]
    for p in encoder.encode(None):  # type: ignore[union-attr]
        out.append((bytes(p), int(p.pts or 0)))
    return out


def write_track(path: Path, frames: list[tuple[bytes, int]], *, at_s: float,
                first_rtp: int = 1234, asks: list[int] | None = None,
                clock: list[float] | None = None) -> VP8TrackWriter:
    """Push ``frames`` as if they arrived from ``at_s`` into the meeting."""
    writer = VP8TrackWriter(path, started_at_ms=STARTED_AT_MS)
    for data, pts in frames:
        writer.push(EncodedFrame(
            track="p.2", codec="video/VP8", data=data, timestamp=(first_rtp + pts) % WRAP,
            arrival=STARTED_AT_MS / 1000 + at_s + pts / 90_000,
            request_keyframe=(lambda at=pts: asks.append(at)) if asks is not None else None))
    writer.close()
    return writer


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(container.streams.video[0]))


def test_vp8_keyframe_reads_the_size_of_key_frames_only() -> None:
    frames = vp8_frames(3, width=176, height=144)
    key = vp8_keyframe(frames[0][0])
    assert key is not None and (key.width, key.height) == (176, 144)
    assert vp8_keyframe(frames[1][0]) is None
    assert vp8_keyframe(b"\x00\x01") is None and vp8_keyframe(b"") is None


def test_the_participants_name_is_kept_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "named.webm"
    writer = VP8TrackWriter(path, started_at_ms=STARTED_AT_MS, title="Ada Lovelace")
    for data, pts in vp8_frames(3):
        writer.push(EncodedFrame(track="p.2", codec="video/VP8", data=data, timestamp=pts,
                                 arrival=STARTED_AT_MS / 1000))
    writer.close()
    assert scan(path).title == "Ada Lovelace"


def test_frames_land_on_the_meeting_clock_across_a_wrap(tmp_path: Path) -> None:
    frames = vp8_frames(45)  # 3 s at 15 fps
    path = tmp_path / "v.webm"
    writer = write_track(path, frames, at_s=2.5, first_rtp=WRAP - 90_000)  # wraps after 1 s
    summary = writer.close()
    assert (summary.start_ms, summary.packets) == (2500, 45)
    assert 2900 <= summary.duration_ms <= 3100
    out = decoded(path)
    assert len(out) == 45 and out[0].key_frame and (out[0].width, out[0].height) == (320, 240)
    times = [round(float(f.pts * f.time_base) * 1000) for f in out]
    assert times[0] == 2500 and times[15] == 3500 and times[-1] == 2500 + 44 * 1000 // 15
    assert writer.close() == summary  # idempotent


def test_frames_before_the_first_key_frame_are_dropped_and_a_key_frame_asked_for(
    tmp_path: Path,
) -> None:
    """A track joined mid-stream (its first frames are inter frames): they cannot be decoded,
    so they are dropped and the sender is asked for a key frame, at most once a second; the
    file starts at the key frame, where it fell on the meeting clock."""
    frames = vp8_frames(30)
    key = frames[0]
    # The sender's key frame comes 1 s in (as after a PLI): 14 inter frames before it.
    late = frames[1:15] + [(key[0], 15 * 6000)] + \
        [(data, pts + 15 * 6000) for data, pts in frames[1:10]]
    asks: list[int] = []
    path = tmp_path / "late.webm"
    writer = write_track(path, late, at_s=1.0, asks=asks)
    assert writer.dropped == 14 and writer.frames == 10 and writer.keyframes == 1
    # Asked at the first frame, and not again within the second (the frames came at once).
    assert asks == [late[0][1]] and writer.keyframe_requests == 1
    out = decoded(path)
    assert len(out) == 10 and out[0].key_frame
    # The stream's time zero came 1 s into the meeting; its key frame is 1 s in: at 2 s.
    assert round(float(out[0].pts * out[0].time_base) * 1000) == 2000


def test_a_frame_going_back_in_time_is_dropped(tmp_path: Path) -> None:
    frames = vp8_frames(10)
    shuffled = frames[:5] + [frames[3]] + frames[5:]
    writer = write_track(tmp_path / "r.webm", shuffled, at_s=0.0)
    assert writer.dropped == 1 and writer.frames == 10


def test_a_writer_that_never_saw_a_key_frame_writes_nothing(tmp_path: Path) -> None:
    writer = write_track(tmp_path / "none.webm", vp8_frames(5)[1:], at_s=0.0)
    assert writer.close().packets == 0 and not (tmp_path / "none.webm").exists()


@pytest.mark.parametrize("count,cols,rows", [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 2, 2),
                                             (5, 3, 2)])
def test_grid_tiles_fill_the_frame_without_overlap(count: int, cols: int, rows: int) -> None:
    boxes = grid(count, 640, 360)
    assert len(boxes) == count
    assert {w for _, _, w, _ in boxes} == {640 // cols // 2 * 2}
    assert {h for _, _, _, h in boxes} == {360 // rows // 2 * 2}
    for i, (x, y, w, h) in enumerate(boxes):
        assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 360 and x % 2 == y % 2 == 0
        for x2, y2, w2, h2 in boxes[i + 1:]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


def _mean_luma(frame: av.VideoFrame, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    plane = frame.planes[0]
    luma = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
    return float(luma[y:y + h, x:x + w].mean())


def test_the_composite_places_each_track_on_the_meeting_clock(tmp_path: Path) -> None:
    """Alice's camera from 0.5 s to 2.5 s, Bob's from 1.5 s to 3.5 s, a meeting of 4 s: two
    tiles side by side; a tile shows its track's picture while it runs and the grey
    placeholder (with the name) before and after; the output has the meeting's length."""
    alice = tmp_path / "alice.webm"
    bob = tmp_path / "bob.webm"
    write_track(alice, vp8_frames(30, luma=250), at_s=0.5)
    write_track(bob, vp8_frames(30, width=640, height=480, luma=250), at_s=1.5)
    out = tmp_path / "composite.webm"
    made = composite([VideoInput(alice, "alice"), VideoInput(bob, "bob")], out,
                     duration_ms=4000, width=320, height=180, fps=10)
    assert (made.tiles, made.frames) == (2, 40)
    assert [(e.start_ms, e.frames) for e in made.inputs] == [(500, 30), (1500, 30)]
    frames = decoded(out)
    assert len(frames) == 40 and (frames[0].width, frames[0].height) == (320, 180)
    left, right = grid(2, 320, 180)
    # A patch at the middle of each tile's left edge: the picture (grey 120, fit to the
    # tile's width) or the placeholder (dark grey 48; its name is centred, clear of it).
    edge = [(x + 2, y + h // 2 - 10, 12, 20) for x, y, w, h in (left, right)]

    def showing(t_s: float) -> tuple[bool, bool]:
        frame = frames[int(t_s * 10)]
        return tuple(_mean_luma(frame, box) > 84 for box in edge)  # type: ignore[return-value]

    assert showing(0.2) == (False, False)  # nobody's video yet: two placeholders
    assert showing(1.0) == (True, False)
    assert showing(2.0) == (True, True)
    assert showing(3.0) == (False, True)  # alice's ended at 2.5 s
    assert showing(3.9) == (False, False)  # bob's at 3.5 s


def test_mixdown_makes_the_mix_and_the_composite_and_reports_extents(tmp_path: Path) -> None:
    video = tmp_path / "p.2.abc.webm"
    write_track(video, vp8_frames(15), at_s=0.2)
    mix = tmp_path / "mix.ogg"
    comp = tmp_path / "composite.webm"
    done = subprocess.run(
        [sys.executable, "-m", "media.tap.mixdown", "--out", str(mix), "--duration-ms", "2000",
         "--composite", str(comp), "--video", "alice", str(video), "--size", "320x180"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["path"] == str(video) and lines[0]["startMs"] == 200
    assert 900 <= lines[0]["durationMs"] <= 1100
    assert lines[1]["composite"] == str(comp) and lines[1]["tiles"] == 1
    with av.open(str(comp)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.streams.audio[0].codec_context.name == "opus"
    assert scan(comp).frames == 30  # 2 s at 15 fps


def test_mixdown_refuses_bad_composite_arguments(tmp_path: Path) -> None:
    for extra in (["--size", "641x360", "--composite", "c.webm"], ["--video", "a", "v.webm"],
                  ["--fps", "0", "--composite", "c.webm"]):
        done = subprocess.run(
            [sys.executable, "-m", "media.tap.mixdown", "--out", str(tmp_path / "m.ogg"),
             "--duration-ms", "1000", *extra], capture_output=True, text=True, timeout=30,
            check=False)
        assert done.returncode == 2 and "--size" in done.stderr


def test_a_file_still_being_written_decodes_up_to_its_last_cluster(tmp_path: Path) -> None:
    """A recorder killed mid-meeting never closes its file: what it wrote must already be in
    the file, readable (FFmpeg reads the unfinished Matroska), up to about a second before."""
    path = tmp_path / "open.webm"
    writer = VP8TrackWriter(path, started_at_ms=STARTED_AT_MS)
    for data, pts in vp8_frames(60):  # 4 s
        writer.push(EncodedFrame(track="p.2", codec="video/VP8", data=data,
                                 timestamp=pts, arrival=STARTED_AT_MS / 1000))
    extent = scan(path)  # the writer is still open
    assert extent.frames >= 40 and extent.start_ms == 0
    assert len(decoded(path)) == extent.frames
    writer.close()
