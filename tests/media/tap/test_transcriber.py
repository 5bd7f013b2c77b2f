"""Transcribers: the registry, the configuration, one contract suite run against every
back-end, the process pool's back-pressure and crash recovery, and pocketsphinx on jfk.flac."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from media.tap.config import TapConfig
from media.tap.pipeline import SegmentTimes, SpeakerPipeline
from media.tap.pocketsphinx_backend import (
    EngineBusyError,
    PocketsphinxEngine,
    decode_file_direct,
)
from media.tap.procpool import ProcessTranscriber
from media.tap.transcriber import (
    BYTES_PER_SECOND,
    Recognition,
    Transcriber,
    UnknownTranscriberError,
    create_transcriber,
    resolve,
)
from media.testing.speech import JFK_TEXT, pcm16k
from media.testing.wer import word_error_rate
from tests.support.paths import JFK
from tests.waiting import wait_until

COUNTING = "tests.media.tap.test_transcriber:CountingEngine"


class CountingEngine:
    """A test engine for :class:`ProcessTranscriber`: "hears" the number of bytes it got.
    Options: ``seconds_per_second`` makes it that slow (sleeps), ``fail`` makes ``begin``
    raise, ``hold`` (a directory) makes the first ``accept`` create ``busy`` there and wait for
    ``go``: the test sees when the engine is busy and says when it is done."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.slow = float(options.get("seconds_per_second", 0.0))
        self.fail = bool(options.get("fail", False))
        self.hold = Path(options["hold"]) if options.get("hold") else None
        self.bytes: dict[str, int] = {}

    def begin(self, stream_id: str) -> None:
        if self.fail:
            raise RuntimeError("told to fail")
        self.bytes[stream_id] = 0

    def accept(self, stream_id: str, pcm: bytes) -> None:
        self.bytes[stream_id] += len(pcm)
        if self.hold is not None:
            hold, self.hold = self.hold, None
            (hold / "busy").touch()
            deadline = time.monotonic() + 30
            while not (hold / "go").exists():  # a busy engine: the parent's input queues up
                if time.monotonic() > deadline:
                    raise RuntimeError("the test never said go")
                time.sleep(0.005)
        if self.slow:
            time.sleep(len(pcm) / BYTES_PER_SECOND * self.slow)

    def partial(self, stream_id: str) -> str:
        return f"{self.bytes[stream_id]}"

    def end(self, stream_id: str) -> str:
        return f"{self.bytes.pop(stream_id)} bytes"

    def forget(self, stream_id: str) -> None:
        self.bytes.pop(stream_id, None)

    def close(self) -> None:
        pass


class Results:
    """Collects one stream's results and lets a test wait for finals."""

    def __init__(self) -> None:
        self.items: list[Recognition] = []
        self.changed = asyncio.Event()

    def __call__(self, result: Recognition) -> None:
        self.items.append(result)
        self.changed.set()

    @property
    def finals(self) -> list[Recognition]:
        return [r for r in self.items if r.final]

    async def wait_finals(self, count: int, timeout: float = 20.0) -> list[Recognition]:
        async with asyncio.timeout(timeout):
            while len(self.finals) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.finals


# --------------------------------------------------------------------------- registry, config


def test_registry_resolves_names_and_import_paths() -> None:
    from media.tap import pocketsphinx_backend

    assert resolve("pocketsphinx") is pocketsphinx_backend.create
    factory = resolve("tests.media.tap.test_transcriber:counting_factory")
    transcriber = factory(TapConfig(processes=2))
    assert isinstance(transcriber, ProcessTranscriber) and len(transcriber.backlog_s()) == 2
    for bad in ("nope", "no.such.module:x", "media.tap.transcriber:nothing_here"):
        with pytest.raises(UnknownTranscriberError):
            create_transcriber(TapConfig(recognizer=bad))


def counting_factory(config: TapConfig) -> Transcriber:
    """What a third-party back-end's factory looks like (see docs/transcription.md)."""
    return ProcessTranscriber(COUNTING, processes=config.processes,
                              partial_interval_s=config.partial_interval_s)


@pytest.mark.parametrize("bad", [
    {"processes": 0}, {"renew_every_s": 20.0}, {"vad_mode": 4}, {"speech_ratio": 0},
    {"pin_host_addresses": ("not-an-ip",)}, {"recognizer": ""}, {"max_backlog_s": 0},
])
def test_config_rejects_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TapConfig(**bad)


# --------------------------------------------------------------------------- contract


@pytest.fixture(params=["counting", "pocketsphinx"])
async def transcriber(request: pytest.FixtureRequest) -> AsyncIterator[ProcessTranscriber]:
    if request.param == "counting":
        instance = ProcessTranscriber(COUNTING, partial_interval_s=0.1)
    else:
        instance = create_transcriber(TapConfig(partial_interval_s=0.1))  # type: ignore[assignment]
    await instance.start()
    try:
        yield instance
    finally:
        await instance.aclose()
        await instance.aclose()  # idempotent


