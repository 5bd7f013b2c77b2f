"""The persona library's embedded voice: espeak-ng's time to first PCM and synthesis speed per
variant, and which voices a test bot can play the shipped scenarios with.

1. Time to first audio: every line of the shipped scenarios' scripts (welcome, questions,
   replies, re-prompts) spoken ``ROUNDS`` times by :class:`media.agent.espeak.EspeakVoice`;
   the wall time from ``speak()`` to its first PCM chunk (process start, voice load, first
   clause), p50/p95, and the whole line's synthesis speed as a multiple of real time, with
   espeak-ng's CPU per second of speech.
2. Playability: every documented example answer spoken by each variant, recognised by
   pocketsphinx (the tap's decoder parameters) directly and after an Opus round trip, and
   matched by the script: how many lead the script where the written answer does
   (:mod:`media.testing.answers`).

Run: ``.venv/bin/python -m bench.agent_voices`` (about a minute).
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time

from media.agent.espeak import EspeakVoice
from media.agent.interfaces import VoiceSpec
from media.agent.script import check_script, parse_script
from media.testing.answers import Recogniser, check_answers
from signaling.scenarios import load_scenarios

ROUNDS = 3
VARIANTS = ("klatt2", "klatt", "klatt3", "klatt5", "")


def lines() -> list[str]:
    out = []
    for scenario in load_scenarios(check_script=check_script).values():
        out.append(scenario.persona.welcome_message)
        script = parse_script(scenario.script)
        assert script is not None
        for step in script.steps.values():
            out += [step.say, *step.reprompt, *(a.reply for a in step.expect if a.reply)]
    return [line for line in dict.fromkeys(out) if line]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def first_audio(variant: str, texts: list[str]) -> tuple[list[float], float, float]:
    voice = EspeakVoice(variant=variant)
    firsts: list[float] = []
    audio_s = wall_s = 0.0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        for _ in range(ROUNDS):
            for text in texts:
                start = time.perf_counter()
                got = 0
                async for chunk in voice.speak(text, VoiceSpec()):
                    if not got:
                        firsts.append(time.perf_counter() - start)
                    got += len(chunk)
                wall_s += time.perf_counter() - start
                audio_s += got / 2 / voice.sample_rate
    finally:
        await voice.aclose()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return firsts, audio_s / wall_s, cpu / audio_s


def main() -> None:
    texts = lines()
    print(f"== espeak-ng time to first PCM: {len(texts)} scenario lines x {ROUNDS}")
    print(f"{'variant':<10} {'first p50 ms':>13} {'first p95 ms':>13} {'x real time':>12} "
          f"{'CPU ms per s':>13}")
    for variant in VARIANTS:
        firsts, speed, cpu = asyncio.run(first_audio(variant, texts))
        print(f"{variant or 'default':<10} {statistics.median(firsts) * 1000:>13.1f} "
              f"{pct(firsts, 95) * 1000:>13.1f} {speed:>12.0f} {cpu * 1000:>13.1f}")
    scenarios = list(load_scenarios(check_script=check_script).values())
    recogniser = Recogniser()
    print("\n== shipped scenarios' example answers: espeak-ng -> pocketsphinx -> script "
          "(leads where the written answer does)")
    print(f"{'variant':<10} {'direct':>8} {'opus 32k':>9}   misses")
    for variant in VARIANTS:
        voice = EspeakVoice(variant=variant)
        cells, misses = [], []
        for opus in (False, True):
            rows = check_answers(scenarios, voice=voice, opus=opus, recogniser=recogniser)
            cells.append(f"{sum(r.ok for r in rows)}/{len(rows)}")
            misses += [f"{r.text!r}->{r.heard!r}" for r in rows if not r.ok and not opus]
        print(f"{variant or 'default':<10} {cells[0]:>8} {cells[1]:>9}   "
              f"{'; '.join(misses[:2])}{' ...' if len(misses) > 2 else ''}")


if __name__ == "__main__":
    main()
