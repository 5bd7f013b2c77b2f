"""A meeting whose participants may not send video, in Chromium: the page sends only what the
room allows (the hub refuses nothing), the participant has no camera button, and the host's video
still reaches the participant."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from signaling.testing.hub import start_hub, test_settings
from tests.support.browser import Chromium, inbound

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_participant_video_off_in_the_browser(browser: Chromium) -> None:
    hub = await start_hub(test_settings())
    try:
        meeting_id, _ = await hub.create_room(invite=("bob",), participantVideoEnabled=False)
        pages = []
        for user, name in (("host", "Ada"), ("bob", "Bob")):
            status, body = await hub.call("webrtc/index/createJoinToken",
                                          {"meetingId": meeting_id}, user=user)
            assert status == 200, body
            page = await browser.open(body["value"]["roomUrl"], name)
            await page.page.get_by_label("Your name").fill(name)
            await page.page.get_by_role("button", name="Join meeting").click()
            await page.wait_joined()
            await page.record_events("error")
            pages.append(page)
        host, bob = pages
        host_id, bob_id = await host.peer_id(), await bob.peer_id()
        await host.wait_connected({bob_id})
        await bob.wait_connected({host_id})
        await expect(bob.page.locator("#cam-button")).to_be_hidden()
        await expect(host.page.locator("#cam-button")).to_be_visible()  # the host is exempt
        # The host's camera reaches Bob; Bob sends audio only.
        await bob.wait_stats(lambda s: s[host_id]["inbound"]["video"]["frames"] > 10,
                             "video frames from the host")
        await host.wait_stats(lambda s: inbound(s, bob_id, "audio") > 0, "audio from Bob")
        stats = await host.stats()
        assert inbound(stats, bob_id, "video") == 0
        await expect(host.tile(bob_id)).to_have_attribute("data-video", "off")
        # Nothing either page did was refused by the hub.
        assert await bob.recorded() == [] and await host.recorded() == []
    finally:
        await browser.close_pages()  # before the hub goes: no reconnect errors
        await hub.aclose()