async def test_contract_every_segment_gets_one_final_after_its_partials(
    transcriber: ProcessTranscriber,
) -> None:
    results = Results()
    stream = transcriber.open_stream(results, name="contract")
    second = bytes(BYTES_PER_SECOND)
    for segment in ("a", "b"):
        assert stream.start_segment(segment)
        for offset in range(0, len(second), 3840):
            stream.write(second[offset:offset + 3840])
        stream.end_segment()
    stream.write(b"\x00" * 640)  # outside a segment: ignored
    finals = await results.wait_finals(2)
    assert [f.segment_id for f in finals] == ["a", "b"]
    for segment in ("a", "b"):
        mine = [r for r in results.items if r.segment_id == segment]
        assert mine[-1].final and not any(r.final for r in mine[:-1])
        assert mine[-1].audio_s == pytest.approx(1.0, abs=0.01)
    # Closing with a segment open still yields its final.
    stream.start_segment("c")
    stream.write(second[:6400])
    stream.close()
    stream.close()
    assert [f.segment_id for f in await results.wait_finals(3)] == ["a", "b", "c"]
    stats = transcriber.stats
    assert stats.segments == 3 and stats.finals == 3 and stats.dropped_segments == 0
    assert stats.audio_s == pytest.approx(2.2, abs=0.05) and stats.real_time_factor is not None
    if isinstance(transcriber.options, dict) and "seconds_per_second" not in transcriber.options:
        assert len(stats.final_latency_s) == 3


# --------------------------------------------------------------------------- the process pool


async def test_a_recogniser_that_falls_behind_drops_segments_instead_of_queueing() -> None:
    slow = ProcessTranscriber(COUNTING, options={"seconds_per_second": 4.0}, max_backlog_s=0.5)
    await slow.start()
    try:
        results = Results()
        stream = slow.open_stream(results)
        assert stream.start_segment("first")
        stream.write(bytes(BYTES_PER_SECOND))  # 4 s of work for a 0.5 s budget
        stream.end_segment()
        assert not stream.start_segment("second")  # refused: the backlog is 1 s > 0.5 s
        stream.write(bytes(3200))
        stream.end_segment()
        finals = await results.wait_finals(2)
        assert {f.segment_id: f.dropped for f in finals} == {"first": False, "second": True}
        assert slow.stats.dropped_segments == 1
    finally:
        await slow.aclose()


async def test_a_killed_recogniser_is_restarted_and_its_segments_end_empty() -> None:
    pool = ProcessTranscriber(COUNTING, options={"seconds_per_second": 1.0})
    await pool.start()
    try:
        results = Results()
        stream = pool.open_stream(results)
        stream.start_segment("doomed")
        stream.write(bytes(BYTES_PER_SECOND))
        (pid,) = pool.processes
        os.kill(pid, signal.SIGKILL)
        (final,) = await results.wait_finals(1)
        assert final.segment_id == "doomed" and final.dropped and final.text == ""
        await wait_until(lambda: pool.processes, timeout=30, interval=0.05,
                         what="the recogniser process being restarted")
        assert pool.processes != [pid] and pool.stats.restarts == 1
        stream.start_segment("after")
        stream.write(bytes(3200))
        stream.end_segment()
        finals = await results.wait_finals(2)
        assert finals[-1].text == "3200 bytes" and not finals[-1].dropped
    finally:
        await pool.aclose()


async def test_engine_errors_drop_one_segment_and_start_failures_are_reported() -> None:
    failing = ProcessTranscriber(COUNTING, options={"fail": True})
    await failing.start()
    try:
        results = Results()
        stream = failing.open_stream(results)
        stream.start_segment("x")
        stream.end_segment()
        (final,) = await results.wait_finals(1)
        assert final.dropped and failing.processes  # the process lives on
    finally:
        await failing.aclose()
    assert failing.stats.dropped_segments == 1
    broken = ProcessTranscriber("tests.media.tap.test_transcriber:NoSuchEngine",
                                start_timeout_s=30)
    with pytest.raises(RuntimeError, match="exited while starting"):
        await broken.start()
    await broken.aclose()


