"""Meeting controls across hub worker processes sharing one real Redis: a knock answered by a
host on another worker, and a meeting's deadline when the worker that started it dies or
restarts."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from signaling import protocol as p
from signaling.codes import Close
from signaling.testing.hub_process import HubProcess, run_workers
from signaling.testing.meetings import api, join_token
from signaling.testing.ports import free_port
from signaling.testing.redis_server import RedisServer
from tests.signaling.test_waiting_room import closed_with
from tests.support.wsclient import WsClient

pytestmark = pytest.mark.slow

#: One meeting minute is 0.25 s; room-ending comes 1 s before the end.
FAST_DEADLINE = {"CONNVO_RTC_ROOMS_DURATION_MINUTE_S": "0.25",
                 "CONNVO_RTC_ROOMS_ENDING_WARNING_S": "1"}


async def start(base_url: str, invite: tuple[str, ...], **controls: Any) -> tuple[str, str]:
    """Create and start a meeting with ``controls`` on a hub process: (meeting id, room id)."""
    status, body = await api(base_url, "lifecycle/createMeeting", {
        "title": "controls", "participantEmails": [f"{u}@example.com" for u in invite],
        **controls})
    assert status == 200, body
    meeting_id = body["value"]["meetingId"]
    status, body = await api(base_url, "lifecycle/startMeeting", {"meetingId": meeting_id})
    assert status == 200, body
    return meeting_id, body["value"]["roomInfo"]["roomId"]


async def test_knocks_answered_by_a_host_on_another_worker(redis: RedisServer) -> None:
    async with run_workers(redis.url, 2) as (w1, w2):
        _, room_id = await start(w1.base_url, ("bob", "carol", "dave"), waitingRoomEnabled=True)
        clients: list[WsClient] = []
        try:
            host = await WsClient.connect(w1.ws_url)
            clients.append(host)
            await host.join(join_token(room_id, "host", "host"))
            bob = await WsClient.connect(w2.ws_url)
            clients.append(bob)
            await bob.send({"type": "join", "token": join_token(room_id, "bob")})
            await bob.expect(p.Waiting)
            knocked = (await host.expect(p.Knock)).peer
            assert knocked.user_id == "bob"
            await host.send({"type": "admit", "peerId": knocked.peer_id})
            joined = await bob.expect(p.Joined)
            assert joined.peer_id == knocked.peer_id
            assert [x.user_id for x in joined.peers] == ["host"]
            assert (await host.expect(p.PeerJoined)).peer.peer_id == knocked.peer_id
            assert (await host.expect(p.KnockEnded)).reason == "admitted"
            # admitted across workers, bob and the host relay like any two peers
            await bob.send({"type": "offer", "to": host.peer_id, "sdp": "v=0 admitted"})
            assert (await host.expect(p.OfferFrom)).sdp == "v=0 admitted"

            carol = await WsClient.connect(w2.ws_url)
            clients.append(carol)
            await carol.send({"type": "join", "token": join_token(room_id, "carol")})
            await carol.expect(p.Waiting)
            knocked = (await host.expect(p.Knock)).peer
            await host.send({"type": "deny", "peerId": knocked.peer_id})
            assert await closed_with(carol) == (Close.FORBIDDEN, "denied")
            assert [m.code for m in carol.seen(p.Error)] == ["denied"]

            # a host joining later, on the other worker, hears who waits there
            dave = await WsClient.connect(w1.ws_url)
            clients.append(dave)
            await dave.send({"type": "join", "token": join_token(room_id, "dave")})
            await dave.expect(p.Waiting)
            await host.expect(p.Knock)
            cohost = await WsClient.connect(w2.ws_url)
            clients.append(cohost)
            await cohost.join(join_token(room_id, "cohost", "host"))
            late = (await cohost.expect(p.Knock)).peer
            assert late.user_id == "dave"
            await cohost.send({"type": "admit", "peerId": late.peer_id})
            await dave.expect(p.Joined)
            assert (await host.expect(p.KnockEnded)).peer_id == late.peer_id
        finally:
            for client in clients:
                await client.aclose()


async def test_room_full_at_admission_across_workers(redis: RedisServer) -> None:
    """Capacity is checked when the knocker is admitted, atomically in Redis: with one seat
    left and a participant joining directly on another worker meanwhile, the knocker gets
    room-full."""
    async with run_workers(redis.url, 2) as (w1, w2):
        _, room_id = await start(w1.base_url, ("bob", "carol"), waitingRoomEnabled=True,
                                 maxParticipants=2)
        clients: list[WsClient] = []
        try:
            host = await WsClient.connect(w1.ws_url)
            clients.append(host)
            await host.join(join_token(room_id, "host", "host"))
            bob = await WsClient.connect(w2.ws_url)
            clients.append(bob)
            await bob.send({"type": "join", "token": join_token(room_id, "bob")})
            await bob.expect(p.Waiting)
            knocked = (await host.expect(p.Knock)).peer
            cohost = await WsClient.connect(w2.ws_url)  # hosts never wait: takes the seat
            clients.append(cohost)
            await cohost.join(join_token(room_id, "cohost", "host"))
            await host.send({"type": "admit", "peerId": knocked.peer_id})
            assert (await closed_with(bob))[0] == Close.ROOM_FULL
            assert [m.code for m in bob.seen(p.Error)] == ["room-full"]
            ended = await host.expect(p.KnockEnded)
            assert (ended.peer_id, ended.reason) == (knocked.peer_id, "room-full")
        finally:
            for client in clients:
                await client.aclose()


async def test_deadline_holds_when_the_starting_worker_dies(redis: RedisServer) -> None:
    async with run_workers(redis.url, 2, env=FAST_DEADLINE) as (w1, w2):
        meeting_id, room_id = await start(w1.base_url, ("bob",), maxDurationMinutes=40)  # 10 s
        bob = await WsClient.connect(w2.ws_url)
        try:
            joined = await bob.join(join_token(room_id, "bob"))
            assert joined.ends_at is not None
            w1.kill(signal.SIGKILL)  # it started the meeting and armed its deadline
            ending = await bob.expect(p.RoomEnding, timeout=30)
            assert ending.ends_at == joined.ends_at
            assert (await bob.expect(p.RoomEndedMsg, timeout=30)).reason == "max-duration"
            assert (await closed_with(bob))[0] == Close.ROOM_ENDED
            status, body = await api(w2.base_url, "queries/getMeeting",
                                     {"meetingId": meeting_id})
            assert status == 200 and body["value"]["state"] == "concluded"
        finally:
            await bob.aclose()


async def test_deadline_holds_across_a_worker_restart(redis: RedisServer) -> None:
    """kill -9 of the only worker, started again on its port: the host resumes its seat and
    the room still ends at the stored start plus the duration."""
    port = free_port()
    worker = HubProcess(port, redis.url, env=FAST_DEADLINE)
    host: WsClient | None = None
    again: WsClient | None = None
    try:
        worker.start()
        await worker.wait_ready()
        host = await WsClient.connect(worker.ws_url)
        meeting_id, room_id = await start(worker.base_url, (), maxDurationMinutes=40)
        token = join_token(room_id, "host", "host")
        joined = await host.join(token)
        worker.kill(signal.SIGKILL)
        await host.expect_close(10)
        worker.cleanup()
        worker = HubProcess(port, redis.url, env=FAST_DEADLINE)
        worker.start()
        await worker.wait_ready()
        again = await WsClient.connect(worker.ws_url)
        resumed = await again.join(token, resume=joined.resume_token)
        assert resumed.resumed and resumed.ends_at == joined.ends_at
        assert (await again.expect(p.RoomEnding, timeout=30)).ends_at == joined.ends_at
        assert (await again.expect(p.RoomEndedMsg, timeout=30)).reason == "max-duration"
        status, body = await api(worker.base_url, "queries/getMeeting",
                                 {"meetingId": meeting_id})
        assert status == 200 and body["value"]["state"] == "concluded"
    finally:
        if host is not None:
            await host.aclose()
        if again is not None:
            await again.aclose()
        worker.cleanup()



async def test_knocks_of_a_dead_worker_are_reaped(redis: RedisServer) -> None:
    """The worker holding a knocker is killed: another worker's reaper removes the knock and
    tells the host, so no host is left with a prompt nobody can answer."""
    fast_reaper = {"CONNVO_RTC_REDIS_HEARTBEAT_S": "0.5", "CONNVO_RTC_REDIS_DEAD_AFTER_S": "3",
                   "CONNVO_RTC_REDIS_REAP_INTERVAL_S": "0.5"}
    async with run_workers(redis.url, 2, env=fast_reaper) as (w1, w2):
        _, room_id = await start(w1.base_url, ("bob",), waitingRoomEnabled=True)
        host = await WsClient.connect(w1.ws_url)
        bob = await WsClient.connect(w2.ws_url)
        try:
            await host.join(join_token(room_id, "host", "host"))
            await bob.send({"type": "join", "token": join_token(room_id, "bob")})
            await bob.expect(p.Waiting)
            knocked = (await host.expect(p.Knock)).peer
            w2.kill(signal.SIGKILL)
            ended = await host.expect(p.KnockEnded, timeout=20)
            assert (ended.peer_id, ended.reason) == (knocked.peer_id, "left")
            await host.send({"type": "admit", "peerId": knocked.peer_id})
            assert (await host.expect(p.Error)).code == "unknown-peer"
        finally:
            await host.aclose()
            await bob.aclose()
