"""Speech fixtures for the tap tests: espeak-ng sentences with silence around them (sox), made
once per run. The corpus and its helpers are :mod:`media.testing.speech`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from media.testing.speech import WEATHER, WINDOW, pad, speak
from tests.conftest import require_binary
from tests.support.paths import JFK


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
