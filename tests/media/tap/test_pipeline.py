"""The audio pipeline without a hub: resampling, voice-activity segmentation on generated
speech, per-speaker streaming to a transcriber (a fake that records calls), and the cost of a
participant who never speaks."""

from __future__ import annotations

import math
import subprocess
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import pytest

from media.sources import decode_audio_file
from media.tap.config import TapConfig
from media.tap.pipeline import (
    DIGITAL_SILENCE,
    FRAME_BYTES,
    FRAME_S,
    Resampler,
    SegmentAudio,
    SegmentEnd,
    Segmenter,
    SegmentEvent,
    SegmentStart,
    SegmentTimes,
    SpeakerPipeline,
)
from media.tap.transcriber import (
    BYTES_PER_SECOND,
    Recognition,
    RecognitionCallback,
    TranscriberStats,
)
from media.testing.speech import SHORT_SENTENCES, ShortCorpus, Speaker, pcm16k, short_utterances
from tests.conftest import require_binary


def segments(pcm: bytes, config: TapConfig | None = None) -> list[tuple[float, float]]:
    """Feed ``pcm`` in 20 ms pieces; ``(start_s, end_s)`` of every segment."""
    segmenter = Segmenter(config or TapConfig())
    events: list[SegmentEvent] = []
    step = BYTES_PER_SECOND // 50
    for offset in range(0, len(pcm), step):
        events += segmenter.push(pcm[offset:offset + step], offset / BYTES_PER_SECOND)
    events += segmenter.flush()
    out, start = [], None
    for event in events:
        if isinstance(event, SegmentStart):
            start = event.time_s
        elif isinstance(event, SegmentEnd):
            assert start is not None
            out.append((start, event.time_s))
            start = None
    return out


@dataclass
class Segment:
    """What the segmenter made of one voiced stretch: its voiced span and the audio it sent."""

    start_s: float
    end_s: float = 0.0
    audio_start_s: float = 0.0
    audio: bytes = field(default=b"", repr=False)

    @property
    def audio_end_s(self) -> float:
        return self.audio_start_s + len(self.audio) / BYTES_PER_SECOND


def segment_audio(pcm: bytes, config: TapConfig | None = None) -> list[Segment]:
    """Feed ``pcm`` (from time 0) in 20 ms pieces; every segment with the audio it carried."""
    segmenter = Segmenter(config or TapConfig())
    events: list[SegmentEvent] = []
    step = BYTES_PER_SECOND // 50
    for offset in range(0, len(pcm), step):
        events += segmenter.push(pcm[offset:offset + step], offset / BYTES_PER_SECOND)
    events += segmenter.flush()
    found: list[Segment] = []
    for event in events:
        if isinstance(event, SegmentStart):
            found.append(Segment(event.time_s))
        elif isinstance(event, SegmentAudio):
            segment = found[-1]
            if not segment.audio:
                segment.audio_start_s = event.time_s - len(event.pcm) / BYTES_PER_SECOND
            segment.audio += event.pcm
        else:
            found[-1].end_s = event.time_s
    return found


#: Two backgrounds for the same voices: a microphone's noise floor, and digital silence (a
#: muted or DTX sender between sentences, a zero-padded file).
NOISY = {"ann": Speaker("en-us+klatt2", 150, 50, -70.0), "bob": Speaker("en-us+klatt", 140, 40,
                                                                        -64.0)}
ZEROS = {name: Speaker(s.voice, s.speed, s.pitch, None) for name, s in NOISY.items()}


