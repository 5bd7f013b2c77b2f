"""Meeting deadlines (maxDurationMinutes) on one worker and across a restart of it.

Durations are made testable by ``rooms.duration_minute_s`` (the length of one of the meeting's
minutes) and ``rooms.ending_warning_s``; the tests wait for the frames, not for time."""

from __future__ import annotations

from signaling import protocol as p
from signaling.codes import Close
from signaling.memory_store import MemoryStore
from signaling.testing.hub import start_hub, start_hub_on, test_settings
from signaling.testing.ports import free_port
from tests.signaling.test_waiting_room import closed_with
from tests.support.wsclient import WsClient

#: One meeting minute is 0.25 s; the warning comes 0.5 s (two such minutes) before the end.
FAST = {"duration_minute_s": 0.25, "ending_warning_s": 0.5}


async def test_warning_then_end_then_concluded() -> None:
    hub = await start_hub(test_settings(rooms=FAST))
    host = await WsClient.connect(hub.ws_url)
    bob = await WsClient.connect(hub.ws_url)
    try:
        meeting_id, room_id = await hub.create_room(invite=("bob",), maxDurationMinutes=8)
        joined = await host.join(hub.mint_token(room_id, "host", "host"))
        assert joined.ends_at is not None
        assert (await bob.join(hub.mint_token(room_id, "bob"))).ends_at == joined.ends_at
        for client in (host, bob):
            ending = await client.expect(p.RoomEnding, timeout=10)
            assert ending.ends_at == joined.ends_at
            ended = await client.expect(p.RoomEndedMsg, timeout=10)
            assert ended.reason == "max-duration"
            assert await client.expect_close() == Close.ROOM_ENDED
            kinds = [type(m) for m in client.inbox]
            assert kinds.index(p.RoomEnding) < kinds.index(p.RoomEndedMsg)
            assert len(client.seen(p.RoomEnding)) == 1
        status, body = await hub.call("queries/getMeeting", {"meetingId": meeting_id})
        assert status == 200 and body["value"]["state"] == "concluded"
        # and nobody joins it any more
        status, body = await hub.call("webrtc/index/createJoinToken",
                                      {"meetingId": meeting_id}, user="bob",
                                      email="bob@example.com")
        assert status == 409, body
    finally:
        await host.aclose()
        await bob.aclose()
        await hub.aclose()


async def test_joining_in_the_last_minute_hears_the_warning_at_once() -> None:
    hub = await start_hub(test_settings(rooms={"duration_minute_s": 0.5,
                                               "ending_warning_s": 60}))
    host = await WsClient.connect(hub.ws_url)
    try:
        _, room_id = await hub.create_room(maxDurationMinutes=20)  # 10 s, all of it "last"
        joined = await host.join(hub.mint_token(room_id, "host", "host"))
        message = await host.recv()
        assert isinstance(message, p.RoomEnding) and message.ends_at == joined.ends_at
    finally:
        await host.aclose()
        await hub.aclose()


async def test_meetings_without_a_limit_never_end_on_time() -> None:
    hub = await start_hub(test_settings(rooms=FAST))
    host = await WsClient.connect(hub.ws_url)
    try:
        _, room_id = await hub.create_room()
        joined = await host.join(hub.mint_token(room_id, "host", "host"))
        assert joined.ends_at is None
        assert "endsAt" not in p.encode(joined).decode()
    finally:
        await host.aclose()
        await hub.aclose()


async def test_the_deadline_survives_a_restart_of_the_worker() -> None:
    """The worker that started the meeting goes away (redeploy); the deadline is the stored
    start plus the duration, so the restarted worker ends the room on time all the same."""
    store = MemoryStore()
    port = free_port()
    settings = test_settings(rooms={"duration_minute_s": 0.25, "ending_warning_s": 1.0})
    hub = await start_hub_on(port, store=store, settings=settings)
    host = await WsClient.connect(hub.ws_url)
    again: WsClient | None = None
    try:
        meeting_id, room_id = await hub.create_room(maxDurationMinutes=12)  # 3 s
        token = hub.mint_token(room_id, "host", "host")
        joined = await host.join(token)
        await hub.aclose()  # its timers go with it
        await host.expect_close()
        hub = await start_hub_on(port, store=store, settings=settings)
        again = await WsClient.connect(hub.ws_url)
        resumed = await again.join(token, resume=joined.resume_token)
        assert resumed.resumed and resumed.ends_at == joined.ends_at
        assert (await again.expect(p.RoomEnding, timeout=10)).ends_at == joined.ends_at
        assert (await again.expect(p.RoomEndedMsg, timeout=10)).reason == "max-duration"
        assert (await closed_with(again))[0] == Close.ROOM_ENDED
        status, body = await hub.call("queries/getMeeting", {"meetingId": meeting_id})
        assert status == 200 and body["value"]["state"] == "concluded"
    finally:
        await host.aclose()
        if again is not None:
            await again.aclose()
        await hub.aclose()


async def test_a_join_after_an_unwatched_deadline_ends_the_room() -> None:
    """No worker held the room when its time ran out (the one that started it went away and
    nobody was in it): the next join finds the deadline passed, ends the room and is refused."""
    store = MemoryStore()
    port = free_port()
    hub = await start_hub_on(port, store=store)
    try:
        meeting_id, room_id = await hub.create_room(maxDurationMinutes=1)
    finally:
        await hub.aclose()
    # The same stored start and duration, read by a worker on which a minute is a millisecond:
    # the deadline has passed by the time anyone joins.
    hub = await start_hub_on(port, store=store,
                             settings=test_settings(rooms={"duration_minute_s": 0.001}))
    late = await WsClient.connect(hub.ws_url)
    try:
        await late.send({"type": "join", "token": hub.mint_token(room_id, "host", "host")})
        assert (await closed_with(late))[0] == Close.ROOM_ENDED
        assert [m.code for m in late.seen(p.Error)] == ["room-ended"]
        status, body = await hub.call("queries/getMeeting", {"meetingId": meeting_id})
        assert status == 200 and body["value"]["state"] == "concluded"
    finally:
        await late.aclose()
        await hub.aclose()
