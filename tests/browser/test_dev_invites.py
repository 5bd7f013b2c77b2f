"""The demo page's dev-mode invite links: ``POST /api/dev/createInvite`` (host) and
``POST /api/dev/joinByInvite`` (anyone logged in), served only in dev mode."""

from __future__ import annotations

import time
from typing import Any

from signaling.meetings import mint_invite
from signaling.testing.hub import HubHandle, start_hub, test_settings


async def dev_call(hub: HubHandle, path: str, args: dict[str, Any],
                   user: str = "host") -> tuple[int, dict[str, Any]]:
    session = await hub.session()
    headers = {"Authorization": f"Bearer {hub.user_token(user)}"}
    async with session.post(f"{hub.base_url}/api/dev/{path}", json={"args": args},
                            headers=headers) as resp:
        if resp.content_type != "application/json":  # aiohttp's own 404 page
            return resp.status, {}
        return resp.status, await resp.json()


async def test_invite_lets_an_uninvited_user_join_as_participant(dev_hub: HubHandle) -> None:
    meeting_id, room_id = await dev_hub.create_room(host="host")
    # Without the link, a stranger is refused.
    status, body = await dev_hub.call("webrtc/index/createJoinToken", {"meetingId": meeting_id},
                                      user="stranger")
    assert status == 403 and body["errorData"]["code"] == "not-invited"

    status, body = await dev_call(dev_hub, "createInvite", {"meetingId": meeting_id})
    assert status == 200, body
    invite = body["value"]["invite"]
    assert body["value"]["meetingId"] == meeting_id
    assert body["value"]["expiresAt"] > time.time() * 1000 + 23 * 3600 * 1000

    status, body = await dev_call(dev_hub, "joinByInvite", {"invite": invite}, user="stranger")
    assert status == 200, body
    value = body["value"]
    assert (value["role"], value["roomId"], value["meetingId"]) == ("participant", room_id,
                                                                     meeting_id)
    assert value["title"] == "test meeting" and value["wsUrl"] == dev_hub.ws_url
    claims = dev_hub.tokens.verify_join(value["token"])
    assert (claims.room_id, claims.user_id, claims.role) == (room_id, "stranger", "participant")

    # The host opening their own link joins as host.
    status, body = await dev_call(dev_hub, "joinByInvite", {"invite": invite}, user="host")
    assert status == 200 and body["value"]["role"] == "host"


async def test_only_the_host_mints_invites(dev_hub: HubHandle) -> None:
    meeting_id, _ = await dev_hub.create_room(host="host", invite=("bob",))
    status, body = await dev_call(dev_hub, "createInvite", {"meetingId": meeting_id}, user="bob")
    assert status == 403 and body["errorData"]["code"] == "host-only"
    status, body = await dev_call(dev_hub, "createInvite",
                                  {"meetingId": meeting_id, "ttlSeconds": 8 * 86_400})
    assert status == 400


async def test_expired_forged_and_ended_invites_are_refused(dev_hub: HubHandle) -> None:
    meeting_id, room_id = await dev_hub.create_room(host="host")
    secret = dev_hub.settings.auth.secrets[0]
    expired, _ = mint_invite(secret, meeting_id, ttl_s=600, now=time.time() - 3600)
    status, body = await dev_call(dev_hub, "joinByInvite", {"invite": expired}, user="late")
    assert status == 401 and body["errorData"]["code"] == "invite-expired", body

    forged, _ = mint_invite("not-the-hub-secret-0123456789abcdef", meeting_id)
    join_token = dev_hub.mint_token(room_id, "someone")  # a join token is not an invite
    for bad in (forged, join_token, "garbage"):
        status, body = await dev_call(dev_hub, "joinByInvite", {"invite": bad}, user="mallory")
        assert status == 401 and body["errorData"]["code"] == "bad-invite", body

    valid, _ = mint_invite(secret, meeting_id)
    status, _ = await dev_call(dev_hub, "joinByInvite", {"invite": valid}, user="someone")
    assert status == 200
    status, body = await dev_hub.call("lifecycle/endMeeting", {"meetingId": meeting_id})
    assert status == 200, body
    status, body = await dev_call(dev_hub, "joinByInvite", {"invite": valid}, user="someone")
    assert status == 409 and body["errorData"]["code"] == "meeting-concluded", body


async def test_invite_endpoints_exist_only_in_dev_mode() -> None:
    hub = await start_hub(test_settings())  # a configured secret: not dev mode
    try:
        meeting_id, _ = await hub.create_room(host="host")
        for path, args in (("createInvite", {"meetingId": meeting_id}),
                           ("joinByInvite", {"invite": "x"}), ("login", {"email": "a@b.c"})):
            status, _ = await dev_call(hub, path, args)
            assert status == 404, path
    finally:
        await hub.aclose()


async def test_check_invite_describes_a_link_without_a_login(dev_hub: HubHandle) -> None:
    """The page asks about its invite link when it opens, before anyone signs in: every link
    gets an answer (200), a link that leads nowhere says why."""
    session = await dev_hub.session()

    async def check(invite: str) -> dict[str, Any]:
        async with session.post(f"{dev_hub.base_url}/api/dev/checkInvite",
                                json={"args": {"invite": invite}}) as resp:
            assert resp.status == 200
            return dict((await resp.json())["value"])

    _, body = await dev_hub.call("lifecycle/createMeeting", {"title": "Planning"})
    meeting_id = body["value"]["meetingId"]
    secret = dev_hub.settings.auth.secrets[0]
    invite, _ = mint_invite(secret, meeting_id)
    value = await check(invite)
    assert value["valid"] and (value["title"], value["state"]) == ("Planning", "scheduled")
    assert value["startedAt"] is None
    await dev_hub.call("lifecycle/startMeeting", {"meetingId": meeting_id})
    value = await check(invite)
    assert value["state"] == "active" and value["startedAt"] <= value["serverTime"]

    expired, _ = mint_invite(secret, meeting_id, ttl_s=600, now=time.time() - 3600)
    forged, _ = mint_invite("not-the-hub-secret-0123456789abcdef", meeting_id)
    missing, _ = mint_invite(secret, "meeting-nope")
    for bad, code in ((expired, "invite-expired"), (forged, "bad-invite"),
                      ("garbage", "bad-invite"), (missing, "meeting-not-found")):
        value = await check(bad)
        assert (value["valid"], value["code"]) == (False, code), value
    async with session.post(f"{dev_hub.base_url}/api/dev/checkInvite",
                            json={"args": {"invite": ""}}) as resp:
        assert resp.status == 400