async def test_a_segment_end_goes_ahead_of_other_speakers_queued_audio(tmp_path: Path) -> None:
    """Regression (bench/tap.py, 4 speakers on one process): the child handled its input in
    arrival order, so once it had fallen behind, a speaker's end of segment waited for every
    other speaker's queued audio to be decoded and the final came seconds late. Now a batch
    hands each speaker's audio over in one call and an end goes ahead of the others' audio."""
    # A partial after every 0.1 s of audio handed to the engine: its text (the counting
    # engine's byte count) says how much of the talker's audio had been decoded at any point.
    slow = ProcessTranscriber(COUNTING, options={"seconds_per_second": 0.5,
                                                 "hold": str(tmp_path)},
                              partial_interval_s=0.1, warmup_s=0)  # the hold is the talker's
    await slow.start()
    try:
        events: list[tuple[str, bool, str]] = []  # (segment, final, text), in arrival order

        def record(result: Recognition) -> None:
            events.append((result.segment_id, result.final, result.text))

        talker, quick = slow.open_stream(record), slow.open_stream(record)
        assert talker.start_segment("long")
        talker.write(bytes(BYTES_PER_SECOND))  # the child is busy with this ...
        await wait_until(lambda: (tmp_path / "busy").exists(),
                         what="the engine busy with the talker's first second")
        for _ in range(30):  # ... while 3 s more (1.5 s of work) queue up behind it
            talker.write(bytes(BYTES_PER_SECOND // 10))
        assert quick.start_segment("short")
        quick.write(bytes(3200))
        quick.end_segment()
        talker.end_segment()
        (tmp_path / "go").touch()
        await wait_until(lambda: sum(final for _, final, _ in events) == 2, timeout=20,
                         what="both finals")
        short_at = events.index(("short", True, "3200 bytes"))
        decoded = [int(text) for segment, final, text in events[:short_at]
                   if segment == "long" and not final]
        # Not behind the queued work: only the talker's first second was decoded before it.
        assert max(decoded, default=0) <= BYTES_PER_SECOND, events
        assert events[-1] == ("long", True, f"{4 * BYTES_PER_SECOND} bytes")
    finally:
        await slow.aclose()


async def test_a_segment_failing_while_its_speaker_still_talks(speech_dir: Any) -> None:
    """Regression: when the recogniser gave up on a segment mid-speech (all decoders busy),
    its final arrived while the pipeline still had the segment open, the pipeline forgot the
    segment's times, and the next audio frame raised KeyError in the track consumer."""
    failing = ProcessTranscriber(COUNTING, options={"fail": True})
    await failing.start()
    finals: list[Recognition] = []
    try:
        pipeline = SpeakerPipeline(TapConfig(), failing,
                                   lambda _s, _t, r: finals.append(r) if r.final else None)
        pcm = pcm16k(speech_dir / "weather.wav")
        for offset in range(0, len(pcm), 640):
            pipeline.push_pcm(pcm[offset:offset + 640])
            if offset == BYTES_PER_SECOND * 2:  # mid-sentence: let the failure arrive
                await wait_until(lambda: finals, timeout=10, interval=0.01,
                                 what="the failed segment's final")
        pipeline.close()
    finally:
        await failing.aclose()
    assert [f.dropped for f in finals] == [True] and pipeline.open_results == 0


# --------------------------------------------------------------------------- pocketsphinx


def test_pocketsphinx_makes_a_spare_decoder_while_idle() -> None:
    """A new speaker used to wait while a decoder was made (~0.45 s, and every other speaker
    of the process with them: final p95 1.4 s at 4 speakers); the engine now makes the next
    one while the process is idle, up to ``decoders``."""
    engine = PocketsphinxEngine({"decoders": 3})
    try:
        assert engine.decoders_made == 1 and not engine.idle()  # one ready: nothing to do
        engine.begin("a")
        assert engine.idle() and engine.decoders_made == 2  # a spare for the next speaker
        assert not engine.idle()
        engine.begin("b")  # takes the spare
        assert engine.decoders_made == 2
        assert engine.idle() and engine.decoders_made == 3
        engine.begin("c")
        assert not engine.idle() and engine.decoders_made == 3  # the limit
        with pytest.raises(EngineBusyError):
            engine.begin("d")
        for stream in ("a", "b", "c"):
            assert engine.end(stream) == ""
    finally:
        engine.close()


@pytest.mark.slow
async def test_pocketsphinx_on_jfk_directly_and_through_the_pipeline() -> None:
    """The recogniser alone: jfk.flac decoded in one utterance (pocketsphinx's own way) and
    through the tap's pipeline (16 kHz resampling, VAD segments, streaming decode) without
    WebRTC. Prints both WERs."""
    direct = decode_file_direct(JFK)
    direct_wer = word_error_rate(JFK_TEXT, direct)
    transcriber = create_transcriber(TapConfig())
    await transcriber.start()
    finals: list[tuple[SegmentTimes, Recognition]] = []
    try:
        pipeline = SpeakerPipeline(TapConfig(), transcriber,
                                   lambda _s, times, r: finals.append((times, r)) if r.final
                                   else None)
        pcm = pcm16k(JFK) + bytes(BYTES_PER_SECOND)  # a second of silence to end the last
        for offset in range(0, len(pcm), 640):
            pipeline.push_pcm(pcm[offset:offset + 640])
        pipeline.close()
        await wait_until(lambda: not pipeline.open_results, timeout=40, interval=0.05,
                         what="every segment's final")
    finally:
        await transcriber.aclose()
    text = " ".join(r.text for _, r in sorted(finals, key=lambda f: f[0].start_s))
    pipeline_wer = word_error_rate(JFK_TEXT, text)
    print(f"\njfk.flac direct WER {direct_wer:.3f}: {direct!r}"
          f"\njfk.flac pipeline WER {pipeline_wer:.3f} ({len(finals)} segments): {text!r}")
    assert direct_wer <= 0.3
    assert pipeline_wer <= 0.6
