"""Audio and video sources: frame shapes, pacing, the pre-encoded Opus path, file decoding."""

from __future__ import annotations

import asyncio
import fractions
from array import array

import av
import pytest
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError

from media.sources import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    FileSpec,
    FileTrack,
    OpusPacketTrack,
    OpusSource,
    OpusSpec,
    Pacer,
    PatternVideoTrack,
    ToneSource,
    ToneSpec,
    encode_opus_spec,
    open_audio_source,
)
from tests.support.paths import JFK


class LoopClock:
    """The running loop's clock, frozen for pacing tests: ``asyncio.sleep`` moves it on by the
    delay at once and records the delay, so a pacing test checks the schedule exactly instead
    of timing real sleeps (too slow on a loaded machine, never too fast)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: self.now)
        monkeypatch.setattr(asyncio, "sleep", self._sleep)

    async def _sleep(self, delay: float, result: object = None) -> object:
        self.sleeps.append(delay)
        self.now += delay
        return result


def _peak(frame: av.AudioFrame) -> int:
    samples = array("h", bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)])
    return max(abs(s) for s in samples)


async def test_tone_frames_are_20ms_s16_mono_48k_with_running_pts() -> None:
    track = ToneSource(ToneSpec(frequency_hz=440, amplitude=0.5)).create_track()
    frames = [await track.recv() for _ in range(3)]
    for i, frame in enumerate(frames):
        assert frame.samples == FRAME_SAMPLES
        assert frame.sample_rate == SAMPLE_RATE
        assert frame.format.name == "s16" and frame.layout.name == "mono"
        assert frame.pts == i * FRAME_SAMPLES
        assert frame.time_base == fractions.Fraction(1, SAMPLE_RATE)
    assert 0.45 * 32767 < _peak(frames[1]) <= 0.5 * 32767 + 1


async def test_tone_is_paced_in_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = LoopClock(monkeypatch)
    track = ToneSource(ToneSpec()).create_track()
    for _ in range(11):  # the first frame is immediate, then one per 20 ms
        await track.recv()
    assert clock.sleeps == pytest.approx([0.02] * 10)


async def test_disabled_tone_sends_silence_and_keeps_the_clock() -> None:
    track = ToneSource(ToneSpec()).create_track()
    await track.recv()
    track.enabled = False
    frame = await track.recv()
    assert _peak(frame) == 0 and frame.pts == FRAME_SAMPLES


def test_tone_spec_is_validated() -> None:
    with pytest.raises(ValueError):
        ToneSource(ToneSpec(amplitude=2.0))
    with pytest.raises(ValueError):
        ToneSource(ToneSpec(frequency_hz=30_000))


async def test_pacer_rebases_instead_of_bursting_after_a_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = LoopClock(monkeypatch)
    pacer = Pacer(0.02, max_lag_s=0.05)
    await pacer.wait(0)
    clock.now += 0.2  # a stalled loop: frames 1..10 are late
    await pacer.wait(1)  # rebased: released now
    assert clock.sleeps == []
    await pacer.wait(2)  # and the next one 20 ms later, not immediately
    assert clock.sleeps == pytest.approx([0.02])


async def test_file_track_decodes_jfk_to_eleven_seconds_of_48k_mono() -> None:
    track = FileTrack(JFK, loop=False, paced=False)
    samples = frames = 0
    last_pts = -1
    with pytest.raises(MediaStreamError):
        while True:
            frame = await track.recv()
            assert frame.sample_rate == SAMPLE_RATE and frame.layout.name == "mono"
            assert frame.pts > last_pts
            last_pts = frame.pts
            samples += frame.samples
            frames += 1
    assert frames == pytest.approx(550, abs=2)
    assert samples / SAMPLE_RATE == pytest.approx(11.0, abs=0.05)
    assert track.readyState == "ended"


async def test_looping_file_track_keeps_going_with_monotonic_pts() -> None:
    track = FileTrack(JFK, loop=True, paced=False)
    pts = [(await track.recv()).pts for _ in range(600)]  # past the 550-frame end
    assert pts == sorted(pts) and len(set(pts)) == 600
    track.stop()


async def test_missing_file_fails_when_the_source_is_opened() -> None:
    with pytest.raises(FileNotFoundError):
        await open_audio_source(FileSpec("/nonexistent/file.flac"))


def _decode_opus(payloads: list[bytes]) -> list[av.AudioFrame]:
    decoder = av.CodecContext.create("libopus", "r")
    frames = []
    for i, payload in enumerate(payloads):
        packet = av.Packet(payload)
        packet.pts = i * FRAME_SAMPLES
        packet.time_base = fractions.Fraction(1, SAMPLE_RATE)
        frames += decoder.decode(packet)
    return frames


def test_pre_encoded_opus_decodes_back_to_the_tone() -> None:
    clip = encode_opus_spec(OpusSpec(tone=ToneSpec(amplitude=0.5), tone_duration_s=1.0))
    assert len(clip.packets) == pytest.approx(50, abs=2)
    frames = _decode_opus(list(clip.packets))
    total = sum(f.samples for f in frames)
    assert total / SAMPLE_RATE == pytest.approx(1.0, abs=0.05)
    assert max(_peak(f) for f in frames[5:]) > 0.3 * 32767
    assert max(_peak(f) for f in _decode_opus([clip.silence] * 5)) < 100


def test_pre_encoded_opus_from_jfk_covers_the_file() -> None:
    clip = encode_opus_spec(OpusSpec(path=JFK))
    assert clip.duration_s == pytest.approx(11.0, abs=0.1)
    decoded = sum(f.samples for f in _decode_opus(list(clip.packets)))
    assert decoded / SAMPLE_RATE == pytest.approx(11.0, abs=0.1)


async def test_opus_track_returns_packets_that_aiortc_only_packs() -> None:
    source = await open_audio_source(OpusSpec(tone_duration_s=0.1))
    assert isinstance(source, OpusSource)
    track = source.create_track()
    assert isinstance(track, OpusPacketTrack)
    encoder = OpusEncoder()  # what RTCRtpSender uses: .pack() for anything not a Frame
    for i in range(3):
        packet = await track.recv()
        assert isinstance(packet, av.Packet)
        assert packet.pts == i * FRAME_SAMPLES
        assert packet.time_base == fractions.Fraction(1, SAMPLE_RATE)
        payloads, timestamp = encoder.pack(packet)
        assert payloads == [bytes(packet)] and timestamp == i * FRAME_SAMPLES


async def test_opus_track_loops_or_ends() -> None:
    clip = encode_opus_spec(OpusSpec(tone_duration_s=0.1))
    looping = OpusPacketTrack(clip, loop=True, paced=False)
    payloads = [bytes(await looping.recv()) for _ in range(2 * len(clip.packets))]
    assert payloads[: len(clip.packets)] == payloads[len(clip.packets):]
    once = OpusPacketTrack(clip, loop=False, paced=False)
    for _ in clip.packets:
        await once.recv()
    with pytest.raises(MediaStreamError):
        await once.recv()


async def test_disabled_opus_track_sends_the_silence_packet() -> None:
    clip = encode_opus_spec(OpusSpec(tone_duration_s=0.1))
    track = OpusPacketTrack(clip, paced=False)
    track.enabled = False
    assert bytes(await track.recv()) == clip.silence


async def test_pattern_video_frames() -> None:
    track = PatternVideoTrack(width=160, height=120, fps=30)
    first, second = await track.recv(), await track.recv()
    assert (first.width, first.height, first.format.name) == (160, 120, "yuv420p")
    assert second.pts - first.pts == 3000  # 90 kHz / 30 fps
    assert bytes(first.planes[0]) != bytes(second.planes[0])  # the bar moves
    track.enabled = False
    black = await track.recv()
    assert set(bytes(black.planes[0])) == {16}
