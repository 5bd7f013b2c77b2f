"""The track writer on its own: real libopus packets in, an Ogg file out, read back with PyAV.
Times are checked on the meeting clock: where the first packet lands, RTP wrap-around, gaps
(DTX, a paused sender) kept as gaps, packets that go back in time dropped."""

from __future__ import annotations

import fractions
import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from media.receive import EncodedFrame
from media.tap.track_writer import OpusTrackWriter

WRAP = 1 << 32


def opus_packets(n: int) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48_000, "stereo", "s16"
    encoder.time_base = fractions.Fraction(1, 48_000)
    packets: list[bytes] = []
    i = 0
    while len(packets) < n:
        t = (np.arange(960) + i * 960) / 48_000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16",
                                           layout="stereo")
        frame.sample_rate, frame.pts = 48_000, i * 960
        packets += [bytes(p) for p in encoder.encode(frame)]  # type: ignore[union-attr]
        i += 1
    return packets[:n]


def frames_of(path: Path) -> list[tuple[float, int]]:
    """(start s, samples) of each decoded frame."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            assert frame.pts is not None and frame.time_base is not None
            out.append((float(frame.pts * frame.time_base), frame.samples))
    return out


def test_packets_land_on_the_meeting_clock_across_a_wrap_a_gap_and_a_repeat(
    tmp_path: Path,
) -> None:
    started_at_ms = 1_700_000_000_000
    path = tmp_path / "t.ogg"
    writer = OpusTrackWriter(path, started_at_ms=started_at_ms)
    packets = opus_packets(100)
    first_rtp = WRAP - 10 * 960  # wraps after ten packets
    arrival = (started_at_ms + 2_500) / 1000  # the first packet came 2.5 s into the meeting
    for i, data in enumerate(packets):
        rtp = first_rtp + i * 960 + (48_000 if i >= 50 else 0)  # 1 s of silence after 50
        writer.push(EncodedFrame(track="p.1", codec="audio/opus", data=data,
                                 timestamp=rtp % WRAP, arrival=arrival + i * 0.02))
        if i == 20:  # a repeated packet: dropped, not muxed out of order
            writer.push(EncodedFrame(track="p.1", codec="audio/opus", data=data,
                                     timestamp=rtp % WRAP, arrival=arrival))
    summary = writer.close()
    assert writer.close() == summary  # idempotent
    writer.push(EncodedFrame(track="p.1", codec="audio/opus", data=packets[0], timestamp=0,
                             arrival=arrival))  # after close: ignored
    assert (summary.start_ms, summary.duration_ms, summary.packets) == (2_500, 3_000, 100)
    assert writer.dropped == 1
    frames = frames_of(path)
    # 100 packets of 20 ms, less the pre-skip
    assert sum(samples for _, samples in frames) / 48_000 == \
        pytest.approx(2.0 - 312 / 48_000, abs=1e-6)
    starts = [start for start, _ in frames]
    assert abs(starts[0] - (2.5 + 312 / 48_000)) < 1e-3
    # The packet after the pause starts 1 s later than the one before it ended.
    jumps = [b - a for a, b in itertools.pairwise(starts) if b - a > 0.05]
    assert len(jumps) == 1 and abs(jumps[0] - 1.02) < 1e-3



def test_a_file_still_being_written_decodes_up_to_its_last_page(tmp_path: Path) -> None:
    """A recorder killed mid-meeting never closes its file: the pages written so far must
    already be in it (not in FFmpeg's write buffer), so all but about the last second
    decodes."""
    path = tmp_path / "open.ogg"
    writer = OpusTrackWriter(path, started_at_ms=0)
    for i, data in enumerate(opus_packets(250)):  # 5 s
        writer.push(EncodedFrame(track="p.1", codec="audio/opus", data=data,
                                 timestamp=i * 960, arrival=0.0))
    seconds = sum(samples for _, samples in frames_of(path)) / 48_000  # still open
    assert seconds >= 3.5
    writer.close()
