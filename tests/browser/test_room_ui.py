"""The room as people see and hear it: the meeting clock, who ended the meeting, controls and
tiles that tell screen readers their state, a phone-sized screen, initials that fit their
avatar and toasts that leave everyone's name readable. The page has its default config."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from playwright.async_api import expect

from signaling.app import STORE_KEY
from signaling.testing.hub import HubHandle
from tests.support.browser import Chromium, DemoPage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

#: Whether any part of the page sticks out of the window sideways (what makes a phone scroll).
OVERFLOW = """() => {
    const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll('#room *')].filter((el) => {
        const r = el.getBoundingClientRect();
        return r.width > 0 && (r.right > width + 0.5 || r.left < -0.5);
    }).map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`);
    return { scroll: document.documentElement.scrollWidth, width, wide: wide.slice(0, 5) };
}"""

#: Every avatar whose initials are wider or taller than its circle.
CRAMPED_INITIALS = """() => [...document.querySelectorAll('.tile[data-video=off] .avatar span')]
    .filter((span) => {
        const range = document.createRange();
        range.selectNodeContents(span);
        const text = range.getBoundingClientRect();
        const box = span.getBoundingClientRect();
        return text.width > box.width * 0.8 || text.height > box.height;
    }).map((span) => `${span.textContent}: ${Math.round(span.getBoundingClientRect().width)}px`)"""

#: Toasts overlapping a tile's name tag.
TOAST_OVER_NAME = """() => {
    const hit = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    const toasts = [...document.querySelectorAll('.toast')].map((t) => t.getBoundingClientRect());
    return [...document.querySelectorAll('.tile .nametag')]
        .filter((tag) => toasts.some((t) => hit(t, tag.getBoundingClientRect())))
        .map((tag) => tag.textContent.trim());
}"""


async def invite_link(page: DemoPage) -> str:
    return str(await page.page.evaluate("() => window.demo.inviteLink"))


async def test_clock_counts_from_the_meetings_start(dev_hub: HubHandle, browser: Chromium
                                                    ) -> None:
    """Regression: the clock counted from *your* join; someone joining a meeting that has
    run an hour saw 00:00."""
    status, body = await dev_hub.call("lifecycle/createMeeting", {"title": "Long one"})
    meeting_id = body["value"]["meetingId"]
    an_hour_ago = int((time.time() - 3723) * 1000)  # 1:02:03 ago
    await dev_hub.app[STORE_KEY].transition_meeting(meeting_id, "active",
                                                    from_states=("scheduled",),
                                                    now_ms=an_hour_ago)
    status, body = await dev_hub.call("lifecycle/startMeeting", {"meetingId": meeting_id})
    assert status == 200, body
    session = await dev_hub.session()
    async with session.post(f"{dev_hub.base_url}/api/dev/createInvite",
                            json={"args": {"meetingId": meeting_id}},
                            headers={"Authorization": f"Bearer {dev_hub.user_token('host')}"}
                            ) as resp:
        invite = (await resp.json())["value"]["invite"]
    grace = await browser.open(f"{dev_hub.base_url}/?invite={invite}", "Grace Hopper")
    await grace.join()
    await expect(grace.page.locator("#room-clock")).to_have_text(re.compile(r"^1:02:0\d$"))


async def test_host_ends_the_meeting_for_everyone(dev_hub: HubHandle, browser: Chromium
                                                  ) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Retro")
    grace = await browser.open(link, "Grace Hopper")
    await grace.join()
    page = ada.page
    await page.get_by_role("button", name="People").click()
    people = page.get_by_role("list", name="People in the meeting")
    await expect(people.get_by_role("listitem")).to_have_count(2)
    await expect(people.get_by_role("listitem").filter(has_text="Ada Lovelace (you)")
                 ).to_contain_text("Host")
    await expect(people.get_by_role("listitem").filter(has_text="Grace Hopper")
                 ).to_contain_text("Participant")
    # Grace is not the host: no host controls for her.
    await grace.page.get_by_role("button", name="People").click()
    await expect(grace.page.get_by_role("button", name="End meeting for everyone")).to_have_count(0)
    await expect(grace.page.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)

    await page.get_by_role("button", name="End meeting for everyone").click()
    await expect(page.get_by_text("End the meeting for everyone?")).to_be_visible()
    await page.get_by_role("button", name="End meeting for everyone").click()
    await expect(page.get_by_role("heading", name="You ended the meeting")).to_be_visible()
    await expect(page.get_by_text("Everyone has left the call.")).to_be_visible()
    await expect(grace.page.get_by_role("heading", name="This meeting has ended")).to_be_visible()
    await expect(grace.page.get_by_text("The host ended the meeting for everyone.")).to_be_visible()


async def test_host_removes_someone_from_the_list(dev_hub: HubHandle, browser: Chromium) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Retro")
    grace = await browser.open(link, "Grace Hopper")
    await grace.join()
    page = ada.page
    await page.get_by_role("button", name="People").click()
    await page.get_by_role("button", name="Remove Grace Hopper from the meeting").click()
    await page.get_by_role("button", name="Cancel removing Grace Hopper").click()
    await expect(page.get_by_role("listitem").filter(has_text="Grace Hopper")).to_have_count(1)
    await page.get_by_role("button", name="Remove Grace Hopper from the meeting").click()
    await page.get_by_role("button", name="Remove Grace Hopper", exact=True).click()
    await expect(grace.page.get_by_role("heading", name="You were removed from the meeting")
                 ).to_be_visible()
    await expect(page.get_by_role("listitem").filter(has_text="Grace Hopper")).to_have_count(0)
    await expect(page.locator("#room-count")).to_have_text("1 person")


async def test_controls_and_tiles_say_their_state(dev_hub: HubHandle, browser: Chromium
                                                  ) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Standup")
    grace = await browser.open(link, "Grace Hopper")
    await grace.join()
    page = ada.page
    # Toggles are pressed while what they name is on.
    for name in ("Share screen", "Chat", "Transcript", "People"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_have_attribute(
            "aria-pressed", "false")
    await page.get_by_role("button", name="Chat", exact=True).click()
    await expect(page.get_by_role("button", name="Chat", exact=True)).to_have_attribute(
        "aria-pressed", "true")
    await expect(page.get_by_role("tab", name="Chat")).to_have_attribute("aria-selected", "true")
    await page.get_by_role("button", name="Transcript", exact=True).click()
    await expect(page.get_by_role("button", name="Transcript", exact=True)).to_have_attribute(
        "aria-pressed", "true")
    await expect(page.get_by_role("button", name="Chat", exact=True)).to_have_attribute(
        "aria-pressed", "false")
    await page.get_by_role("button", name="Share screen").click()
    await expect(page.get_by_role("button", name="Share screen")).to_have_attribute(
        "aria-pressed", "true")
    await page.get_by_role("button", name="Share screen").click()
    await expect(page.get_by_role("button", name="Share screen")).to_have_attribute(
        "aria-pressed", "false")
    await expect(page.get_by_role("button", name="Leave")).not_to_have_attribute(
        "aria-pressed", re.compile(".*"))

    # Grace's tile says who she is and what she sends; a change is announced.
    grace_tile = page.get_by_role("group", name="Grace Hopper", exact=True)
    await expect(grace_tile).to_be_visible()
    await grace.page.get_by_role("button", name="Mute").click()
    await expect(page.get_by_role("group", name="Grace Hopper, muted")).to_be_visible()
    await expect(page.locator("#announcer")).to_have_text("Grace Hopper muted")
    await grace.page.get_by_role("button", name="Stop video").click()
    await expect(page.get_by_role("group", name="Grace Hopper, muted, camera off")).to_be_visible()
    await expect(page.locator("#announcer")).to_have_text("Grace Hopper turned their camera off")
    await expect(page.get_by_role("group", name="Ada Lovelace (you)")).to_be_visible()


async def test_phone_screen(dev_hub: HubHandle, browser: Chromium) -> None:
    """Regression (390x844): alone in the room the page was 398 px wide (the tile and the
    invite card ran off the edge); a shared screen got a ~115 px column."""
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace", viewport=(390, 844))
    await expect(ada.page.locator("#lobby")).to_be_visible()
    lobby = await ada.page.evaluate(OVERFLOW.replace("#room *", "#lobby *"))
    assert lobby["scroll"] <= lobby["width"] and not lobby["wide"], lobby
    link = await ada.start_meeting("On the bus")
    await expect(ada.page.get_by_role("heading", name="You're the only one here")).to_be_visible()
    alone = await ada.page.evaluate(OVERFLOW)
    assert alone["scroll"] <= 390 and not alone["wide"], alone
    await ada.screenshot("room-phone-alone.png")

    grace = await browser.open(link, "Grace Hopper", viewport=(390, 844))
    await grace.join()
    await ada.wait_connected({await grace.peer_id()})
    await ada.page.get_by_role("button", name="Share screen").click()
    screen = grace.page.locator(".screen-tile")
    await expect(screen).to_be_visible(timeout=15_000)
    box = await screen.bounding_box()
    assert box is not None and box["width"] >= 0.9 * (390 - 20), box
    sharing = await grace.page.evaluate(OVERFLOW)
    assert sharing["scroll"] <= 390 and not sharing["wide"], sharing
    # The people beside the screen keep initials that fit their (small) avatars.
    await grace.page.get_by_role("button", name="Stop video").click()
    await expect(grace.page.locator(".tile.self")).to_have_attribute("data-video", "off")
    assert await grace.page.evaluate(CRAMPED_INITIALS) == []
    await grace.screenshot("room-phone-sharing.png")


async def test_initials_fit_and_toasts_leave_names_readable(dev_hub: HubHandle,
                                                            browser: Chromium) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Wanda Mwangi-Wu", viewport=(1280, 800))
    link = await ada.start_meeting("Names")
    others = []
    for name in ("Wim Wouters", "Mmeli Mwale"):
        page = await browser.open(link, name, viewport=(1280, 800))
        await page.join()
        others.append(page)
    for page in others:
        await page.page.get_by_role("button", name="Stop video").click()
    await ada.page.get_by_role("button", name="Stop video").click()
    await expect(ada.page.locator(".tile[data-video=off]")).to_have_count(3)
    # Presenting squeezes the people into a 220 px column: the widest initials still fit.
    await ada.page.get_by_role("button", name="Share screen").click()
    await expect(ada.page.locator(".screen-tile")).to_be_visible()
    assert await ada.page.evaluate(CRAMPED_INITIALS) == []
    await ada.page.get_by_role("button", name="Share screen").click()
    assert await ada.page.evaluate(CRAMPED_INITIALS) == []

    # A toast (someone chatting, then leaving) never covers anyone's name.
    await others[0].page.get_by_role("button", name="Chat", exact=True).click()
    await others[0].page.get_by_role("textbox", name="Chat message").fill("brb, doorbell")
    await others[0].page.keyboard.press("Enter")
    await expect(ada.page.locator(".toast", has_text="brb, doorbell")).to_be_visible()
    assert await ada.page.evaluate(TOAST_OVER_NAME) == []
    await others[1].page.get_by_role("button", name="Leave").click()
    await expect(ada.page.locator(".toast", has_text="Mmeli Mwale left")).to_be_visible()
    assert await ada.page.evaluate(TOAST_OVER_NAME) == []
    await asyncio.gather(*(p.aclose() for p in others))


async def test_host_asks_someone_to_mute(dev_hub: HubHandle, browser: Chromium) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Loud room")
    grace = await browser.open(link, "Grace Hopper")
    await grace.join()
    page = ada.page
    await page.get_by_role("button", name="People").click()
    grace_row = page.get_by_role("listitem").filter(has_text="Grace Hopper")
    await expect(grace_row).to_contain_text("Mic on")
    await page.get_by_role("button", name="Ask to mute Grace Hopper").click()
    # Grace's page mutes her and says who asked; she can unmute herself.
    await expect(grace.page.locator(".toast", has_text="Ada Lovelace asked you to mute")
                 ).to_be_visible()
    await expect(grace.page.get_by_role("button", name="Unmute")).to_be_visible()
    await expect(grace_row).to_contain_text("Muted")
    await expect(page.get_by_role("group", name="Grace Hopper, muted")).to_be_visible()
    await expect(page.get_by_role("button", name="Ask to mute Grace Hopper")).to_have_count(0)
    await grace.page.get_by_role("button", name="Unmute").click()
    await expect(grace_row).to_contain_text("Mic on")
