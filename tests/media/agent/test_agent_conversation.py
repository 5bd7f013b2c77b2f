"""The agent in a real room: a hub, a tap worker whose job carries the agent, and a person made
of an aiortc peer on loopback (:class:`~media.testing.agent_bot.PersonBot`) who speaks espeak-ng
Klatt clips and records what it hears.

- The default scenario (script brain, espeak-ng voice): the welcome is heard first; the person
  says the scenario's documented answers; the agent replies with the scripted lines;
  pocketsphinx on the audio the person *received* recovers each line (WER printed, bounded);
  the room's stored transcript holds both sides with their speakers.
- Barge-in: the person speaks over the agent; measured from the person's own audio, the agent
  falls silent within 200 ms of the person's first voiced sample going out, and the line is
  stored as interrupted with what was said of it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from media.tap.config import TapConfig
from media.tap.pocketsphinx_backend import decode_file_direct
from media.tap.worker import TapWorker
from media.testing.agent_bot import Clip, PersonBot, write_wav
from media.testing.speech import SENTENCES, SHORT_SENTENCES, speak
from media.testing.wer import word_error_rate
from signaling import protocol as p
from signaling.app import HUB_KEY
from signaling.scenarios import Scenario, load_scenarios
from signaling.testing.hub import HubHandle, start_hub
from signaling.testing.meetings import start_agent_meeting
from tests.conftest import require_binary
from tests.media.agent.fakes import LinesBrain, factory_of
from tests.waiting import wait_until

LOOPBACK = ("127.0.0.1",)
SPEC = p.AgentSpec(scenario_id="test", name="Alex")
#: The agent's lines (everyday sentences of the tap's corpus) and the person's answers.
LINES = (SENTENCES[2], SENTENCES[3], SENTENCES[4])
ANSWERS = (SHORT_SENTENCES[0], SHORT_SENTENCES[8])
#: A long line to be interrupted, and what the person says over it.
LONG_LINE = " ".join(SENTENCES[5:8])
BARGE_IN_BOUND_S = 0.2
WER_BOUND = 0.5


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    handle = await start_hub()
    try:
        yield handle
    finally:
        await handle.aclose()


async def agent_worker(hub: HubHandle, brains: list[LinesBrain], lines: tuple[str, ...]
                       ) -> TapWorker:
    worker = TapWorker(hub.app[HUB_KEY].transcripts.tap_jobs, hub_url=lambda: hub.ws_url,
                       worker_id="agent-test", config=TapConfig(pin_host_addresses=LOOPBACK),
                       agent_factory=factory_of(brains, lines))
    await worker.start()
    await worker.wait_warm()
    return worker


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    require_binary("espeak-ng")
    require_binary("sox")
    root = tmp_path_factory.mktemp("answers")
    return {text: Clip.from_file(speak(text, root / f"{i}.wav", lead_s=0.2, tail_s=0.2))
            for i, text in enumerate((*ANSWERS, SHORT_SENTENCES[3]))}


def recognise(pcm16k: bytes, path: Path) -> str:
    return decode_file_direct(str(write_wav(pcm16k, path)))


async def stored(hub: HubHandle, meeting_id: str) -> list[dict[str, Any]]:
    status, body = await hub.call("transcripts/getTranscript", {"meetingId": meeting_id},
                                  user="host")
    assert status == 200, body
    return body["value"]["segments"]  # type: ignore[no-any-return]


def default_scenario() -> Scenario:
    return load_scenarios()["interview-practice"]


def answers_of(scenario: Scenario) -> list[tuple[str, str, str]]:
    """The default path through the script: per step its first documented answer
    (``example``) and the reply the agent then opens with (or, if the answer was not
    recognised, the step's first re-prompt)."""
    steps = scenario.script["steps"]
    name, path = scenario.script["start"], []
    while name in steps and "expect" in steps[name]:
        answer = steps[name]["expect"][0]
        reprompt = steps[name]["reprompt"]
        path.append((answer["example"], answer["reply"],
                     reprompt[0] if isinstance(reprompt, list) else reprompt))
        name = answer["next"]
    return path


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_the_default_scenario_welcomes_hears_the_answers_and_replies_with_its_lines(
    hub: HubHandle, tmp_path: Path,
) -> None:
    """The person answers the default scenario with its documented answers (espeak-ng
    Klatt); the agent (the script brain and the espeak-ng voice, from the [agent] defaults)
    welcomes first and replies with the scripted lines; pocketsphinx on the audio the person
    received recovers each line."""
    scenario = default_scenario()
    path = answers_of(scenario)
    clips = {answer: Clip.from_file(speak(answer, tmp_path / f"answer-{i}.wav", lead_s=0.2,
                                          tail_s=0.2))
             for i, (answer, _, _) in enumerate(path)}
    worker = TapWorker(hub.app[HUB_KEY].transcripts.tap_jobs, hub_url=lambda: hub.ws_url,
                       worker_id="agent-test", config=TapConfig(pin_host_addresses=LOOPBACK))
    await worker.start()
    await worker.wait_warm()
    spec = p.AgentSpec(scenario_id=scenario.id, name=scenario.persona.name)
    try:
        meeting_id, room_id = await start_agent_meeting(hub, spec)
        heard: list[bytes] = []
        latencies: list[float] = []
        async with PersonBot(hub.ws_url, hub.mint_token(room_id, "alice", "host")) as bot:
            first = await bot.agent_speech(time.time(), timeout=30)
            last = await bot.agent_quiet(first)
            heard.append(bot.pcm_between(first - 0.1, last + 0.1))
            for answer, _, _ in path:
                said = await bot.say(clips[answer])
                first = await bot.agent_speech(said.end, timeout=15)
                latencies.append(first - said.end)
                last = await bot.agent_quiet(first)
                heard.append(bot.pcm_between(first - 0.1, last + 0.1))
            segments = await wait_until(
                lambda: _complete(stored(hub, meeting_id), 2 * len(path) + 1),
                timeout=10, what="every line in the stored transcript")
    finally:
        await worker.aclose()
    lines = [s["text"] for s in segments if s["userId"] == "agent"]
    print()
    wers = []
    for i, (line, pcm) in enumerate(zip(lines, heard, strict=True)):
        text = recognise(pcm, tmp_path / f"heard-{i}.wav")
        wers.append(word_error_rate(line, text))
        print(f"agent line {i}: WER {wers[-1]:.2f}  said {line!r}  heard {text!r}")
    pooled = word_error_rate(" ".join(lines), " ".join(
        recognise(pcm, tmp_path / f"pooled-{i}.wav") for i, pcm in enumerate(heard)))
    print(f"pooled WER {pooled:.2f}; the person's end of speech -> first agent audio: "
          + ", ".join(f"{s * 1000:.0f} ms" for s in latencies))
    print("stored: " + " | ".join(f"{s['userId']}: {s['text']}" for s in segments))
    # The welcome first, then one scripted line per answer: the answer's reply, or for the
    # last one possibly the step's re-prompt (recognition of "I work well in a team" by the
    # live tap varies: "i worked well in that scene" was heard once; docs/agent.md).
    assert lines[0].startswith(scenario.persona.welcome_message.split(",")[0])
    openings = [line.split(".")[0].split("?")[0] for line in lines[1:]]
    expected = [reply.rstrip(".") for _, reply, _ in path]
    assert openings[:-1] == expected[:-1], openings
    assert openings[-1] in (expected[-1], path[-1][2].rstrip("?")), openings
    speakers = [s["userId"] for s in segments]
    assert speakers == ["agent", *["alice", "agent"] * len(path)], segments
    assert not any(s["interrupted"] for s in segments)
    assert pooled <= WER_BOUND
    assert max(wers) <= 0.7, wers


def p_event(kind: str) -> Any:
    from media.agent.interfaces import BrainEvent
    return BrainEvent(kind)  # type: ignore[arg-type]


async def _complete(segments_call: Any, count: int) -> list[dict[str, Any]] | None:
    segments = await segments_call
    return segments if len(segments) >= count else None


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_barge_in_silences_the_agent_within_200_ms_and_marks_the_line_interrupted(
    hub: HubHandle, clips: dict[str, Clip],
) -> None:
    brains: list[LinesBrain] = []
    worker = await agent_worker(hub, brains, (LONG_LINE, LINES[1]))
    try:
        meeting_id, room_id = await start_agent_meeting(hub, SPEC)
        async with PersonBot(hub.ws_url, hub.mint_token(room_id, "alice", "host")) as bot:
            first = await bot.agent_speech(time.time(), timeout=30)
            await wait_until(lambda: time.time() - first > 1.5, timeout=5,
                             what="the agent a second and a half into its long line")
            said = await bot.say(clips[SHORT_SENTENCES[3]])
            # it answers the interruption with its next line
            await bot.agent_speech(said.end, timeout=15)
            silent = bot.fell_silent(said.onset)
            assert silent is not None
            stop_s = silent - said.onset
            segments = await wait_until(lambda: _complete(stored(hub, meeting_id), 2),
                                        timeout=10, what="the interrupted line stored")
            session = worker.sessions[room_id]
            assert session.agent is not None
            onset, stopped = session.agent.conversation.barge_ins[0]
    finally:
        await worker.aclose()
    print(f"\nbarge-in: the person's first voiced sample out -> the agent's last loud frame "
          f"in: {stop_s * 1000:.0f} ms (the agent heard the onset "
          f"{(onset - said.onset) * 1000:+.0f} ms and stopped "
          f"{(stopped - said.onset) * 1000:.0f} ms after it went out)")
    agent_line = segments[0]
    assert agent_line["userId"] == "agent" and agent_line["interrupted"], segments
    said_words = agent_line["text"].split()
    assert 0 < len(said_words) < len(LONG_LINE.split())
    assert LONG_LINE.startswith(agent_line["text"])
    assert any(e.kind == "interrupted" for e in brains[0].events)
    assert stop_s < BARGE_IN_BOUND_S


@pytest.mark.timeout(60)
async def test_a_meeting_naming_a_scenario_the_worker_lacks_completes_its_job(
    hub: HubHandle,
) -> None:
    """Regression: the factory's ValueError (no such scenario) failed the session, so the job
    was reclaimed and failed again every ``reclaim_after_s``, forever."""
    worker = TapWorker(hub.app[HUB_KEY].transcripts.tap_jobs, hub_url=lambda: hub.ws_url,
                       worker_id="agent-test", config=TapConfig(pin_host_addresses=LOOPBACK))
    await worker.start()
    try:
        _, room_id = await start_agent_meeting(
            hub, p.AgentSpec(scenario_id="no-such-scenario", name="Nobody"))
        async with PersonBot(hub.ws_url, hub.mint_token(room_id, "alice", "host")):
            await wait_until(lambda: worker.completed == 1, timeout=30,
                             what="the job completed")
            assert worker.claimed == 1 and not worker.sessions
    finally:
        await worker.aclose()
