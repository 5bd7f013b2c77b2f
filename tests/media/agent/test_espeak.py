"""The embedded voice: espeak-ng streamed as PCM, voices mapped, barge-in kills it."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from media.agent.espeak import SAMPLE_RATE, EspeakVoice, resolve
from media.agent.interfaces import VoiceSpec

pytestmark = pytest.mark.usefixtures("espeak")

LONG = " ".join(["Thank you for joining this practice interview, it is good to meet you."] * 8)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_line_is_plausible_speech_at_22050_hz() -> None:
    voice = EspeakVoice()
    try:
        chunks = [c async for c in voice.speak("How many years of experience do you have?",
                                               VoiceSpec())]
    finally:
        await voice.aclose()
    assert voice.sample_rate == SAMPLE_RATE
    assert all(len(c) % 2 == 0 for c in chunks)
    samples = np.frombuffer(b"".join(chunks), dtype=np.int16)
    seconds = len(samples) / SAMPLE_RATE
    assert 1.5 < seconds < 5.0  # eight words at 150 words a minute: ~3 s
    assert np.abs(samples).max() > 3000  # speech, not silence
    assert voice.running == []


async def test_the_first_chunk_comes_while_espeak_still_runs() -> None:
    voice = EspeakVoice()
    stream = voice.speak(LONG, VoiceSpec())
    try:
        first = await anext(stream)
        assert first
        (pid,) = voice.running
        # a minute of speech does not fit the pipe: espeak-ng is still writing it
        assert alive(pid)
        total = len(first) + sum([len(c) async for c in stream])
        assert total / 2 / SAMPLE_RATE > 30
        assert not alive(pid)
    finally:
        await stream.aclose()
        await voice.aclose()


async def test_stopping_the_stream_kills_espeak_at_once() -> None:
    """Barge-in: the agent stops consuming a line mid-way; espeak-ng must not run on."""
    voice = EspeakVoice()
    stream = voice.speak(LONG, VoiceSpec())
    await anext(stream)
    (pid,) = voice.running
    assert alive(pid)
    await stream.aclose()
    assert not alive(pid)
    assert voice.running == []
    # aclose of the voice kills a line still running too, and twice is fine
    other = voice.speak(LONG, VoiceSpec())
    await anext(other)
    (pid,) = voice.running
    await voice.aclose()
    assert not alive(pid)
    await voice.aclose()
    await other.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await anext(voice.speak("Hi.", VoiceSpec()))


async def test_text_that_looks_like_options_is_spoken() -> None:
    voice = EspeakVoice()
    try:
        pcm = b"".join([c async for c in voice.speak("-v --help", VoiceSpec())])
        assert len(pcm) > SAMPLE_RATE // 2  # spoken, not taken as arguments
        assert [c async for c in voice.speak("   ", VoiceSpec())] == []
    finally:
        await voice.aclose()


def test_voices_and_languages_map_onto_espeak(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve(VoiceSpec()) == "en-us+klatt2"
    assert resolve(VoiceSpec(language="German")) == "de+klatt2"
    assert resolve(VoiceSpec(language="French")) == "fr-fr+klatt2"
    assert resolve(VoiceSpec(language="en-GB")) == "en-gb+klatt2"
    assert resolve(VoiceSpec(language="de-AT")) == "de+klatt2"
    assert resolve(VoiceSpec(language="Spanish")) == "es+klatt2"
    assert resolve(VoiceSpec(language="pt-BR"), variant="") == "pt-br"
    assert resolve(VoiceSpec(voice_id="en-gb+f3")) == "en-gb+f3"
    assert resolve(VoiceSpec(voice_id="de", language="English")) == "de+klatt2"
    with caplog.at_level(logging.INFO, logger="media.agent.espeak"):
        assert resolve(VoiceSpec(voice_id="6MoEUz34rbRrmmyxgRm4", language="Italian")) \
            == "it+klatt2"
        assert resolve(VoiceSpec(voice_id="en-us+nosuchvariant")) == "en-us+klatt2"
        assert resolve(VoiceSpec(language="Elvish")) == "en-us+klatt2"
    assert "'6MoEUz34rbRrmmyxgRm4' is not an espeak-ng voice" in caplog.text
    assert "no espeak-ng voice for language 'Elvish'" in caplog.text


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate 20 is outside 80..450"):
        EspeakVoice(rate=20)
    with pytest.raises(ValueError, match="variant 'nope' is not installed"):
        EspeakVoice(variant="nope")
