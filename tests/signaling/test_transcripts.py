"""The hub's side of transcription: tap jobs, transcript frames from the tap, durable segments
and the getTranscript API."""

from __future__ import annotations

import pytest

from signaling import protocol as p
from signaling.app import HUB_KEY
from signaling.memory_store import MemoryStore
from signaling.redis_store import RedisStore, connect
from signaling.store import Segment
from signaling.tapjobs import MemoryTapJobs, RedisTapJobs, TapJob
from signaling.testing.hub import HubHandle
from signaling.testing.redis_server import RedisServer
from tests.support.wsclient import WsClient
from tests.waiting import wait_until


async def test_transcription_meeting_gets_a_tap_job(hub: HubHandle) -> None:
    jobs = hub.app[HUB_KEY].transcripts.tap_jobs
    assert isinstance(jobs, MemoryTapJobs)
    meeting_id, room_id = await hub.create_room(transcription=True)
    job = await jobs.claim("tap-1", timeout_s=1)
    assert job is not None and job.room_id == room_id and job.meeting_id == meeting_id
    claims = hub.tokens.verify_join(job.token)  # a hub-minted tap token for that room
    assert claims.role == "tap" and claims.room_id == room_id
    tap = await WsClient.connect(hub.ws_url)
    try:
        joined = await tap.join(job.token)
        assert joined.role == "tap" and joined.room_id == room_id
    finally:
        await tap.aclose()
    # A meeting without transcription queues nothing.
    await hub.create_room()
    assert await jobs.claim("tap-1", timeout_s=0.2) is None


async def test_tap_transcripts_reach_the_room_and_are_stored(hub: HubHandle) -> None:
    meeting_id, room_id = await hub.create_room(invite=("bob",), transcription=True)
    host = await WsClient.connect(hub.ws_url)
    bob = await WsClient.connect(hub.ws_url)
    tap = await WsClient.connect(hub.ws_url)
    try:
        jh = await host.join(hub.mint_token(room_id, "host", "host"))
        jb = await bob.join(hub.mint_token(room_id, "bob"))
        await tap.join(hub.mint_token(room_id, "tap", "tap"))
        frames = [
            {"type": "transcript", "peerId": jb.peer_id, "segmentId": "s1", "text": "ask not",
             "final": False, "startMs": 100, "endMs": 600},
            {"type": "transcript", "peerId": jb.peer_id, "segmentId": "s1",
             "text": "ask not what", "final": True, "startMs": 100, "endMs": 900},
            {"type": "transcript", "peerId": jh.peer_id, "segmentId": "s2", "text": "hello",
             "final": True, "startMs": 1000, "endMs": 1400},
        ]
        for frame in frames:
            await tap.send(frame)
        got = [await host.expect(p.Transcript) for _ in range(3)]
        assert [(t.segment_id, t.final, t.user_id) for t in got] == \
            [("s1", False, "bob"), ("s1", True, "bob"), ("s2", True, "host")]
        assert (await bob.expect(p.Transcript)).text == "ask not"
        # Only finals are stored; the API pages through them.
        status, body = await hub.call("transcripts/getTranscript",
                                      {"meetingId": meeting_id, "limit": 1})
        assert status == 200, body
        first = body["value"]
        assert [s["text"] for s in first["segments"]] == ["ask not what"]
        assert first["segments"][0]["userId"] == "bob" and first["nextCursor"]
        status, body = await hub.call("transcripts/getTranscript",
                                      {"meetingId": meeting_id, "cursor": first["nextCursor"]})
        assert [s["text"] for s in body["value"]["segments"]] == ["hello"]
        assert body["value"]["nextCursor"] == ""
        # Nobody else may pretend to be the tap; outsiders may not read the transcript.
        await bob.send(frames[0])
        assert (await bob.expect(p.Error)).code == "forbidden"
        status, body = await hub.call("transcripts/getTranscript", {"meetingId": meeting_id},
                                      user="mallory")
        assert status == 403
    finally:
        for c in (host, bob, tap):
            await c.aclose()


