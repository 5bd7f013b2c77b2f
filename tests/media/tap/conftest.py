"""Speech fixtures for the tap tests: espeak-ng sentences with silence around them (sox), made
once per run, and word error rate."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.support.paths import JFK

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


def normalise(text: str) -> list[str]:
    """Lowercase words without punctuation."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference length, after :func:`normalise`."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[:], i
        for j, h in enumerate(hyp, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r != h))
    return row[-1] / max(1, len(ref))


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


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Generated speech: ``weather.wav``, ``window.wav`` (espeak-ng) and ``jfk.wav`` (padded)."""
    require_binary("espeak-ng")
    require_binary("sox")
    root = tmp_path_factory.mktemp("speech")
    speak(WEATHER, root / "weather.wav")
    speak(WINDOW, root / "window.wav")
    pad(JFK, root / "jfk.wav")
    yield root