@pytest.fixture(scope="module", params=["noise floor", "digital silence"])
def short_corpus(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> ShortCorpus:
    """Six short sentences, two voices taking turns, 1 s of background between turns."""
    require_binary("espeak-ng")
    require_binary("sox")
    speakers = NOISY if request.param == "noise floor" else ZEROS
    return short_utterances(tmp_path_factory.mktemp("short"), sentences=SHORT_SENTENCES[:6],
                            speakers=speakers)


def test_onset_and_trailing_words_are_inside_their_segment(short_corpus: ShortCorpus) -> None:
    """Issue 14: the tap lost the first word of short utterances ("can everyone hear me" ->
    "and everyone hear me"). A segment must carry the audio from ``pre_roll_s`` before its
    first voiced frame -- the onset itself and background before it, but never opening with
    digital silence (nor the comfort noise sent for it) -- to ``speech_end_s`` after its last,
    and the second of silence between two turns must split them."""
    config = TapConfig()
    for speaker, track in short_corpus.tracks.items():
        pcm = pcm16k(track)
        mine = [u for u in short_corpus.utterances if u.speaker == speaker]
        found = segment_audio(pcm, config)
        assert len(found) == len(mine), (speaker, found)
        for utterance, segment in zip(mine, found):
            # The VAD finds the onset within a frame or two, and the pre-roll reaches back from
            # there: the segment's audio starts a pre-roll before the first word.
            assert segment.start_s <= utterance.start_s + 2 * FRAME_S, (utterance, segment)
            # (Not reaching into digital silence: a segment never opens with comfort noise.)
            expected = segment.start_s - round(config.pre_roll_s / FRAME_S) * FRAME_S
            while expected < segment.start_s and peak(frame_at(pcm, expected)) < DIGITAL_SILENCE:
                expected += FRAME_S
            assert segment.audio_start_s == pytest.approx(expected, abs=0.001), \
                (utterance, segment)
            # The last word and the hang-over after it are inside too.
            assert segment.end_s >= utterance.end_s - 2 * FRAME_S, (utterance, segment)
            assert segment.audio_end_s >= utterance.end_s + config.speech_end_s - 2 * FRAME_S
            # All of it is the audio as heard, but digital silence: that is sent as quiet noise.
            begin = round(segment.audio_start_s * BYTES_PER_SECOND) & ~1
            for at in range(0, len(segment.audio), FRAME_BYTES):
                sent = segment.audio[at:at + FRAME_BYTES]
                heard = pcm[begin + at:begin + at + FRAME_BYTES]
                if peak(heard) >= DIGITAL_SILENCE:
                    assert sent == heard, (utterance, segment, at)
                else:
                    assert DIGITAL_SILENCE <= peak(sent) < 300, (utterance, segment, at)


def frame_at(pcm: bytes, time_s: float) -> bytes:
    begin = round(time_s * BYTES_PER_SECOND) & ~1
    return pcm[begin:begin + FRAME_BYTES]


def peak(pcm: bytes) -> int:
    samples = array("h", pcm)
    return max(max(samples), -min(samples))


def test_a_dropout_at_the_onset_does_not_cut_the_pre_roll(speech_dir: Path) -> None:
    """A moment of digital silence just after a word starts (a lost packet, a stop's closure in
    synthetic speech) used to empty the pre-roll ring and restart the start window: the segment
    then began after the dropout, without the first word's start."""
    pcm = pcm16k(speech_dir / "weather.wav")  # 1.0 s of silence, the sentence, 1.5 s
    onset = next(i for i in range(0, len(pcm), 2) if pcm[i:i + 2] != b"\0\0")
    dropout = onset + int(0.1 * BYTES_PER_SECOND) & ~1
    pcm = pcm[:dropout] + bytes(int(0.06 * BYTES_PER_SECOND)) + pcm[dropout + int(
        0.06 * BYTES_PER_SECOND):]
    (segment,) = segment_audio(pcm)
    # The segment's audio starts at the onset's frame (what comes before it is digital
    # silence, which never opens a segment), not after the dropout.
    assert segment.audio_start_s <= onset / BYTES_PER_SECOND, segment
    assert segment.audio_start_s > onset / BYTES_PER_SECOND - 2 * FRAME_S, segment
    assert segment.start_s <= onset / BYTES_PER_SECOND + 2 * FRAME_S, segment


def duration(path: Path) -> float:
    return float(subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True,
                                check=True).stdout)


# --------------------------------------------------------------------------- resampling


def test_resampler_makes_16k_mono_s16_from_48k_stereo() -> None:
    resampler = Resampler()
    out = b""
    for i in range(50):  # one second of aiortc-shaped frames: s16 stereo 48 kHz, 20 ms
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(bytes(960 * 4))
        frame.sample_rate, frame.pts = 48_000, i * 960
        out += resampler.resample(frame)
    # swresample keeps a few samples of filter delay back; the rest comes out at 16 kHz mono.
    assert abs(len(out) - BYTES_PER_SECOND) <= 64 * 2


# --------------------------------------------------------------------------- segmentation


def test_one_sentence_is_one_segment_at_the_right_time(speech_dir: Path) -> None:
    wav = speech_dir / "weather.wav"  # 1.0 s silence, the sentence, 1.5 s silence
    found = segments(pcm16k(wav))
    assert len(found) == 1, found
    start, end = found[0]
    assert 0.9 <= start <= 1.2, found
    spoken_until = duration(wav) - 1.5  # espeak-ng ends its file with ~0.4 s of quiet
    assert spoken_until - 0.6 <= end <= spoken_until + 0.1, found


