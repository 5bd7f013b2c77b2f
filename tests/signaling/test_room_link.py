"""createJoinToken's roomUrl: one link that opens the hub's page straight into the room."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import aiohttp

from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.signaling.test_api_meetings import JOIN_TOKEN, ok
from tests.support.wsclient import WsClient


async def test_room_url_opens_the_page_with_the_room_and_token(hub: HubHandle) -> None:
    meeting_id, room_id = await hub.create_room(invite=("bob",))
    value = await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id}, user="bob",
                     schema="Response_createJoinToken")
    link = urlsplit(value["roomUrl"])
    assert f"{link.scheme}://{link.netloc}" == hub.base_url and link.path == "/"
    assert parse_qs(link.query) == {"room": [room_id]}
    # the token rides in the fragment: browsers never send it to a server
    assert parse_qs(link.fragment) == {"token": [value["token"]]}
    async with aiohttp.ClientSession() as session, \
            session.get(value["roomUrl"].split("#")[0]) as resp:
        assert resp.status == 200 and "connvo" in await resp.text()  # the demo page
    bob = await WsClient.connect(value["wsUrl"])
    try:
        joined = await bob.join(parse_qs(link.fragment)["token"][0])
        assert joined.room_id == room_id and joined.role == "participant"
    finally:
        await bob.aclose()


async def test_room_url_is_on_the_public_url() -> None:
    """Production: behind a proxy the link is on server.public_url (path prefix kept), like
    wsUrl, whatever Host the request came with."""
    hub = await start_hub(test_settings(server={"public_url": "https://rtc.example.com/meet/"}))
    try:
        meeting_id, room_id = await hub.create_room()
        value = await ok(hub, JOIN_TOKEN, {"meetingId": meeting_id})
        assert value["wsUrl"] == "wss://rtc.example.com/meet/ws"
        assert value["roomUrl"].startswith(f"https://rtc.example.com/meet/?room={room_id}#token=")
        assert value["roomUrl"].endswith(value["token"])
    finally:
        await hub.aclose()
