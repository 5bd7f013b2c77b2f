"""Recorder CPU per recorded participant, side by side with what a decode-and-re-encode
recorder would cost, and the mix's speed as a multiple of real time.

Offline and single-threaded, on the recorder's own code: a minute of one participant's Opus
packets (libopus, 20 ms, as a sender makes them) is

- muxed as they are (:class:`~media.tap.track_writer.OpusTrackWriter`: what the recorder does);
- decoded and re-encoded (libopus decoder -> libopus encoder -> the same Ogg muxer: what a
  recorder on aiortc's decoded frames would do);

and the CPU time per second of audio is printed as a share of one core. Then
:func:`media.tap.mixdown.mix` mixes four such tracks. It leaves out what both recorders share
(SRTP, the jitter buffer: aiortc's receive path). Run: ``.venv/bin/python -m bench.recorder``.
"""

from __future__ import annotations

import fractions
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from media.receive import EncodedFrame
from media.tap.mixdown import mix
from media.tap.track_writer import OpusTrackWriter

SECONDS = 60
RATE = 48_000
TB = fractions.Fraction(1, RATE)


def packets(seconds: int) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = RATE, "stereo", "s16"
    encoder.time_base = TB
    rng = np.random.default_rng(1)
    out: list[bytes] = []
    for i in range(seconds * 50):
        t = (np.arange(960) + i * 960) / RATE
        voice = np.sin(2 * np.pi * (180 + 40 * np.sin(t)) * t) * 6000 + rng.normal(0, 300, 960)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(voice.astype(np.int16), 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = RATE, i * 960
        out += [bytes(p) for p in encoder.encode(frame)]  # type: ignore[union-attr]
    return out


def mux_only(data: list[bytes], path: Path) -> float:
    start = time.process_time()
    writer = OpusTrackWriter(path, started_at_ms=0)
    for i, payload in enumerate(data):
        writer.push(EncodedFrame(track="t", codec="audio/opus", data=payload,
                                 timestamp=i * 960, arrival=0.0))
    writer.close()
    return time.process_time() - start


def decode_and_reencode(data: list[bytes], path: Path) -> float:
    start = time.process_time()
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout, decoder.format = RATE, "stereo", "s16"
    container = av.open(str(path), "w", format="ogg")
    stream = container.add_stream("libopus", rate=RATE)
    stream.layout = "stereo"
    for i, payload in enumerate(data):
        packet = av.Packet(payload)
        packet.pts, packet.time_base = i * 960, TB
        for frame in decoder.decode(packet):
            for out in stream.encode(frame):  # type: ignore[arg-type]
                container.mux(out)
    for out in stream.encode(None):
        container.mux(out)
    container.close()
    return time.process_time() - start


def main() -> None:
    data = packets(SECONDS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        muxed = min(mux_only(data, root / f"m{i}.ogg") for i in range(3))
        recoded = min(decode_and_reencode(data, root / f"r{i}.ogg") for i in range(2))
        tracks = [root / "m0.ogg", root / "m1.ogg", root / "m2.ogg", root / "r0.ogg"]
        start = time.process_time()
        mix(tracks, root / "mix.ogg", duration_ms=SECONDS * 1000)
        mixed = time.process_time() - start
    print(f"one participant, {SECONDS} s of Opus audio (CPU time, one thread)")
    print(f"{'recorder':<32}{'CPU s':>8}{'% of a core':>14}")
    print(f"{'mux the packets (this recorder)':<32}{muxed:>8.3f}{100 * muxed / SECONDS:>13.2f}%")
    print(f"{'decode and re-encode':<32}{recoded:>8.3f}{100 * recoded / SECONDS:>13.2f}%")
    print(f"ratio: re-encoding costs {recoded / muxed:.0f}x the muxing")
    print(f"mix of 4 tracks x {SECONDS} s: {mixed:.2f} CPU s = {SECONDS / mixed:.0f}x real time")


if __name__ == "__main__":
    main()