def test_a_pause_splits_and_max_segment_cuts(speech_dir: Path, tmp_path: Path) -> None:
    both = tmp_path / "both.wav"
    subprocess.run(["sox", str(speech_dir / "weather.wav"), str(speech_dir / "window.wav"),
                    str(both)], check=True)
    assert len(segments(pcm16k(both))) == 2
    # A hard cap splits one sentence into pieces no longer than the cap, without gaps.
    pieces = segments(pcm16k(speech_dir / "weather.wav"), TapConfig(max_segment_s=1.0))
    assert len(pieces) >= 3, pieces
    assert all(end - start <= 1.0 + 0.04 for start, end in pieces), pieces


def test_silence_and_quiet_noise_cost_no_vad_and_make_no_segment(tmp_path: Path) -> None:
    noise = tmp_path / "noise.wav"  # 3 s of hiss at about -66 dBFS peak, below the gate
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth", "3",
                    "whitenoise", "vol", "0.0005"], check=True)
    for pcm in (bytes(BYTES_PER_SECOND * 3), pcm16k(noise)):
        segmenter = Segmenter(TapConfig())
        events = segmenter.push(pcm, 0.0)
        assert events == []
        assert segmenter.frames_seen == len(pcm) // FRAME_BYTES
        assert segmenter.frames_vad == 0  # the level gate answered for every frame


# --------------------------------------------------------------------------- one speaker


class RecordingTranscriber:
    """A transcriber that records the calls it gets and answers each segment with a final
    naming how many bytes it received (a fake implementing the real interface)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.callbacks: list[RecognitionCallback] = []
        self._stats = TranscriberStats()

    @property
    def stats(self) -> TranscriberStats:
        return self._stats

    async def start(self) -> None:
        return None

    def open_stream(self, on_result: RecognitionCallback, *, name: str = "") -> _Stream:
        self.callbacks.append(on_result)
        return _Stream(self, on_result)

    async def aclose(self) -> None:
        return None


class _Stream:
    def __init__(self, owner: RecordingTranscriber, on_result: RecognitionCallback) -> None:
        self.owner, self.on_result = owner, on_result
        self.segment: str | None = None
        self.received = 0

    def start_segment(self, segment_id: str) -> bool:
        self.owner.calls.append(("start", segment_id))
        self.segment, self.received = segment_id, 0
        return True

    def write(self, pcm: bytes) -> None:
        self.owner.calls.append(("write", len(pcm)))
        self.received += len(pcm)

    def end_segment(self) -> None:
        self.owner.calls.append(("end", self.segment))
        assert self.segment is not None
        self.on_result(Recognition(self.segment, f"{self.received} bytes", True))
        self.segment = None

    def close(self) -> None:
        self.owner.calls.append(("close", None))


def test_speaker_pipeline_streams_segments_with_wall_clock_times(speech_dir: Path) -> None:
    fake = RecordingTranscriber()
    now = [1_000.0]
    results: list[tuple[str, SegmentTimes, Recognition]] = []
    pipeline = SpeakerPipeline(TapConfig(), fake, lambda s, t, r: results.append((s, t, r)),
                               clock=lambda: now[0])
    for frame in decode_audio_file(str(speech_dir / "weather.wav")):  # 48 kHz mono frames
        now[0] += frame.samples / 48_000
        pipeline.push_frame(frame)
    pipeline.close()
    kinds = [kind for kind, _ in fake.calls]
    assert kinds[0] == "start" and kinds[-2:] == ["end", "close"]
    assert kinds.count("start") == 1 and kinds.count("end") == 1
    # Audio goes in chunks of about chunk_s, never one frame at a time.
    writes = [size for kind, size in fake.calls if kind == "write"]
    assert all(isinstance(n, int) and n >= FRAME_BYTES * 4 for n in writes[:-1])
    (segment_id, times, result), = results
    assert result.final and result.text == f"{sum(writes)} bytes"  # type: ignore[arg-type]
    assert segment_id.startswith("seg_") and pipeline.open_results == 0
    # Times are on the wall clock that fed it: speech starts ~1 s after the first frame.
    assert times.end_s is not None
    assert 1_000.9 <= times.start_s <= 1_001.25
    assert times.start_s + 2.0 <= times.end_s <= now[0]


def test_a_gap_in_the_audio_moves_the_clock() -> None:
    """DTX or a paused sender: frames stop and resume. The media clock must jump with the wall
    clock instead of stamping later speech as if it followed on without the gap."""
    fake = RecordingTranscriber()
    now = [50.0]
    pipeline = SpeakerPipeline(TapConfig(), fake, lambda *a: None, clock=lambda: now[0])
    silence = bytes(640)
    pipeline.push_pcm(silence)
    now[0] += 5.0  # five seconds without audio
    pipeline.push_pcm(silence)
    # The second chunk ends "now", not 20 ms after the first one.
    assert pipeline.clock_s == pytest.approx(now[0], abs=0.001)


def rtp_frames(seconds: float, *, first_pts: int = 1234, voiced_from_s: float = 1.0,
               ) -> list[av.AudioFrame]:
    """20 ms 48 kHz mono frames as aiortc hands them over (``pts``: the RTP timestamp,
    ``time_base`` 1/48000): silence, then from ``voiced_from_s`` a loud tone, wrapping at
    2**32 like RTP's."""
    frames = []
    for i in range(round(seconds / 0.02)):
        t = i * 0.02
        level = 8000 if t >= voiced_from_s else 0
        samples = array("h", (round(level * math.sin(2 * math.pi * 220 * (t + k / 48_000)))
                              for k in range(960)))
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = 48_000
        frame.pts = (first_pts + i * 960) % (1 << 32)
        frame.time_base = Fraction(1, 48_000)
        frames.append(frame)
    return frames


