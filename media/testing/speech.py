"""Support code for tests and benchmarks: the speech corpus.

Reference texts (jfk.flac's, and everyday sentences), speech made from them with espeak-ng and
silence around it with sox (both must be installed; the callers check), and any audio file as
the 16 kHz mono s16 PCM the tap's recogniser gets.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from media.sources import decode_audio_file
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


def speak(text: str, out: Path, *, lead_s: float = 1.0, tail_s: float = 1.5) -> Path:
    """espeak-ng ``text`` to ``out`` with ``lead_s``/``tail_s`` of silence (sox ``pad``), so the
    VAD sees speech start and end."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", *VOICE, "-w", str(raw), text], check=True)
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
