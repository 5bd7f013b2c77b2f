"""The tap through a real hub: real aiortc bots send speech over WebRTC (loopback), the tap
joins as role ``tap``, and transcripts come back as ``transcript`` frames and from the API.

The hub's own tap (``tap.enabled``, a child process of the hub) is what ``connvo-rtc serve``
runs; tests that need other settings run their own :class:`TapWorker` on the hub's job queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from media import FileSpec, MediaTimeoutError, PeerClient, PeerClientConfig, ToneSpec
from media.tap.config import TapConfig
from media.tap.pipeline import FRAME_S
from media.tap.worker import TapWorker
from media.testing.speech import JFK_TEXT, WEATHER, WINDOW
from media.testing.wer import normalise, word_error_rate
from signaling import protocol
from signaling.app import HUB_KEY
from signaling.tapjobs import TapJob, TapJobs
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.waiting import wait_until

LOOPBACK = ("127.0.0.1",)


def bot(hub: HubHandle, token: str, **overrides: Any) -> PeerClientConfig:
    values: dict[str, Any] = {"ws_url": hub.ws_url, "token": token,
                              "pin_host_addresses": LOOPBACK, "ice_timeout_s": 10.0}
    values.update(overrides)
    return PeerClientConfig(**values)


@pytest.fixture
async def tap_hub() -> AsyncIterator[HubHandle]:
    """A hub running its tap worker (in a child process), as ``connvo-rtc serve`` does by
    default."""
    handle = await start_hub(test_settings(tap={"enabled": True}))
    try:
        yield handle
    finally:
        await handle.aclose()


@asynccontextmanager
async def own_worker(hub: HubHandle, **config: Any) -> AsyncIterator[TapWorker]:
    """A tap worker with test settings on ``hub``'s job queue (the hub's own is off)."""
    jobs: TapJobs = hub.app[HUB_KEY].transcripts.tap_jobs
    worker = TapWorker(jobs, hub_url=lambda: hub.ws_url, worker_id="tap-test",
                       config=TapConfig(pin_host_addresses=LOOPBACK, **config))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.aclose()
        await worker.aclose()  # idempotent


async def transcripts_until_quiet(client: PeerClient, *, after_s: float, quiet_s: float = 3.0,
                                  timeout: float = 45.0) -> list[protocol.Transcript]:
    """``transcript`` frames ``client`` receives: at least ``after_s`` seconds' worth, then
    until none came for ``quiet_s``."""
    got: list[protocol.Transcript] = []
    start = last = time.monotonic()
    with client.messages() as messages:
        async with asyncio.timeout(timeout):
            while time.monotonic() - start < after_s or time.monotonic() - last < quiet_s:
                try:
                    message = await messages.get(timeout=0.5)
                except MediaTimeoutError:  # a quiet half second
                    continue
                if isinstance(message, protocol.Transcript):
                    got.append(message)
                    last = time.monotonic()
    return got


async def stored(hub: HubHandle, meeting_id: str, user: str) -> list[dict[str, Any]]:
    status, body = await hub.call("transcripts/getTranscript", {"meetingId": meeting_id},
                                  user=user)
    assert status == 200, body
    return body["value"]["segments"]  # type: ignore[no-any-return]


def check_partials_then_final(frames: list[protocol.Transcript]) -> None:
    """Per segment: partials first, then exactly one final (which replaces them)."""
    by_segment: dict[str, list[protocol.Transcript]] = {}
    for frame in frames:
        by_segment.setdefault(frame.segment_id, []).append(frame)
    for segment_frames in by_segment.values():
        assert [f.final for f in segment_frames].count(True) == 1
        assert segment_frames[-1].final


# --------------------------------------------------------------------------- accuracy


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_jfk_over_webrtc_is_transcribed_within_the_word_error_budget(
    tap_hub: HubHandle, speech_dir: Path,
) -> None:
    """jfk.flac (1 s of silence before, 2 s after) played by an aiortc bot (aiortc's own Opus
    encoder) into a transcription room; the stored finals must have WER <= 0.45."""
    meeting_id, room_id = await tap_hub.create_room(host="alice", transcription=True)
    config = bot(tap_hub, tap_hub.mint_token(room_id, "alice", "host"),
                 audio=FileSpec(str(speech_dir / "jfk.wav"), loop=False))
    started = time.time()
    async with PeerClient(config) as alice:
        frames = await transcripts_until_quiet(alice, after_s=15.0)
        segments = await stored(tap_hub, meeting_id, "alice")
    text = " ".join(s["text"] for s in segments)
    wer = word_error_rate(JFK_TEXT, text)
    print(f"\njfk.flac over WebRTC: WER {wer:.3f} ({len(segments)} segments): {text!r}")
    assert wer <= 0.45
    # Attributed to alice, ordered, in ms since the meeting started, and what was broadcast
    # as final is exactly what was stored.
    assert {(s["peerId"], s["userId"]) for s in segments} == {(alice.peer_id, "alice")}
    starts = [s["startMs"] for s in segments]
    assert starts == sorted(starts) and all(s["endMs"] > s["startMs"] for s in segments)
    assert 0 <= starts[0] and segments[-1]["endMs"] <= (time.time() - started) * 1000 + 1000
    check_partials_then_final(frames)
    assert [f.segment_id for f in frames if f.final and f.text] == \
        [s["segmentId"] for s in segments]
    assert all(f.user_id == "alice" for f in frames)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_two_speakers_at_once_are_attributed_to_the_right_peer(
    tap_hub: HubHandle, speech_dir: Path,
) -> None:
    meeting_id, room_id = await tap_hub.create_room(host="alice", invite=("bob",),
                                                    transcription=True)
    alice_config = bot(tap_hub, tap_hub.mint_token(room_id, "alice", "host"),
                       audio=FileSpec(str(speech_dir / "weather.wav"), loop=False))
    bob_config = bot(tap_hub, tap_hub.mint_token(room_id, "bob"),
                     audio=FileSpec(str(speech_dir / "window.wav"), loop=False))
    async with PeerClient(alice_config) as alice, PeerClient(bob_config) as bob:
        await transcripts_until_quiet(alice, after_s=8.0)
        segments = await stored(tap_hub, meeting_id, "bob")
    said = {alice.peer_id: WEATHER, bob.peer_id: WINDOW}
    users = {alice.peer_id: "alice", bob.peer_id: "bob"}
    print("\n" + "\n".join(f"{users[s['peerId']]}: {s['text']!r}" for s in segments))
    assert {s["peerId"] for s in segments if s["text"]} == set(said)
    for segment in segments:
        words = set(normalise(segment["text"]))
        own = len(words & set(normalise(said[segment["peerId"]])))
        other = max(len(words & set(normalise(text))) for peer, text in said.items()
                    if peer != segment["peerId"])
        assert own > other, segment
        assert segment["userId"] == users[segment["peerId"]]


# --------------------------------------------------------------------------- lifecycle


@pytest.mark.slow
async def test_silent_participant_costs_no_recognition_and_tap_leaves_ended_room(
    hub: HubHandle,
) -> None:
    async with own_worker(hub) as worker:
        meeting_id, room_id = await hub.create_room(host="alice", transcription=True)
        config = bot(hub, hub.mint_token(room_id, "alice", "host"),
                     audio=ToneSpec(amplitude=0.0))  # a muted microphone: digital silence
        async with PeerClient(config) as alice:
            await wait_until(lambda: room_id in worker.sessions
                             and alice.peer_id in worker.sessions[room_id].pipelines,
                             timeout=20, interval=0.1, what="the tap listening to alice")
            pipeline = worker.sessions[room_id].pipelines[alice.peer_id]  # type: ignore[index]
            # Two seconds of her silence: what the checks below say nothing came of.
            await wait_until(lambda: pipeline.segmenter.frames_seen >= 2 / FRAME_S, timeout=20,
                             interval=0.1, what="two seconds of alice's audio at the tap")
            assert pipeline.segmenter.frames_seen > 40  # it hears her ...
            assert pipeline.segmenter.frames_vad == 0  # ... the level gate answers alone
            assert pipeline.segments == 0 and worker.transcriber is not None
            assert worker.transcriber.stats.audio_s == 0
            alice.send(protocol.End())
            await wait_until(lambda: not worker.sessions and worker.completed >= 1,
                             timeout=10, interval=0.1, what="the tap leaving the ended room")
        assert worker.claimed == 1 and worker.completed == 1
        assert await stored(hub, meeting_id, "alice") == []


@pytest.mark.slow
async def test_tap_leaves_an_empty_room_and_comes_back_with_the_next_participant(
    hub: HubHandle,
) -> None:
    async with own_worker(hub, linger_empty_s=1.0) as worker:
        _, room_id = await hub.create_room(host="alice", transcription=True)
        token = hub.mint_token(room_id, "alice", "host")
        async with PeerClient(bot(hub, token, audio=None)) as alice:
            await wait_until(lambda: any(p.role == "tap" for p in alice.room_peers.values()),
                             timeout=20, interval=0.1, what="the tap joining alice's room")
        # alice left: the tap follows after linger_empty_s
        await wait_until(lambda: not worker.sessions and worker.completed >= 1, timeout=10,
                         interval=0.1, what="the tap leaving the empty room")
        async with PeerClient(bot(hub, token, audio=None)) as alice:
            # the hub queues a new job; the tap returns
            await wait_until(lambda: any(p.role == "tap" for p in alice.room_peers.values()),
                             timeout=20, interval=0.1, what="the tap coming back")
        assert worker.claimed == 2


@pytest.mark.slow
async def test_a_worker_shutting_down_leaves_its_rooms_but_not_its_jobs(hub: HubHandle) -> None:
    """Regression: closing the worker ended the session's message stream, which the session
    took for the room ending, so the worker completed the job on its way out and the room
    was left without a tap for good. A clean shutdown must leave the job for another worker."""
    jobs: TapJobs = hub.app[HUB_KEY].transcripts.tap_jobs
    _, room_id = await hub.create_room(host="alice", transcription=True)
    async with PeerClient(bot(hub, hub.mint_token(room_id, "alice", "host"),
                              audio=None)) as alice:
        with alice.messages() as messages:
            async with own_worker(hub) as worker:
                await messages.wait_for(protocol.PeerJoined, 20, lambda m: m.peer.role == "tap")
            left = await messages.wait_for(protocol.PeerLeft, 5)
        assert left.reason == "left" and worker.completed == 0
        # The room's job is still open: the hub's enqueue of another one is refused.
        again = TapJob(job_id="tap_probe", room_id=room_id, meeting_id="m", token="t",
                       started_at_ms=0)
        assert not await jobs.enqueue(again)
