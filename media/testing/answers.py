"""Support code for tests and benchmarks: can a test bot play a scenario?

Each script step's documented answers (``example``) are spoken by the embedded voice
(:class:`media.agent.espeak.EspeakVoice`), optionally through an Opus round trip (what a
participant's microphone audio goes through on its way to the agent), recognised by
pocketsphinx (the tap's engine parameters, one decoder for the whole file) and matched by
the script brain: a row per answer says whether what pocketsphinx heard leads the script the
same way the written answer does.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from media.agent.espeak import EspeakVoice
from media.agent.interfaces import VoiceSpec
from media.agent.script import Script, normalise, parse_script
from media.tap.pocketsphinx_backend import DECODER_DEFAULTS, _text
from signaling.scenarios import Scenario


@dataclass(frozen=True)
class AnswerCheck:
    """One example answer after the round trip."""

    scenario: str
    step: str
    answer: int
    """Its index in the step's ``expect``."""
    text: str
    heard: str
    matched: int | None
    """The index of the answer the script matched to ``heard`` (``None``: none)."""

    @property
    def ok(self) -> bool:
        """pocketsphinx's words take the script where the written answer does."""
        return self.matched == self.answer


class Recogniser:
    """One pocketsphinx decoder (the tap's parameters, second pass on), decoding whole
    utterances with a batch cepstral mean (like the tap's primed first segment)."""

    def __init__(self, **options: Any) -> None:
        import pocketsphinx

        self._decoder = pocketsphinx.Decoder(**{**DECODER_DEFAULTS, **options})

    def decode(self, pcm16k: bytes) -> str:
        """16 kHz mono s16 ``pcm16k`` as words."""
        self._decoder.start_utt()
        self._decoder.process_raw(pcm16k, full_utt=True)
        self._decoder.end_utt()
        return _text(self._decoder.hyp())


def resample(pcm: bytes, rate: int, to: int) -> bytes:
    """Mono s16 ``pcm`` from ``rate`` to ``to`` Hz (FFmpeg's swresample)."""
    import av

    if rate == to:
        return pcm
    frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype=np.int16).reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to)
    out = [*resampler.resample(frame), *resampler.resample(None)]
    return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in out)


def opus_round_trip(pcm48k: bytes, *, bitrate: int = 32_000) -> bytes:
    """48 kHz mono s16 through libopus (20 ms frames) and back, as WebRTC carries it."""
    import av

    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48_000, "mono", "s16"
    encoder.bit_rate = bitrate
    encoder.open()
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate, decoder.layout = 48_000, "mono"
    to_s16 = av.AudioResampler(format="s16", layout="mono", rate=48_000)
    out = bytearray()
    samples = np.frombuffer(pcm48k, dtype=np.int16)
    step = 960
    for i in range(0, len(samples) - step + 1, step):
        frame = av.AudioFrame.from_ndarray(samples[i:i + step].reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = 48_000, i
        for packet in encoder.encode(frame):
            for decoded in decoder.decode(packet):
                for f in to_s16.resample(decoded):
                    out += bytes(f.planes[0])[: f.samples * 2]
    return bytes(out)


def with_room(pcm: bytes, rate: int, *, lead_s: float = 0.5, tail_s: float = 0.5,
              noise_dbfs: float = -70.0, seed: int = 0) -> bytes:
    """``pcm`` with ``lead_s``/``tail_s`` around it and a microphone's noise floor under all
    of it (pocketsphinx's noise and mean estimates need background, not digital zeros)."""
    speech = np.frombuffer(pcm, dtype=np.int16).astype(np.int32)
    lead, tail = round(lead_s * rate), round(tail_s * rate)
    track = np.zeros(lead + len(speech) + tail, dtype=np.int32)
    track[lead:lead + len(speech)] = speech
    sigma = 32767 * 10 ** (noise_dbfs / 20)
    track += np.rint(np.random.default_rng(seed).normal(0.0, sigma, len(track))).astype(np.int32)
    return np.clip(track, -32768, 32767).astype(np.int16).tobytes()


def write_wav(path: Path, pcm: bytes, rate: int) -> Path:
    """Mono s16 ``pcm`` as a WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


async def speak(voice: EspeakVoice, text: str, spec: VoiceSpec | None = None) -> bytes:
    """All of ``text`` from ``voice``."""
    return b"".join([chunk async for chunk in voice.speak(text, spec or VoiceSpec())])


def first_match(script: Script, step: str, words: Sequence[str]) -> int | None:
    """The index of the first of ``step``'s answers that ``words`` match."""
    return next((i for i, a in enumerate(script.steps[step].expect) if a.matches(words)),
                None)


def check_answers(scenarios: Iterable[Scenario], *, voice: EspeakVoice,
                  spec: VoiceSpec | None = None, opus: bool = False,
                  recogniser: Recogniser | None = None) -> list[AnswerCheck]:
    """Every example answer of every scenario's script, spoken, recognised and matched.
    Blocking (runs its own event loop for the voice)."""
    recogniser = recogniser or Recogniser()
    rows = []
    for scenario in scenarios:
        script = parse_script(scenario.script)
        if script is None:
            continue
        for name, step in script.steps.items():
            for i, answer in enumerate(step.expect):
                if not answer.example:
                    continue
                pcm = asyncio.run(speak(voice, answer.example, spec))
                pcm = with_room(pcm, voice.sample_rate)
                if opus:
                    pcm = resample(opus_round_trip(resample(pcm, voice.sample_rate, 48_000)),
                                   48_000, 16_000)
                else:
                    pcm = resample(pcm, voice.sample_rate, 16_000)
                heard = recogniser.decode(pcm)
                rows.append(AnswerCheck(scenario.id, name, i, answer.example, heard,
                                        first_match(script, name, normalise(heard))))
    return rows
