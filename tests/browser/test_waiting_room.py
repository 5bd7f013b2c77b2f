"""The demo page's waiting room (a host admits a knocking guest, denies another), and a room
link (createJoinToken's roomUrl) that opens the page straight into a room whose time runs out."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.browser.test_dev_invites import dev_call
from tests.support.browser import Chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_host_admits_a_knocking_guest(dev_hub: HubHandle, browser: Chromium) -> None:
    host = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    await host.page.get_by_label("Your name").fill("Ada Lovelace")
    await host.page.get_by_label("Meeting name").fill("Office hours")
    await host.page.get_by_label("Waiting room").check()
    await host.page.get_by_role("button", name="Start meeting").click()
    await host.wait_joined()
    link = await host.page.get_by_label("Invite link").input_value()
    assert "invite=" in link

    guest = await browser.open(link, "Grace Hopper")
    await guest.page.get_by_label("Your name").fill("Grace Hopper")
    await guest.page.get_by_role("button", name="Join meeting").click()
    await expect(guest.page.get_by_role(
        "heading", name="Waiting for the host to let you in")).to_be_visible(timeout=15_000)
    knock = host.page.get_by_role("group", name="Grace Hopper wants to join")
    await expect(knock).to_be_visible()
    await guest.screenshot("waiting-room-guest.png")
    await host.screenshot("waiting-room-host.png")
    await knock.get_by_role("button", name="Admit").click()
    await guest.wait_joined()
    await expect(knock).to_have_count(0)
    await expect(host.page.locator("#room-count")).to_have_text("2 people")
    await expect(guest.page.locator("#room-count")).to_have_text("2 people")
    await host.wait_connected({await guest.peer_id()})

    # Someone else knocks and is turned away: their page says so in words.
    other = await browser.open(link, "Alan Turing")
    await other.page.get_by_label("Your name").fill("Alan Turing")
    await other.page.get_by_role("button", name="Join meeting").click()
    knock = host.page.get_by_role("group", name="Alan Turing wants to join")
    await knock.get_by_role("button", name="Deny").click()
    await expect(other.page.get_by_role("heading", name="The host didn't let you in")) \
        .to_be_visible(timeout=15_000)
    await expect(knock).to_have_count(0)
    await expect(host.page.locator("#room-count")).to_have_text("2 people")


async def test_room_link_opens_the_room_and_its_time_runs_out(browser: Chromium) -> None:
    """Production mode (no dev sign-in): the backend hands out createJoinToken's roomUrl; it
    opens the page straight into the room, which warns and then ends at its time limit."""
    hub = await start_hub(test_settings(rooms={"duration_minute_s": 1.0,
                                               "ending_warning_s": 60.0}))
    try:
        meeting_id, _ = await hub.create_room(invite=("bob",), maxDurationMinutes=8)
        status, body = await hub.call("webrtc/index/createJoinToken", {"meetingId": meeting_id},
                                      user="bob")
        assert status == 200, body
        status, _ = await dev_call(hub, "login", {"email": "x@example.com"})
        assert status == 404  # no dev sign-in on this hub
        page = await browser.open(body["value"]["roomUrl"], "bob")
        await expect(page.page.get_by_role("heading", name="Join the meeting")).to_be_visible()
        await expect(page.page.get_by_label("Your name")).to_have_value("bob")  # from the token
        await page.page.get_by_role("button", name="Join meeting").click()
        await page.wait_joined()
        await expect(page.page.get_by_role("status").filter(
            has_text="reaches its time limit")).to_be_visible()
        await expect(page.page.get_by_role(
            "heading", name="This meeting has reached its time limit")).to_be_visible(
            timeout=30_000)
    finally:
        await browser.close_pages()  # before the hub goes: no reconnect errors
        await hub.aclose()
