"""Meeting lifecycle through the HTTP API, checked against the websocket side of a real hub."""

from __future__ import annotations

import time
from typing import Any

from signaling import protocol as p
from signaling.codes import Close
from signaling.testing.hub import HubHandle
from tests.signaling.test_api_errors import assert_failed, fetch_spec, spec_validator
from tests.signaling.test_api_seeds import check_seed_response
from tests.support.wsclient import WsClient

CREATE = "lifecycle/createMeeting"
START = "lifecycle/startMeeting"
END = "lifecycle/endMeeting"
INIT = "webrtc/index/initializeWebRTCRoom"
GET = "queries/getMeeting"
JOIN_TOKEN = "webrtc/index/createJoinToken"
REMOVE = "webrtc/index/removeParticipant"
ICE = "webrtc/index/getIceServers"


async def ok(hub: HubHandle, path: str, args: dict[str, Any], user: str = "host",
             schema: str | None = None) -> dict[str, Any]:
    """Call ``path``; assert success and, with ``schema``, validate against our spec."""
    status, body = await hub.call(path, args, user=user)
    assert status == 200, (path, body)
    if schema is not None:
        spec = await fetch_spec(hub)
        errors = [e.message for e in spec_validator(spec, schema).iter_errors(body)]
        assert not errors, (errors, body)
    return body["value"]  # type: ignore[no-any-return]


async def create(hub: HubHandle, invite: tuple[str, ...] = ("bob", "carol"),
                 **extra: Any) -> str:
    value = await ok(hub, CREATE, {"title": "meeting",
                                   "participantEmails": [f"{u}@example.com" for u in invite],
                                   **extra})
    return value["meetingId"]  # type: ignore[no-any-return]


async def state_of(hub: HubHandle, meeting_id: str) -> str:
    return (await ok(hub, GET, {"meetingId": meeting_id}))["state"]  # type: ignore[no-any-return]


async def test_start_above_mesh_limit_is_not_ours(hub: HubHandle) -> None:
    meeting_id = await create(hub, maxParticipants=8)
    status, body = await hub.call(START, {"meetingId": meeting_id})
    assert status == 200, body
    check_seed_response("startMeeting", body)
    assert body["value"]["videoProvider"] == "getstream"
    assert body["value"]["webrtcReady"] is False and "roomInfo" not in body["value"]
    value = await ok(hub, GET, {"meetingId": meeting_id})
    assert value["state"] == "active" and value["webrtcEnabled"] is False
    # asking for a bigger room on a mesh meeting is not ours either
    meeting_id = await create(hub)
    status, body = await hub.call(INIT, {"meetingId": meeting_id, "maxParticipants": 6})
    assert status == 200, body
    check_seed_response("initializeWebRTCRoom", body)
    assert body["value"]["provider"] == "getstream" and body["value"]["success"] is False
    assert body["value"]["features"]["maxParticipants"] == 6


async def test_whole_number_floats_are_numbers(hub: HubHandle) -> None:
    """Regression: the seeds type counts as JSON ``number``, but ``maxParticipants: 4.0`` (what a
    Python or JS client may send) was refused as "expected int"."""
    meeting_id = await create(hub, maxParticipants=4.0)
    value = await ok(hub, INIT, {"meetingId": meeting_id, "maxParticipants": 3.0})
    assert value["provider"] == "webrtc" and value["features"]["maxParticipants"] == 3
    await ok(hub, START, {"meetingId": meeting_id})
    value = await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id, "ttlSeconds": 120.0})
    assert value["expiresAt"] <= (time.time() + 125) * 1000


async def test_initialize_is_idempotent(hub: HubHandle) -> None:
    meeting_id = await create(hub)
    first = await ok(hub, INIT, {"meetingId": meeting_id})
    again = await ok(hub, INIT, {"meetingId": meeting_id})
    by_bob = await ok(hub, INIT, {"meetingId": meeting_id}, user="bob")
    assert first["roomId"] == again["roomId"] == by_bob["roomId"]
    assert first["success"] is True and first["provider"] == "webrtc"
    # A meeting created without controls: everything allowed, no waiting room, no limit.
    assert first["features"] == {"chat": True, "screenSharing": True, "transcription": False,
                                 "recording": False, "maxParticipants": 4,
                                 "participantVideo": True, "participantAudio": True,
                                 "waitingRoom": False, "autoAdmit": False,
                                 "maxDurationMinutes": None, "recordVideo": False}
    assert await state_of(hub, meeting_id) == "scheduled"  # initialising does not start it
    started = await ok(hub, START, {"meetingId": meeting_id})
    assert started["roomInfo"]["roomId"] == first["roomId"]
    started_again = await ok(hub, START, {"meetingId": meeting_id})
    assert started_again["roomInfo"]["roomId"] == first["roomId"]
    assert (await ok(hub, GET, {"meetingId": meeting_id}))["roomId"] == first["roomId"]