async def test_a_leavers_last_words_are_still_stored_and_sent(hub: HubHandle) -> None:
    """A speaker who says a sentence and leaves at once: its final comes from the tap after the
    ``peer-left`` (seconds later on a busy tap). It is stored and sent, with the right user;
    a peer id never seen in the room is still refused."""
    meeting_id, room_id = await hub.create_room(invite=("bob",), transcription=True)
    host, bob, tap = [await WsClient.connect(hub.ws_url) for _ in range(3)]
    try:
        await host.join(hub.mint_token(room_id, "host", "host"))
        jb = await bob.join(hub.mint_token(room_id, "bob"))
        await tap.join(hub.mint_token(room_id, "tap", "tap"))
        await bob.aclose()
        assert (await host.expect(p.PeerLeft)).peer_id == jb.peer_id
        await tap.send({"type": "transcript", "peerId": jb.peer_id, "segmentId": "s9",
                        "text": "see you next week", "final": True, "startMs": 10,
                        "endMs": 900})
        got = await host.expect(p.Transcript)
        assert (got.peer_id, got.user_id, got.text) == (jb.peer_id, "bob", "see you next week")
        status, body = await hub.call("transcripts/getTranscript", {"meetingId": meeting_id})
        assert status == 200, body
        assert [(s["userId"], s["text"]) for s in body["value"]["segments"]] == \
            [("bob", "see you next week")]
        await tap.send({"type": "transcript", "peerId": "p_nobody", "segmentId": "s10",
                        "text": "who", "final": True, "startMs": 10, "endMs": 900})
        assert (await tap.expect(p.Error)).code == "unknown-peer"
    finally:
        for c in (host, bob, tap):
            await c.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_segment_store_contract(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "memory":
        store = MemoryStore()
    else:
        server: RedisServer = request.getfixturevalue("redis")
        store = RedisStore(connect(server.url))
    try:
        for i in range(5):
            await store.append_segment("meeting_abc", Segment(
                segment_id=f"s{i}", peer_id="p", user_id="u", text=f"t{i}", start_ms=i,
                end_ms=i + 1))
        page, cursor = await store.segments("meeting_abc", limit=2)
        seen = [s.text for s in page]
        while cursor:
            page, cursor = await store.segments("meeting_abc", after=cursor, limit=2)
            seen += [s.text for s in page]
        assert seen == ["t0", "t1", "t2", "t3", "t4"]
        assert await store.segments("meeting_other") == ([], "")
    finally:
        await store.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_tap_jobs_survive_a_dead_worker(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "memory":
        jobs = MemoryTapJobs(reclaim_after_s=0.5)
        client = None
    else:
        server: RedisServer = request.getfixturevalue("redis")
        client = connect(server.url)
        jobs = RedisTapJobs(client, reclaim_after_s=0.5)
    job = TapJob(job_id="tap_1", room_id="room_ab", meeting_id="meeting_ab", token="t",
                 started_at_ms=5)
    assert await jobs.enqueue(job)
    assert not await jobs.enqueue(TapJob(job_id="tap_2", room_id="room_ab",
                                         meeting_id="meeting_ab", token="t", started_at_ms=5))
    first = await jobs.claim("w1", timeout_s=1)
    assert first is not None and first.job_id == "tap_1"
    assert await jobs.renew("w1", first)
    assert await jobs.claim("w2", timeout_s=0.2) is None  # w1 is alive
    # w1 died: no renewals. After reclaim_after_s the job is w2's to take.
    second = await wait_until(lambda: jobs.claim("w2", timeout_s=0.2), timeout=10,
                              what="w2 reclaiming the job w1 stopped renewing")
    assert second.job_id == "tap_1"
    assert not await jobs.renew("w1", first)  # w1 lost it
    await jobs.complete(second)
    assert await jobs.claim("w3", timeout_s=0.2) is None
    assert await jobs.enqueue(TapJob(job_id="tap_3", room_id="room_ab",
                                     meeting_id="meeting_ab", token="t", started_at_ms=5))
    if client is not None:
        await client.aclose()
