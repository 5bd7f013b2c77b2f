"""Support code for tests and benchmarks: the speech corpus.

Reference texts (jfk.flac's, and everyday sentences), speech made from them with espeak-ng and
silence around it with sox (both must be installed; the callers check), the short-utterance
corpus (:func:`short_utterances`: several espeak-ng voices taking turns, one short sentence each
after a second or more of silence), and any audio file as the 16 kHz mono s16 PCM the tap's
recogniser gets.
"""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from media.sources import SAMPLE_RATE, decode_audio_file
from media.tap.pipeline import Resampler

JFK_TEXT = ("and so my fellow americans ask not what your country can do for you "
            "ask what you can do for your country")
#: Two sentences with little vocabulary in common (for attributing speakers).
WEATHER = "the weather today is sunny with a light breeze from the west"
WINDOW = "open the window and let some fresh air into the room"
#: Everyday sentences for the accuracy corpus of ``bench/tap.py`` (with jfk.flac): chosen before
#: measuring anything with them, kept whatever pocketsphinx makes of them.
SENTENCES = (
    WEATHER,
    WINDOW,
    "we will meet again next week to talk about the budget",
    "please send me the report before the end of the day",
    "the children played in the park until it was dark",
    "i think we should start the project in the spring",
    "she bought a new car and drove it to the city",
    "can you hear me now or should i call you back later",
)
#: espeak-ng's Klatt voice at 150 words/min is the one pocketsphinx understands best of the
#: voices we tried (formant voices come out as near-random words).
VOICE = ("-v", "en-us+klatt2", "-s", "150")


def speak(text: str, out: Path, *, lead_s: float = 1.0, tail_s: float = 1.5,
          voice: Sequence[str] = VOICE) -> Path:
    """espeak-ng ``text`` to ``out`` with ``lead_s``/``tail_s`` of silence (sox ``pad``), so the
    VAD sees speech start and end; ``voice`` is espeak-ng's voice arguments."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", *voice, "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), str(out), "pad", str(lead_s), str(tail_s)], check=True)
    raw.unlink()
    return out


def pad(path: str, out: Path, *, lead_s: float = 1.0, tail_s: float = 2.0) -> Path:
    """``path`` with silence around it (sox)."""
    subprocess.run(["sox", path, str(out), "pad", str(lead_s), str(tail_s)], check=True)
    return out


def pcm16k(path: str | Path) -> bytes:
    """A file as 16 kHz mono s16, through the same resampler the tap uses."""
    resampler = Resampler()
    return b"".join(resampler.resample(frame) for frame in decode_audio_file(str(path)))


# --------------------------------------------------------------------------- short utterances

#: Short things said in a meeting, one breath each, for the short-utterance corpus: many open
#: with a weak word ("can", "the", "so") that a segmenter without pre-roll clips. Chosen before
#: measuring anything with them, kept whatever pocketsphinx makes of them.
SHORT_SENTENCES = (
    "can everyone hear me",
    "the next slide please",
    "thank you all for joining",
    "let me share my screen",
    "so what do you think",
    "the deadline is on friday",
    "i will send you the notes",
    "could you say that again",
    "that sounds good to me",
    "we are almost out of time",
    "please mute your microphone",
    "this is the last item",
    "good morning everyone",
    "do we have any questions",
    "my camera is not working",
    "see you next week",
)


@dataclass(frozen=True)
class Speaker:
    """A speaker of the short-utterance corpus: an espeak-ng voice and a microphone."""

    voice: str
    """espeak-ng's voice (``-v``)."""
    speed: int = 150
    """Words per minute (``-s``)."""
    pitch: int = 50
    """0..99 (``-p``)."""
    noise_dbfs: float | None = -70.0
    """RMS level of the background under the whole track (white noise: a microphone's noise
    floor), dBFS; ``None``: digital silence between sentences."""

    @property
    def args(self) -> tuple[str, ...]:
        """espeak-ng's arguments for this voice."""
        return ("-v", self.voice, "-s", str(self.speed), "-p", str(self.pitch))


#: The short-utterance corpus's speakers: espeak-ng's Klatt variants, which pocketsphinx
#: recognises well enough for a meaningful direct-decode baseline (the default formant voice
#: comes out as near-random words), over noise floors from a good to a poor microphone.
SHORT_SPEAKERS: dict[str, Speaker] = {
    "ann": Speaker("en-us+klatt2", 150, 50, -72.0),
    "bob": Speaker("en-us+klatt", 140, 40, -64.0),
    "cid": Speaker("en-us+klatt3", 160, 55, -78.0),
    "dee": Speaker("en-us+klatt5", 150, 70, -68.0),
}