def feed(frames: list[av.AudioFrame], arrivals: list[float]) -> SpeakerPipeline:
    clock = [0.0]
    pipeline = SpeakerPipeline(TapConfig(), RecordingTranscriber(), lambda *a: None,
                               clock=lambda: clock[0])
    for frame, at in zip(frames, arrivals):
        clock[0] = at
        pipeline.push_frame(frame)
    return pipeline


def test_a_late_burst_is_not_a_gap() -> None:
    """Issue 14: on a busy machine the tap's audio arrives late and then in a burst. That used
    to re-anchor the media clock at every stall, so a loaded tap stamped speech seconds later
    than it was said (and its latency looked shorter). With the sender's timestamps, a stall
    moves no time."""
    frames = rtp_frames(4.0)
    on_time = [100.0 + (i + 1) * 0.02 for i in range(len(frames))]
    stalled = list(on_time)
    for i in range(50, 150):  # 1.0-3.0 s: the process stalls 2 s, then catches up at once
        stalled[i] = max(on_time[i], on_time[149] + 0.001 * (i - 49))
    quiet, busy = feed(frames, on_time), feed(frames, stalled)
    assert busy.stream_start_s == pytest.approx(quiet.stream_start_s, abs=1e-6)
    assert busy.clock_s == pytest.approx(100.0 + 4.0, abs=0.005)
    # Caught up at the end: not behind.
    assert busy.arrival_lag_s == pytest.approx(0.0, abs=0.005) and not busy.degraded


def test_audio_arriving_late_makes_the_speaker_delayed() -> None:
    """A starved tap hears speech late before any recogniser is behind (a loaded run had
    finals 7-12 s after the speech while the room was never told): audio arriving a fifth of
    ``max_backlog_s`` (3 s) late makes the speaker's transcription degraded."""
    frames = rtp_frames(6.0)
    on_time = [100.0 + (i + 1) * 0.02 for i in range(len(frames))]
    late = on_time[:100] + [t + 3.5 for t in on_time[100:]]  # from 2 s on, 3.5 s late
    pipeline = feed(frames, late)
    assert pipeline.arrival_lag_s == pytest.approx(3.5, abs=0.005)
    assert pipeline.behind_s >= 3.5 and pipeline.degraded
    assert not feed(frames[:150], on_time[:100] + [t + 1.0 for t in on_time[100:150]]).degraded


def test_a_late_first_frame_does_not_shift_the_stream() -> None:
    """The first frame arrives 0.5 s late (the tap was busy joining), the rest on time: the
    clock takes the earliest-arriving audio, not the first."""
    frames = rtp_frames(2.0)
    arrivals = [100.0 + (i + 1) * 0.02 for i in range(len(frames))]
    arrivals[0] += 0.5
    assert feed(frames, arrivals).stream_start_s == pytest.approx(100.0, abs=0.005)


@pytest.mark.parametrize("first_pts", [1234, (1 << 32) - 960 * 60])  # the second wraps at 1.2 s
def test_a_timestamp_gap_moves_the_clock_by_the_senders_time(first_pts: int) -> None:
    """DTX: the sender sends nothing for 3 s and its timestamps run on. The frames after it
    are stamped 3 s later even when the gap's end arrives late and in a burst."""
    frames = rtp_frames(6.0, first_pts=first_pts)
    kept = frames[:50] + frames[200:]  # 1.0-4.0 s never sent
    arrivals = [100.0 + (i + 1) * 0.02 for i in range(50)] + \
        [106.5 + 0.001 * i for i in range(len(kept) - 50)]  # the rest comes late, at once
    pipeline = feed(kept, arrivals)
    assert pipeline.stream_start_s == pytest.approx(100.0, abs=0.005)
    assert pipeline.clock_s == pytest.approx(100.0 + 6.0, abs=0.005)
