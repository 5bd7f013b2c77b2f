"""Two pages that may only use relayed candidates connect through a real coturn ``turnserver``
with the TURN credentials the hub hands out."""

from __future__ import annotations

import asyncio

import pytest

from signaling.testing.hub import start_hub, test_settings
from tests.support.browser import Chromium, inbound
from tests.support.turnserver import run_turnserver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

TURN_SECRET = "browser-turn-secret-0123456789abcdef"


async def test_relay_only_pages_connect_through_turnserver(browser: Chromium) -> None:
    async with run_turnserver([TURN_SECRET]) as turn:
        hub = await start_hub(test_settings(
            auth={"dev_login": True},
            ice={"turn_urls": [turn.url("udp")], "turn_secrets": [TURN_SECRET]},
        ))
        try:
            ada = await browser.open(hub.base_url + "/", "Ada Lovelace", relay=True)
            link = await ada.start_meeting("Behind a firewall")
            grace = await browser.open(link, "Grace Hopper", relay=True)
            await grace.join()
            a, g = await ada.peer_id(), await grace.peer_id()
            await asyncio.gather(ada.wait_connected({g}), grace.wait_connected({a}))

            for page, other in ((ada, g), (grace, a)):
                # The page was told relay-only and was handed our TURN server and credentials.
                room = await page.page.evaluate(
                    "() => ({policy: window.demo.room.options.iceTransportPolicy,"
                    " servers: window.demo.room.iceServers})")
                assert room["policy"] == "relay"
                (server,) = room["servers"]
                assert server["urls"] == [turn.url("udp")] or server["urls"] == turn.url("udp")
                user = server["username"]
                stats = await page.wait_stats(
                    lambda s, other=other: inbound(s, other, "audio") > 20
                    and inbound(s, other, "video") > 10, "media through the relay")
                pair = stats[other]["candidatePair"]
                assert pair["localType"] == "relay", pair
                assert pair["localAddress"] == "127.0.0.1", pair
                # coturn allocated a relay for exactly this user's credentials.
                await turn.wait_for_log(lambda line, user=user: bool(turn.allocation_lines(user)))
                assert not turn.auth_failure_lines(user)
        finally:
            await browser.close_pages()  # before the hub goes: no reconnect errors
            await hub.aclose()
