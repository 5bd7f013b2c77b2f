"""Meeting controls (issue 16): given on createMeeting, returned in features, enforced by the hub
(participant audio/video and screen sharing, on offers, answers and media flags), and the video
provider by the meeting's size."""

from __future__ import annotations

from typing import Any

import pytest

from signaling import protocol as p
from signaling.app import STORE_KEY
from signaling.controls import CREATE_MEETING_DEFAULTS, MeetingControls, scenario_controls
from signaling.testing.hub import HubHandle
from tests.signaling.test_api_errors import assert_failed, fetch_spec
from tests.signaling.test_api_meetings import CREATE, INIT, JOIN_TOKEN, START, ok
from tests.signaling.test_api_seeds import check_seed_response
from tests.support.wsclient import WsClient


def sdp(*lines: tuple[str, str | None], session: str | None = None) -> str:
    """A minimal SDP: one m-line per ``(kind, direction)`` (``None``: no direction attribute),
    and ``session`` as the session-level direction."""
    out = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    if session:
        out.append(f"a={session}")
    for i, (kind, direction) in enumerate(lines):
        out += [f"m={kind} 9 UDP/TLS/RTP/SAVPF 96", f"a=mid:{i}"]
        if direction:
            out.append(f"a={direction}")
    return "\r\n".join(out) + "\r\n"


async def pair(hub: HubHandle, **controls: Any) -> tuple[WsClient, WsClient, str]:
    """A host and participant ``bob`` joined to a new meeting with ``controls``."""
    _, room_id = await hub.create_room(invite=("bob",), **controls)
    host = await WsClient.connect(hub.ws_url)
    bob = await WsClient.connect(hub.ws_url)
    await host.join(hub.mint_token(room_id, "host", "host"))
    await bob.join(hub.mint_token(room_id, "bob"))
    await host.expect(p.PeerJoined)
    return host, bob, room_id


async def refused(sender: WsClient, to: WsClient, offer: str) -> bool:
    """Send ``offer``; True when it was refused (``feature-disabled``) and never reached ``to``
    (the next offer ``to`` gets is a harmless one sent after it)."""
    sender.inbox.clear()
    await sender.send({"type": "offer", "to": to.peer_id, "sdp": offer})
    harmless = sdp(("audio", "recvonly"), ("video", "recvonly"))
    await sender.send({"type": "offer", "to": to.peer_id, "sdp": harmless})
    first = await to.expect(p.OfferFrom)
    if first.sdp == harmless:
        error = await sender.expect(p.Error)
        assert error.code == "feature-disabled", error
        return True
    assert first.sdp == offer
    assert (await to.expect(p.OfferFrom)).sdp == harmless
    await sender.send({"type": "ping", "ts": 1})  # everything before the pong was answered
    await sender.expect(p.Pong)
    assert not sender.seen(p.Error), sender.inbox
    return False


# ---------------------------------------------------------------------- createMeeting


async def test_controls_are_stored_and_returned_in_features(hub: HubHandle) -> None:
    value = await ok(hub, CREATE, {
        "title": "controlled", "participantEmails": ["bob@example.com"],
        "chatEnabled": False, "screenSharingEnabled": False, "participantVideoEnabled": False,
        "participantAudioEnabled": True, "waitingRoomEnabled": True, "autoAdmit": True,
        "maxDurationMinutes": 45})
    meeting_id = value["meetingId"]
    init = await ok(hub, INIT, {"meetingId": meeting_id})
    expected = {"chat": False, "screenSharing": False, "transcription": False,
                "recording": False, "maxParticipants": 4, "participantVideo": False,
                "participantAudio": True, "waitingRoom": True, "autoAdmit": True,
                "maxDurationMinutes": 45, "recordVideo": False}
    assert init["features"] == expected
    await ok(hub, START, {"meetingId": meeting_id})
    token = await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id}, user="bob")
    bob = await WsClient.connect(hub.ws_url)
    host = await WsClient.connect(hub.ws_url)
    try:
        joined = await host.join((await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id}))["token"])
        assert msgspec_dict(joined.features) == expected | {"agent": None}  # no AI persona
        assert joined.ends_at is not None  # 45 minutes after the start
        joined = await bob.join(token["token"])  # auto-admit: straight in
        assert msgspec_dict(joined.features) == expected | {"agent": None}
    finally:
        await bob.aclose()
        await host.aclose()


def msgspec_dict(features: p.Features) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(features)  # type: ignore[no-any-return]