async def test_join_token_joins_the_room(hub: HubHandle) -> None:
    meeting_id, room = await hub.create_room(invite=("bob",))
    value = await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id}, user="bob",
                     schema="Response_createJoinToken")
    assert set(value) == {"token", "roomId", "wsUrl", "roomUrl", "role", "expiresAt",
                          "iceServers"}
    assert value["roomId"] == room and value["role"] == "participant"
    assert value["wsUrl"] == hub.ws_url
    assert abs(value["expiresAt"] - (time.time() + 3600) * 1000) < 10_000
    claims = hub.tokens.verify_join(value["token"])
    assert (claims.room_id, claims.user_id, claims.role) == (room, "bob", "participant")

    client = await WsClient.connect(value["wsUrl"])
    try:
        joined = await client.join(value["token"])
        assert joined.room_id == room and joined.role == "participant"
    finally:
        await client.aclose()

    host = await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id, "ttlSeconds": 60})
    assert host["role"] == "host"
    assert hub.tokens.verify_join(host["token"]).expires_at - time.time() <= 61


async def test_roles_may_be_lowered_not_raised(hub: HubHandle) -> None:
    meeting_id, _ = await hub.create_room(invite=("bob",))
    spec = await fetch_spec(hub)
    observer = await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id, "role": "observer"},
                        user="bob")
    assert observer["role"] == "observer"
    client = await WsClient.connect(hub.ws_url)
    try:
        assert (await client.join(observer["token"])).role == "observer"
    finally:
        await client.aclose()
    status, body = await hub.call(JOIN_TOKEN, {"meetingId": meeting_id, "role": "host"},
                                  user="bob")
    assert_failed(spec, status, body, 403, "role-not-allowed")
    for role in ("host", "participant", "observer"):
        assert (await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id, "role": role}))["role"] == role


async def test_remove_participant_closes_and_bans(hub: HubHandle) -> None:
    meeting_id, room = await hub.create_room(invite=("bob", "carol"))
    spec = await fetch_spec(hub)
    clients = [await WsClient.connect(hub.ws_url) for _ in range(3)]
    host, bob, carol = clients
    try:
        await host.join(hub.mint_token(room, "host", "host"))
        jb = await bob.join(hub.mint_token(room, "bob"))
        jc = await carol.join(hub.mint_token(room, "carol"))

        value = await ok(hub, REMOVE, {"meetingId": meeting_id, "userId": "bob"},
                         schema="Response_removeParticipant")
        assert value == {"success": True, "removedPeers": [jb.peer_id]}
        await bob.expect(p.Kicked)
        assert await bob.expect_close() == Close.FORBIDDEN
        assert (await host.expect(p.PeerLeft)).peer_id == jb.peer_id
        assert (await ok(hub, GET, {"meetingId": meeting_id}, user="bob"))["userPresence"] == "left"

        # bob cannot come back, whatever token he holds
        token = (await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id}, user="bob"))["token"]
        again = await WsClient.connect(hub.ws_url)
        clients.append(again)
        await again.send({"type": "join", "token": token})
        assert (await again.expect(p.Error)).code == "removed"
        assert await again.expect_close() == Close.FORBIDDEN

        # by peer id
        value = await ok(hub, REMOVE, {"meetingId": meeting_id, "peerId": jc.peer_id})
        assert value["removedPeers"] == [jc.peer_id]
        assert await carol.expect_close() == Close.FORBIDDEN
        status, body = await hub.call(REMOVE, {"meetingId": meeting_id, "peerId": jc.peer_id})
        assert_failed(spec, status, body, 404, "unknown-peer")
        value = await ok(hub, GET, {"meetingId": meeting_id})
        assert (value["participantCount"], value["activeWebRTCSessions"]) == (1, 1)
    finally:
        for client in clients:
            await client.aclose()


