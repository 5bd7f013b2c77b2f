"""The agent: voice-to-voice latency over many turns, with its breakdown, and its CPU.

    .venv/bin/python -m bench.agent [--meetings 8] [--concurrent 3] [--json FILE]

The embedded stack: the default scenario (``interview-practice``: the script brain), the
espeak-ng voice, pocketsphinx through the tap's recogniser process, a hub and a person made of
an aiortc peer on loopback (:class:`~media.testing.agent_bot.PersonBot`) who says the
scenario's documented answers (espeak-ng Klatt).

1. **Latency.** ``--meetings`` meetings one after another, each the welcome and three turns,
   the agent in a tap worker in this process (its :class:`~media.agent.conversation.TurnTimes`
   read directly). Per turn: the person's end of speech (their last voiced sample going out,
   as the bot sent it) -> the first loud frame of the agent's reply arriving at the person
   (decoded, after aiortc's fixed 80 ms audio jitter buffer): **voice-to-voice**. Its
   breakdown from the agent's timestamps (one clock, one machine):
   end of turn (the person's speech reaching the agent and the segmenter's hang-over),
   recognition (segment end -> final), brain (final -> first text), voice (first text ->
   first PCM), out (first PCM -> its first frame sent), and to the person (first frame sent ->
   the first loud frame there: network, jitter buffer, and the voice's own leading silence).
2. **CPU.** ``--concurrent`` meetings at once with the hub's own tap process (as ``connvo-rtc
   serve`` runs it): the CPU of that process and its recogniser process (``/proc``) over the
   conversations, per conversation (share of a core), and conversations per core.

Prints one table with the targets (p50 <= 800 ms, p95 <= 1.2 s) and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from media.agent.conversation import TurnTimes
from media.tap.config import TapConfig
from media.tap.worker import TapWorker
from media.testing.agent_bot import Clip, PersonBot
from media.testing.speech import speak
from signaling import protocol as p
from signaling.app import HUB_KEY, TAP_HOST_KEY
from signaling.scenarios import Scenario, load_scenarios
from signaling.testing.hub import HubHandle, start_hub, test_settings
from signaling.testing.meetings import start_agent_meeting

LOOPBACK = ("127.0.0.1",)
TARGET_P50_S, TARGET_P95_S = 0.8, 1.2
SCENARIO = "interview-practice"


@dataclass
class Turn:
    """One measured turn (seconds)."""

    v2v: float
    end_of_turn: float | None
    recognition: float | None
    brain: float | None
    voice: float | None
    out: float | None
    to_person: float | None
    heard: str
    said: str


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def answers(scenario: Scenario) -> list[str]:
    steps = scenario.script["steps"]
    name, out = scenario.script["start"], []
    while name in steps and "expect" in steps[name]:
        answer = steps[name]["expect"][0]
        out.append(answer["example"])
        name = answer["next"]
    return out


async def converse(hub: HubHandle, clips: list[Clip], spec: p.AgentSpec, user: str
                   ) -> tuple[str, list[tuple[float, float]]]:
    """One meeting: the welcome, then each clip as a turn. Returns the room and per turn
    (the person's end of speech, the agent's first loud frame at the person)."""
    _, room_id = await start_agent_meeting(hub, spec, host=user)
    marks: list[tuple[float, float]] = []
    async with PersonBot(hub.ws_url, hub.mint_token(room_id, user, "host")) as bot:
        first = await bot.agent_speech(time.time(), timeout=60)
        await bot.agent_quiet(first)
        for clip in clips:
            said = await bot.say(clip)
            arrival = await bot.agent_speech(said.end, timeout=20)
            marks.append((said.end, arrival))
            await bot.agent_quiet(arrival)
    return room_id, marks


def turns_of(marks: list[tuple[float, float]], times: list[TurnTimes]) -> list[Turn]:
    replies = [t for t in times if t.kind == "turn"]
    out = []
    for (end, arrival), t in zip(marks, replies, strict=False):
        out.append(Turn(
            v2v=arrival - end, end_of_turn=_diff(t.segment_end, end),
            recognition=_diff(t.final, t.segment_end), brain=_diff(t.first_text, t.final),
            voice=_diff(t.first_audio, t.first_text), out=_diff(t.first_sent, t.first_audio),
            to_person=_diff(arrival, t.first_sent), heard=t.heard, said=t.said))
    return out


async def latency(meetings: int, clips: list[Clip], spec: p.AgentSpec) -> list[Turn]:
    hub = await start_hub()
    jobs = hub.app[HUB_KEY].transcripts.tap_jobs
    assert jobs is not None
    worker = TapWorker(jobs, hub_url=lambda: hub.ws_url,
                       worker_id="bench-agent", config=TapConfig(pin_host_addresses=LOOPBACK))
    await worker.start()
    await worker.wait_warm()
    turns: list[Turn] = []
    try:
        for i in range(meetings):
            room_id, marks = await converse(hub, clips, spec, f"person{i}")
            session = worker.sessions.get(room_id)
            if session is None or session.agent is None:
                raise RuntimeError("the agent's session is gone before it was read")
            turns += turns_of(marks, list(session.agent.conversation.turns))
            print(f"  meeting {i + 1}/{meetings}: "
                  + ", ".join(f"{t.v2v * 1000:.0f}" for t in turns[-len(marks):]) + " ms")
    finally:
        await worker.aclose()
        await hub.aclose()
    return turns


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, parent in parents.items() if parent in frontier]
        out += frontier
    return out


def cpu_s(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


async def cpu(concurrent: int, clips: list[Clip], spec: p.AgentSpec) -> dict[str, float]:
    hub = await start_hub(test_settings(tap={"enabled": True}))
    try:
        host = hub.app[TAP_HOST_KEY]
        while not host.warm:
            await asyncio.sleep(0.1)
        pid = host.pid
        assert pid is not None
        pids = _tree(pid)
        idle0, t0 = cpu_s(pids), time.monotonic()
        await asyncio.sleep(5)
        idle_share = (cpu_s(pids) - idle0) / (time.monotonic() - t0)
        before, start = cpu_s(_tree(pid)), time.monotonic()
        await asyncio.gather(*(converse(hub, clips, spec, f"cpu{i}")
                               for i in range(concurrent)))
        used, wall = cpu_s(_tree(pid)) - before, time.monotonic() - start
    finally:
        await hub.aclose()
    per = max(0.0, used / wall - idle_share) / concurrent
    return {"concurrent": concurrent, "wall_s": wall, "cpu_s": used,
            "idle_core_share": idle_share, "core_share_per_conversation": per,
            "conversations_per_core": 1 / per if per > 0 else float("inf")}


def table(turns: list[Turn], usage: dict[str, float], load: str) -> str:
    rows = [("voice-to-voice (end of speech -> first agent audio at the person)", "v2v"),
            ("  end of turn (transport in + hang-over)", "end_of_turn"),
            ("  recognition (segment end -> final)", "recognition"),
            ("  brain (final -> first text)", "brain"),
            ("  voice (first text -> first PCM)", "voice"),
            ("  out (first PCM -> first frame sent)", "out"),
            ("  to the person (frame sent -> first loud frame there)", "to_person")]
    lines = [f"{'':66} {'p50':>7} {'p95':>7} {'target':>12}"]
    for label, key in rows:
        values = [v for t in turns if (v := getattr(t, key)) is not None]
        if not values:
            continue
        target = f"{TARGET_P50_S * 1000:.0f} / {TARGET_P95_S * 1000:.0f}" if key == "v2v" else ""
        lines.append(f"{label:66} {pct(values, .5) * 1000:6.0f}ms {pct(values, .95) * 1000:6.0f}ms "
                     f"{target:>12}")
    v2v = [t.v2v for t in turns]
    ok = pct(v2v, .5) <= TARGET_P50_S and pct(v2v, .95) <= TARGET_P95_S
    lines.append(f"turns: {len(turns)}; mean {statistics.mean(v2v) * 1000:.0f} ms; "
                 f"targets {'met' if ok else 'NOT met'}")
    lines.append(
        f"CPU (the hub's tap process + its recogniser, {usage['concurrent']:.0f} conversations "
        f"at once for {usage['wall_s']:.0f} s): {usage['core_share_per_conversation'] * 100:.1f} "
        f"% of a core per conversation (idle: {usage['idle_core_share'] * 100:.1f} %), "
        f"{usage['conversations_per_core']:.0f} conversations per core")
    lines.append(f"cores: {os.cpu_count()}; load: {load}")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meetings", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scenario = load_scenarios()[SCENARIO]
    spec = p.AgentSpec(scenario_id=scenario.id, name=scenario.persona.name)
    with tempfile.TemporaryDirectory() as tmp:
        clips = [Clip.from_file(speak(text, Path(tmp) / f"{i}.wav", lead_s=0.2, tail_s=0.2))
                 for i, text in enumerate(answers(scenario))]
    print(f"latency: {args.meetings} meetings of {len(clips)} turns")
    turns = await latency(args.meetings, clips, spec)
    print(f"CPU: {args.concurrent} conversations at once")
    usage = await cpu(args.concurrent, clips, spec)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print()
    print(table(turns, usage, " ".join(load)))
    if args.json:
        args.json.write_text(json.dumps({"turns": [asdict(t) for t in turns],
                                         "cpu": usage, "load": load}, indent=1))



if __name__ == "__main__":
    asyncio.run(main())