async def test_seed_schemas_still_validate_with_controls(hub: HubHandle) -> None:
    status, body = await hub.call(CREATE, {"title": "t", "waitingRoomEnabled": True,
                                           "maxDurationMinutes": 30})
    assert status == 200
    check_seed_response("createMeeting", body)
    status, body = await hub.call(INIT, {"meetingId": body["value"]["meetingId"]})
    assert status == 200
    check_seed_response("initializeWebRTCRoom", body)


@pytest.mark.parametrize(("name", "value"), [
    ("chatEnabled", "no"), ("screenSharingEnabled", 1), ("participantVideoEnabled", "false"),
    ("participantAudioEnabled", 0), ("waitingRoomEnabled", "yes"), ("autoAdmit", []),
    ("maxDurationMinutes", 0), ("maxDurationMinutes", 1441), ("maxDurationMinutes", 2.5),
    ("maxDurationMinutes", "30"), ("maxDurationMinutes", None), ("maxDurationMinutes", -5),
])
async def test_bad_controls_are_a_clear_400(hub: HubHandle, name: str, value: Any) -> None:
    status, body = await hub.call(CREATE, {"title": "t", name: value})
    assert_failed(await fetch_spec(hub), status, body, 400, "invalid-args")
    assert name in body["errorMessage"]


def test_scenario_defaults_are_the_documents() -> None:
    """seeds/meeting-from-scenario.md: recording on; transcription, chat, screen sharing and
    participant video off; audio on; no waiting room; the scenario's call_duration or 30."""
    assert scenario_controls() == MeetingControls(
        recording=True, transcription=False, chat=False, screen_sharing=False,
        participant_video=False, participant_audio=True, waiting_room=False, auto_admit=False,
        max_duration_minutes=30)
    assert scenario_controls(45).max_duration_minutes == 45
    assert scenario_controls(chat=True).chat is True
    # createMeeting without controls keeps what meetings did before controls existed
    assert CREATE_MEETING_DEFAULTS == MeetingControls(
        recording=False, transcription=False, chat=True, screen_sharing=True,
        participant_video=True, participant_audio=True, waiting_room=False, auto_admit=False,
        max_duration_minutes=None)


# ---------------------------------------------------------------------- permissions


@pytest.mark.parametrize(("offer", "is_refused"), [
    (sdp(("audio", "sendrecv"), ("video", "sendrecv")), True),
    (sdp(("audio", "sendrecv"), ("video", "sendonly")), True),
    (sdp(("audio", "sendrecv"), ("video", None)), True),  # no attribute: sendrecv
    (sdp(("audio", "sendrecv"), ("video", None), session="sendonly"), True),
    (sdp(("audio", "sendrecv"), ("video", "SendRecv")), True),  # any case
    (sdp(("audio", "sendrecv"), ("video", "inactive")), False),
    (sdp(("audio", "sendrecv"), ("video", "recvonly")), False),
    (sdp(("audio", "sendrecv"), ("video", None), session="recvonly"), False),
    (sdp(("audio", "sendrecv")), False),
], ids=["sendrecv", "sendonly", "default", "session-sendonly", "case", "inactive", "recvonly",
        "session-recvonly", "no-video-line"])
async def test_participant_video_off_refuses_offers_that_send_video(
        hub: HubHandle, offer: str, is_refused: bool) -> None:
    host, bob, _ = await pair(hub, participantVideoEnabled=False)
    try:
        assert await refused(bob, host, offer) is is_refused
    finally:
        await host.aclose()
        await bob.aclose()


async def test_participant_video_off_refuses_answers_too(hub: HubHandle) -> None:
    host, bob, _ = await pair(hub, participantVideoEnabled=False)
    try:
        await bob.send({"type": "answer", "to": host.peer_id,
                        "sdp": sdp(("audio", "sendrecv"), ("video", "sendrecv"))})
        assert (await bob.expect(p.Error)).code == "feature-disabled"
        ok_answer = sdp(("audio", "sendrecv"), ("video", "recvonly"))
        await bob.send({"type": "answer", "to": host.peer_id, "sdp": ok_answer})
        assert (await host.expect(p.AnswerFrom)).sdp == ok_answer
    finally:
        await host.aclose()
        await bob.aclose()


@pytest.mark.parametrize(("offer", "is_refused"), [
    (sdp(("audio", "sendrecv"), ("video", "sendrecv")), True),
    (sdp(("audio", "sendonly")), True),
    (sdp(("audio", "recvonly"), ("video", "sendrecv")), False),
    (sdp(("audio", "inactive"), ("video", "sendonly")), False),
], ids=["sendrecv", "sendonly", "recvonly", "inactive"])
async def test_participant_audio_off_refuses_offers_that_send_audio(
        hub: HubHandle, offer: str, is_refused: bool) -> None:
    host, bob, _ = await pair(hub, participantAudioEnabled=False)
    try:
        assert await refused(bob, host, offer) is is_refused
    finally:
        await host.aclose()
        await bob.aclose()