async def test_end_meeting_ends_the_room(hub: HubHandle) -> None:
    meeting_id, room = await hub.create_room(invite=("bob",))
    spec = await fetch_spec(hub)
    host, bob = await WsClient.connect(hub.ws_url), await WsClient.connect(hub.ws_url)
    try:
        await host.join(hub.mint_token(room, "host", "host"))
        await bob.join(hub.mint_token(room, "bob"))
        value = await ok(hub, END, {"meetingId": meeting_id}, schema="Response_endMeeting")
        assert value == {"success": True, "state": "concluded"}
        for client in (host, bob):
            assert (await client.expect(p.RoomEndedMsg)).reason == "ended by host"
            assert await client.expect_close() == Close.ROOM_ENDED
        value = await ok(hub, GET, {"meetingId": meeting_id}, user="bob")
        assert value["state"] == "concluded" and value["userPresence"] == "left"
        assert (value["participantCount"], value["activeWebRTCSessions"]) == (0, 0)
        status, body = await hub.call(JOIN_TOKEN, {"meetingId": meeting_id}, user="bob")
        assert_failed(spec, status, body, 409, "meeting-concluded")
        # ending twice is harmless
        assert await ok(hub, END, {"meetingId": meeting_id}) == {"success": True,
                                                                 "state": "concluded"}
        # an old token no longer gets in
        late = await WsClient.connect(hub.ws_url)
        try:
            await late.send({"type": "join", "token": hub.mint_token(room, "bob")})
            assert await late.expect_close() == Close.ROOM_ENDED
        finally:
            await late.aclose()
    finally:
        await host.aclose()
        await bob.aclose()


async def test_end_scheduled_meeting_cancels_it(hub: HubHandle) -> None:
    meeting_id = await create(hub)
    assert await ok(hub, END, {"meetingId": meeting_id}) == {"success": True,
                                                             "state": "cancelled"}
    assert await state_of(hub, meeting_id) == "cancelled"


async def test_end_initialised_but_unstarted_meeting_cancels_it(hub: HubHandle) -> None:
    """Regression: endMeeting ended the room first, and ending a room concludes its meeting, so
    the following "scheduled → cancelled" transition failed with 409 ``meeting-concluded`` and
    the meeting was left concluded instead of cancelled."""
    meeting_id = await create(hub)
    room = (await ok(hub, INIT, {"meetingId": meeting_id}))["roomId"]
    assert await ok(hub, END, {"meetingId": meeting_id}) == {"success": True,
                                                             "state": "cancelled"}
    assert await state_of(hub, meeting_id) == "cancelled"
    late = await WsClient.connect(hub.ws_url)
    try:
        await late.send({"type": "join", "token": hub.mint_token(room, "host", "host")})
        assert await late.expect_close() == Close.ROOM_ENDED
    finally:
        await late.aclose()


async def test_join_token_needs_a_started_meeting(hub: HubHandle) -> None:
    """Regression: once initializeWebRTCRoom had made a room, createJoinToken handed out tokens
    for a meeting the host had not started."""
    spec = await fetch_spec(hub)
    meeting_id = await create(hub)
    await ok(hub, INIT, {"meetingId": meeting_id})
    status, body = await hub.call(JOIN_TOKEN, {"meetingId": meeting_id})
    assert_failed(spec, status, body, 409, "meeting-not-started")
    await ok(hub, START, {"meetingId": meeting_id})
    assert (await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id}))["role"] == "host"


async def test_ice_servers(hub: HubHandle) -> None:
    value = await ok(hub, ICE, {}, schema="Response_getIceServers")
    assert value == {"iceServers": [], "ttl": hub.settings.ice.turn_ttl_s}


async def test_meeting_lifecycle_states(hub: HubHandle) -> None:
    meeting_id = await create(hub)
    assert await state_of(hub, meeting_id) == "scheduled"
    await ok(hub, START, {"meetingId": meeting_id})
    assert await state_of(hub, meeting_id) == "active"
    await ok(hub, END, {"meetingId": meeting_id})
    assert await state_of(hub, meeting_id) == "concluded"
    spec = await fetch_spec(hub)
    status, body = await hub.call(START, {"meetingId": meeting_id})
    assert_failed(spec, status, body, 409, "meeting-concluded")
