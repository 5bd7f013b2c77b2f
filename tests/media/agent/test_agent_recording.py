"""The agent's own voice is recorded. The server peer that is the agent sends its audio and
never receives it, so the recorder (which writes the tracks the server peer *receives*) would
have kept only the person's side of a practice conversation: a meeting from a scenario
records by default (the seed's ``recordingEnabled`` defaults to true), and its mix had the
person answering silence. The agent's packets, as sent, are now a track of their own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from media.tap.config import TapConfig
from media.tap.pocketsphinx_backend import decode_file_direct
from media.tap.worker import TapWorker
from media.testing.agent_bot import PersonBot
from media.testing.wer import word_error_rate
from signaling import protocol as p
from signaling.app import HUB_KEY
from signaling.recording_storage import DirectoryStorage
from signaling.testing.hub import HubHandle, start_hub, test_settings
from signaling.testing.meetings import start_agent_meeting
from tests.media.agent.fakes import LinesBrain, factory_of
from tests.media.tap.test_recording import decoded, ready
from tests.waiting import wait_until

LINE = "The quick brown fox jumps over the lazy dog."
SPEC = p.AgentSpec(scenario_id="test", name="Alex")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_the_agents_voice_is_a_track_of_the_recording_and_in_the_mix(
    tmp_path: Path,
) -> None:
    hub: HubHandle = await start_hub(test_settings(recording={"dir": str(tmp_path / "rec")}))
    brains: list[LinesBrain] = []
    worker = TapWorker(hub.app[HUB_KEY].transcripts.tap_jobs, hub_url=lambda: hub.ws_url,
                       worker_id="agent-rec", agent_factory=factory_of(brains, (LINE,)),
                       config=TapConfig(pin_host_addresses=("127.0.0.1",),
                                        recording_dir=hub.settings.recording.dir))
    await worker.start()
    await worker.wait_warm()
    try:
        meeting_id, room_id = await start_agent_meeting(hub, SPEC, recordingEnabled=True)
        async with PersonBot(hub.ws_url, hub.mint_token(room_id, "alice", "host")) as bot:
            first = await bot.agent_speech(time.time(), timeout=30)
            await bot.agent_quiet(first)
            bot.client.send(p.End())
            await wait_until(lambda: worker.completed >= 1, timeout=20, interval=0.1,
                             what="the agent leaving the ended room")
        recording = await wait_until(lambda: ready(hub, meeting_id, "host"), timeout=60,
                                     interval=0.2, what="getRecording ready")
    finally:
        await worker.aclose()
        await hub.aclose()
    tracks = [f for f in recording["files"] if f["kind"] == "track"]
    agent_tracks = [f for f in tracks if f["userId"] == "agent:test"]
    assert len(agent_tracks) == 1, tracks
    storage = DirectoryStorage(hub.settings.recording.dir)
    agent_file = next(f for f in storage.files(meeting_id)
                      if f.meta.kind == "track" and f.meta.user_id == "agent:test")
    agent_path = storage.local_path(meeting_id, agent_file.name)
    assert agent_path is not None
    _, seconds, _ = decoded(agent_path)  # decodes as Opus
    heard = await asyncio.to_thread(decode_file_direct, str(agent_path))
    mix_path = storage.local_path(meeting_id, "mix.ogg")
    assert mix_path is not None
    in_mix = await asyncio.to_thread(decode_file_direct, str(mix_path))
    wer, mix_wer = word_error_rate(LINE, heard), word_error_rate(LINE, in_mix)
    print(f"\nagent track {seconds:.2f} s: {heard!r} WER {wer:.2f}; mix: {in_mix!r} "
          f"WER {mix_wer:.2f}")
    # The track holds the line (espeak-ng says it in about 2.5 s); pocketsphinx on the mix
    # (which has the meeting's lead-in before it) recovers it. On the bare track it does
    # worse (0.89 once): its first utterance of a stream is its weakest (docs/agent.md).
    assert seconds >= 2.5
    assert mix_wer <= 0.5