@dataclass(frozen=True)
class Utterance:
    """One sentence of the short-utterance corpus."""

    speaker: str
    text: str
    path: Path
    """The sentence with ``margin_s`` of its track either side (48 kHz mono wav), digital
    silence at the ends trimmed: the direct decode's input, the audio the tap hears of it."""
    start_s: float
    """Its first sample's time in its speaker's track, seconds."""
    end_s: float
    """The time just after its last sample, seconds."""


@dataclass(frozen=True)
class ShortCorpus:
    """Speakers taking turns, each turn one short sentence: one track per speaker, all of the
    same length, only background while the others talk."""

    tracks: dict[str, Path]
    """Speaker -> 48 kHz mono s16 wav."""
    utterances: list[Utterance]
    """In speaking order."""
    duration_s: float

    def nearest(self, speaker: str, start_s: float, end_s: float) -> int:
        """The index of ``speaker``'s utterance nearest a segment from ``start_s`` to ``end_s``
        (track time) by the segment's middle: where its words belong."""
        middle = (start_s + end_s) / 2
        mine = [i for i, u in enumerate(self.utterances) if u.speaker == speaker]
        return min(mine, key=lambda i: max(self.utterances[i].start_s - middle,
                                           middle - self.utterances[i].end_s, 0.0))


def short_utterances(out_dir: Path, *, sentences: Sequence[str] = SHORT_SENTENCES,
                     speakers: dict[str, Speaker] | None = None, gap_s: float = 1.0,
                     lead_s: float = 1.0, tail_s: float = 2.0,
                     margin_s: float = 0.5) -> ShortCorpus:
    """The short-utterance corpus in ``out_dir``: sentence *i* is said by speaker *i* mod the
    number of speakers, ``gap_s`` of silence after each sentence before the next speaker's,
    ``lead_s`` before the first and ``tail_s`` after the last. espeak-ng's own silence around a
    sentence is cut off, so ``gap_s`` is the silence a speaker's VAD sees between turns (at
    least ``gap_s``; more when others talk in between). Each speaker's background noise is
    added under their whole track."""
    import numpy as np

    voices = SHORT_SPEAKERS if speakers is None else speakers
    names = list(voices)
    out_dir.mkdir(parents=True, exist_ok=True)
    spoken: list[tuple[str, str, bytes]] = []
    for i, text in enumerate(sentences):
        name = names[i % len(names)]
        raw = speak(text, out_dir / f"u{i:02d}-{name}.full.wav", lead_s=0.0, tail_s=0.0,
                    voice=voices[name].args)
        pcm = _trim_zeros(b"".join(bytes(f.planes[0])[: f.samples * 2]
                                   for f in decode_audio_file(str(raw))))
        raw.unlink()
        spoken.append((name, text, pcm))
    total = lead_s + sum(len(pcm) / 2 / SAMPLE_RATE + gap_s for *_, pcm in spoken) - gap_s \
        + tail_s
    length = round(total * SAMPLE_RATE)
    tracks = {name: np.zeros(length, dtype=np.int32) for name in names}
    places = []
    at = round(lead_s * SAMPLE_RATE)
    for name, text, pcm in spoken:
        samples = np.frombuffer(pcm, dtype=np.int16)
        tracks[name][at:at + len(samples)] = samples
        places.append((at, at + len(samples)))
        at += len(samples) + round(gap_s * SAMPLE_RATE)
    pcms = {}
    for k, name in enumerate(names):
        noise_dbfs = voices[name].noise_dbfs
        if noise_dbfs is not None:  # seeded: the same corpus every time
            sigma = 32767 * 10 ** (noise_dbfs / 20)
            tracks[name] += np.rint(np.random.default_rng(k).normal(0.0, sigma, length)) \
                .astype(np.int32)
        pcms[name] = np.clip(tracks[name], -32768, 32767).astype(np.int16).tobytes()
    margin = round(margin_s * SAMPLE_RATE) * 2
    utterances = []
    for i, ((name, text, _), (begin, end)) in enumerate(zip(spoken, places)):
        cut = pcms[name][max(0, begin * 2 - margin):end * 2 + margin]
        path = _write_wav(out_dir / f"u{i:02d}-{name}.wav", _trim_zeros(cut))
        utterances.append(Utterance(name, text, path, begin / SAMPLE_RATE, end / SAMPLE_RATE))
    paths = {name: _write_wav(out_dir / f"track-{name}.wav", pcm) for name, pcm in pcms.items()}
    return ShortCorpus(paths, utterances, length / SAMPLE_RATE)


def _trim_zeros(pcm: bytes) -> bytes:
    """s16 ``pcm`` without the exact-zero samples at either end."""
    import numpy as np

    samples = np.frombuffer(pcm, dtype=np.int16)
    live = np.flatnonzero(samples)
    if not live.size:
        return b""
    return samples[live[0]:live[-1] + 1].tobytes()


def _write_wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm)
    return path
