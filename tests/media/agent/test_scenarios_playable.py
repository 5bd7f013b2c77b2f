"""The shipped scenarios are playable by the test bot: every documented answer, spoken by the
embedded voice and heard by pocketsphinx (directly and through Opus), takes the script where
the written answer does."""

from __future__ import annotations

import pytest

from media.agent.espeak import EspeakVoice
from media.agent.script import check_script
from media.testing.answers import Recogniser, check_answers
from signaling.scenarios import load_scenarios

pytestmark = pytest.mark.usefixtures("espeak")


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("variant", ["klatt2", "klatt"])
@pytest.mark.parametrize("opus", [False, True], ids=["direct", "opus"])
def test_every_example_answer_survives_speech_and_recognition(variant: str,
                                                              opus: bool) -> None:
    scenarios = load_scenarios(check_script=check_script)
    rows = check_answers(scenarios.values(), voice=EspeakVoice(variant=variant), opus=opus,
                         recogniser=Recogniser())
    assert len(rows) >= 15
    failed = [f"{r.scenario}/{r.step}: {r.text!r} heard as {r.heard!r} -> answer {r.matched}"
              for r in rows if not r.ok]
    assert failed == []