async def test_host_is_exempt(hub: HubHandle) -> None:
    host, bob, _ = await pair(hub, participantAudioEnabled=False, participantVideoEnabled=False,
                              screenSharingEnabled=False)
    try:
        everything = sdp(("audio", "sendrecv"), ("video", "sendrecv"), ("video", "sendonly"))
        assert await refused(host, bob, everything) is False
        await host.send({"type": "media", "audio": True, "video": True, "screen": True})
        peer = (await bob.expect(p.PeerUpdated)).peer
        assert (peer.media.audio, peer.media.video, peer.media.screen) == (True, True, True)
    finally:
        await host.aclose()
        await bob.aclose()


async def test_screen_sharing_off_refuses_a_second_sending_video_line(hub: HubHandle) -> None:
    host, bob, _ = await pair(hub, screenSharingEnabled=False)
    try:
        camera_and_screen = sdp(("audio", "sendrecv"), ("video", "sendrecv"),
                                ("video", "sendonly"))
        assert await refused(bob, host, camera_and_screen) is True
        camera_only = sdp(("audio", "sendrecv"), ("video", "sendrecv"), ("video", "recvonly"))
        assert await refused(bob, host, camera_only) is False
        await bob.send({"type": "media", "audio": True, "video": True, "screen": True})
        assert (await bob.expect(p.Error)).code == "feature-disabled"
    finally:
        await host.aclose()
        await bob.aclose()


async def test_media_flags_of_a_kind_turned_off_stay_false(hub: HubHandle) -> None:
    host, bob, room_id = await pair(hub, participantVideoEnabled=False,
                                    participantAudioEnabled=False)
    try:
        for flags in ({"video": True}, {"audio": True}, {"audio": True, "video": True}):
            await bob.send({"type": "media", **flags})
            assert (await bob.expect(p.Error)).code == "feature-disabled"
        await bob.send({"type": "media"})  # all off: allowed, and the room is told
        peer = (await host.expect(p.PeerUpdated)).peer
        assert (peer.media.audio, peer.media.video) == (False, False)
        assert not [m for m in host.seen(p.PeerUpdated) if m.peer.media.video or m.peer.media.audio]
        seats = {s.user_id: s for s in await hub.app[STORE_KEY].seats(room_id)}
        assert seats["bob"].media == p.MediaState()
    finally:
        await host.aclose()
        await bob.aclose()


async def test_no_controls_no_restriction(hub: HubHandle) -> None:
    """A meeting created without controls relays what it always relayed."""
    host, bob, _ = await pair(hub)
    try:
        everything = sdp(("audio", "sendrecv"), ("video", "sendrecv"), ("video", "sendonly"))
        assert await refused(bob, host, everything) is False
    finally:
        await host.aclose()
        await bob.aclose()


# ---------------------------------------------------------------------- provider by size


@pytest.mark.parametrize(("args", "provider"), [
    ({"participantEmails": [f"u{i}@example.com" for i in range(3)]}, "webrtc"),  # 4 people
    ({"participantEmails": [f"u{i}@example.com" for i in range(4)]}, "getstream"),  # 5 people
    ({"participantEmails": [f"u{i}@example.com" for i in range(5)]}, "getstream"),  # the issue's
    # the host's own email among the invited counts once
    ({"participantEmails": ["host@example.com"] + [f"u{i}@example.com" for i in range(3)]},
     "webrtc"),
    ({"maxParticipants": 5}, "getstream"),
    ({"maxParticipants": 4}, "webrtc"),
    ({"maxParticipants": 2, "participantEmails": [f"u{i}@example.com" for i in range(4)]},
     "getstream"),
])
async def test_provider_by_size(hub: HubHandle, args: dict[str, Any], provider: str) -> None:
    status, body = await hub.call(CREATE, {"title": "sized", **args})
    assert status == 200, body
    check_seed_response("createMeeting", body)
    value = body["value"]
    assert value["videoProvider"] == provider
    assert value["webrtcReady"] is (provider == "webrtc")
    started = await ok(hub, START, {"meetingId": value["meetingId"]})
    assert started["videoProvider"] == provider and started["webrtcReady"] is (provider == "webrtc")
    init = await ok(hub, INIT, {"meetingId": value["meetingId"]})
    assert init["provider"] == provider and init["success"] is (provider == "webrtc")
