"""The page as a person opening a link gets it: the link is checked when the page opens (a
broken, expired or ended link is a notice before any camera goes on), a meeting that has not
started is waited for and joined by itself, and the camera can be turned off and on again."""

from __future__ import annotations

import time

import pytest
from playwright.async_api import expect

from signaling.meetings import mint_invite
from signaling.testing.hub import HubHandle
from tests.support.browser import Chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

#: Counts getUserMedia calls, so a test can say the camera was never asked for.
COUNT_CAPTURES = """
window.captures = 0;
const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = (c) => { window.captures += 1; return real(c); };
"""


async def dev_invite(hub: HubHandle, meeting_id: str, user: str = "host") -> str:
    session = await hub.session()
    async with session.post(f"{hub.base_url}/api/dev/createInvite",
                            json={"args": {"meetingId": meeting_id}},
                            headers={"Authorization": f"Bearer {hub.user_token(user)}"}) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    return str(body["value"]["invite"])


async def test_camera_turns_off_and_on_again_with_the_default_page(
        dev_hub: HubHandle, browser: Chromium) -> None:
    """Regression: with no ``window.connvoConfig`` (as every user has it), Stop video then
    Start video said "At least one of audio and video must be requested": the page passed
    ``videoConstraints: undefined`` and the spread replaced the client's default."""
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    assert await ada.page.evaluate("() => window.connvoConfig === undefined")
    await ada.start_meeting("Camera check")
    page = ada.page
    camera = page.get_by_role("button", name="Stop video")
    self_tile = ada.tile(await ada.peer_id())
    await camera.click()
    await expect(self_tile).to_have_attribute("data-video", "off")
    await expect(page.get_by_role("button", name="Start video")).to_have_attribute(
        "aria-pressed", "true")
    await page.get_by_role("button", name="Start video").click()
    await expect(self_tile).to_have_attribute("data-video", "on")
    await expect(page.get_by_role("button", name="Stop video")).to_have_attribute(
        "aria-pressed", "false")
    await expect(page.locator(".toast")).to_have_count(0)
    # And by keyboard (Ctrl+E), both ways.
    await page.keyboard.press("Control+e")
    await expect(self_tile).to_have_attribute("data-video", "off")
    await page.keyboard.press("Control+e")
    await expect(self_tile).to_have_attribute("data-video", "on")
    await page.wait_for_function(
        "() => document.querySelector('.tile.self video').videoWidth > 0")


@pytest.mark.parametrize("case", ["forged", "expired", "ended"])
async def test_a_bad_link_is_told_before_the_camera_goes_on(
        dev_hub: HubHandle, browser: Chromium, case: str) -> None:
    meeting_id, _ = await dev_hub.create_room(host="host")
    secret = dev_hub.settings.auth.secrets[0]
    if case == "forged":
        invite, _ = mint_invite("not-the-hub-secret-0123456789abcdef", meeting_id)
        code, title = "bad-invite", "This link doesn't work"
    elif case == "expired":
        invite, _ = mint_invite(secret, meeting_id, ttl_s=60, now=time.time() - 3600)
        code, title = "invite-expired", "This invite link has expired"
    else:
        invite = await dev_invite(dev_hub, meeting_id)
        status, body = await dev_hub.call("lifecycle/endMeeting", {"meetingId": meeting_id})
        assert status == 200, body
        code, title = "meeting-concluded", "This meeting has ended"
    page = await browser.open("about:blank", "Late Larry")
    await page.context.add_init_script(COUNT_CAPTURES)
    await page.page.goto(f"{dev_hub.base_url}/?invite={invite}")
    await expect(page.page.locator("#notice-card")).to_have_attribute("data-code", code)
    await expect(page.page.get_by_role("heading", name=title)).to_be_visible()
    await expect(page.page.get_by_role("textbox", name="Your name")).to_be_hidden()
    assert await page.page.evaluate("() => window.captures") == 0


async def test_waits_for_the_host_and_joins_by_itself(dev_hub: HubHandle,
                                                      browser: Chromium) -> None:
    # A meeting created and invited to, not started yet.
    status, body = await dev_hub.call("lifecycle/createMeeting", {"title": "Planning"})
    assert status == 200, body
    meeting_id = body["value"]["meetingId"]
    invite = await dev_invite(dev_hub, meeting_id)

    grace = await browser.open(f"{dev_hub.base_url}/?invite={invite}", "Grace Hopper")
    page = grace.page
    # The lobby knows the meeting and that it has not started.
    await expect(page.get_by_role("heading", name="Join “Planning”")).to_be_visible()
    await expect(page.get_by_text("The host hasn't started this meeting yet")).to_be_visible()
    await page.get_by_role("textbox", name="Your name").fill("Grace Hopper")
    await page.get_by_role("button", name="Join meeting").click()
    await expect(page.get_by_role("heading", name="Waiting for the host to start the meeting")
                 ).to_be_visible()
    await expect(page.get_by_text("You'll join automatically")).to_be_visible()

    status, body = await dev_hub.call("lifecycle/startMeeting", {"meetingId": meeting_id})
    assert status == 200, body
    await grace.wait_joined(timeout=20)
    await expect(page.locator("#room-title")).to_have_text("Planning")
    await expect(page.get_by_role("group", name="Grace Hopper (you)")).to_be_visible()
