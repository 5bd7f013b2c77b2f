"""Role ``agent`` at the hub: only the hub mints it, it is a visible participant with a seat,
it never waits, and its lines (and only its own may be ``interrupted``) are stored.

The agent's token is the one the hub puts in the room's job (a real in-process hub; the
agent's socket is a plain websocket client: no media needed to check the hub's rules)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from signaling import protocol as p
from signaling.app import HUB_KEY
from signaling.tapjobs import TapJob, TapJobs
from signaling.testing.hub import HubHandle, start_hub
from signaling.testing.meetings import start_agent_meeting
from tests.support.wsclient import WsClient

SPEC = p.AgentSpec(scenario_id="interview-practice", name="Alex",
                   welcome_message="Hello, I am Alex.")


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    handle = await start_hub()
    try:
        yield handle
    finally:
        await handle.aclose()


async def the_job(hub: HubHandle) -> TapJob:
    jobs: TapJobs = hub.app[HUB_KEY].transcripts.tap_jobs
    job = await jobs.claim("test-worker", timeout_s=5)
    assert job is not None, "no job queued for the agent room"
    return job


async def test_the_api_never_mints_an_agent_token(hub: HubHandle) -> None:
    meeting_id, _ = await start_agent_meeting(hub, SPEC)
    status, body = await hub.call("webrtc/index/createJoinToken",
                                  {"meetingId": meeting_id, "role": "agent"})
    assert status == 400, body
    assert "agent" in body["errorMessage"], body


async def test_an_agent_room_gets_one_job_with_an_agent_token_and_the_agent_is_seen(
    hub: HubHandle,
) -> None:
    _, room_id = await start_agent_meeting(hub, SPEC, maxParticipants=2)
    person = await WsClient.connect(hub.ws_url)
    try:
        await person.join(hub.mint_token(room_id, "alice", "host"))
        job = await the_job(hub)
        assert job.agent == SPEC
        assert job.transcription  # the agent hears: the conversation is transcribed
        claims = hub.tokens.verify_join(job.token)
        assert (claims.role, claims.name, claims.room_id) == ("agent", "Alex", room_id)
        jobs: TapJobs = hub.app[HUB_KEY].transcripts.tap_jobs
        assert not await jobs.enqueue(job)  # one open job per room

        agent = await WsClient.connect(hub.ws_url)
        try:
            joined = await agent.join(job.token)
            assert joined.role == "agent"
            seen = await person.expect(p.PeerJoined)
            assert (seen.peer.role, seen.peer.name) == ("agent", "Alex")
            # The agent takes a seat: with room for two, a second person is refused.
            third = await WsClient.connect(hub.ws_url)
            try:
                await third.send({"type": "join",
                                  "token": hub.mint_token(room_id, "bob", "participant")})
                assert await third.expect_close() == 4409
            finally:
                await third.aclose()
            # No second job while the agent is there.
            assert await jobs.claim("test-worker-2", timeout_s=0.2) is None
        finally:
            await agent.aclose()
    finally:
        await person.aclose()


async def test_the_agent_skips_the_waiting_room_and_its_lines_are_stored(
    hub: HubHandle,
) -> None:
    meeting_id, room_id = await start_agent_meeting(
        hub, SPEC, waitingRoom=True, participantAudioEnabled=False)
    person = await WsClient.connect(hub.ws_url)
    agent = await WsClient.connect(hub.ws_url)
    try:
        await person.join(hub.mint_token(room_id, "alice", "host"))
        job = await the_job(hub)
        joined = await agent.join(job.token)  # a joined frame, not a waiting one
        me = joined.peer_id
        # Exempt from the participant controls: audio allowed though participants may not.
        await agent.send({"type": "media", "audio": True, "video": False, "screen": False})
        await agent.send({"type": "transcript", "peerId": me, "segmentId": "agent_1",
                          "text": "Hello, I am", "final": True, "startMs": 10, "endMs": 900,
                          "interrupted": True})
        line = await person.expect(p.Transcript)
        assert (line.peer_id, line.text, line.interrupted, line.user_id) == (
            me, "Hello, I am", True, "agent")
        # A host cannot ask the agent to mute (it is not a participant to control).
        await person.send({"type": "ask-mute", "peerId": me})
        refused = await person.expect(p.Error)
        assert refused.code == "unknown-peer"
        # Only the agent's own lines may be marked interrupted.
        await agent.send({"type": "transcript", "peerId": person.peer_id,
                          "segmentId": "seg_1", "text": "hi", "final": True, "startMs": 0,
                          "endMs": 5, "interrupted": True})
        error = await agent.expect(p.Error)
        assert error.code == "invalid-message"
        status, body = await hub.call("transcripts/getTranscript", {"meetingId": meeting_id},
                                      user="host")
        assert status == 200, body
        segments = body["value"]["segments"]
        assert [(s["userId"], s["text"], s["interrupted"]) for s in segments] == [
            ("agent", "Hello, I am", True)]
    finally:
        await agent.aclose()
        await person.aclose()
