"""The demo room with four people (and its screenshot), a fifth who finds it full, and someone
holding an expired link."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from playwright.async_api import expect

from signaling.meetings import mint_invite
from signaling.testing.hub import HubHandle
from tests.support.browser import REPO, Chromium, inbound

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NAMES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson")


async def test_four_people_then_full_then_expired_link(dev_hub: HubHandle, browser: Chromium) -> None:
    host = await browser.open(dev_hub.base_url + "/", NAMES[0], viewport=(1280, 800))
    link = await host.start_meeting("Launch plan")
    pages = [host]
    for name in NAMES[1:]:
        page = await browser.open(link, name)
        await page.join()
        pages.append(page)
    ids = {page.name: await page.peer_id() for page in pages}
    await asyncio.gather(*(p.wait_connected(set(ids.values()) - {ids[p.name]}) for p in pages))

    # What a real meeting looks like: one person muted, one with the camera off, a chat.
    grace, alan, katherine = pages[1:]
    await alan.page.click("#mic-button")
    await katherine.page.click("#cam-button")
    await host.page.click("#chat-button")
    await grace.page.click("#chat-button")
    await grace.page.fill("#chat-input", "Morning! I pushed the new timeline to the doc.")
    await grace.page.press("#chat-input", "Enter")
    await expect(host.page.locator("#chat-log .chat-message")).to_have_count(1)
    await host.page.fill("#chat-input", "Thanks, let's walk through it.")
    await host.page.press("#chat-input", "Enter")
    await expect(host.page.locator("#chat-log .chat-message")).to_have_count(2)
    await expect(host.tile(ids["Alan Turing"]).locator(".mic-off")).to_be_visible()
    await expect(host.tile(ids["Katherine Johnson"])).to_have_attribute("data-video", "off")
    await expect(host.page.locator(".tiles > .tile")).to_have_count(4)
    await expect(host.page.locator("#room-count")).to_have_text("4 people")
    # Video is playing in the tiles that have it (frames decoded from Grace and Alan).
    await host.wait_stats(lambda s: all(s[ids[n]]["inbound"]["video"]["frames"] > 30
                                        for n in ("Grace Hopper", "Alan Turing")),
                          "video frames from Grace and Alan")
    await expect(host.page.locator(".toast")).to_have_count(0, timeout=8_000)
    await host.page.wait_for_function(
        "() => [...document.querySelectorAll('.tile[data-video=on] video')]"
        ".every((v) => v.videoWidth > 0 && v.currentTime > 0.5)")
    shot = await host.screenshot("demo-room.png")
    # docs/demo-room.png is a copy of this file, refreshed by hand when the page changes.
    assert shot.stat().st_size > 20_000 and (REPO / "docs").is_dir()
    # The same room on a phone (390x844), as Grace sees it with the People pane closed.
    phone = pages[1].page
    await phone.set_viewport_size({"width": 390, "height": 844})
    await phone.get_by_role("button", name="Chat", exact=True).click()  # close the chat
    await expect(phone.locator("#panel")).to_be_hidden()
    await phone.wait_for_function(
        "() => [...document.querySelectorAll('.tile[data-video=on] video')]"
        ".every((v) => v.videoWidth > 0 && v.currentTime > 0.5)")
    assert await phone.evaluate("() => document.documentElement.scrollWidth") <= 390
    await pages[1].screenshot("demo-room-phone.png")

    # A fifth person with the link: the room is full, and the page says so in words.
    fifth = await browser.open(link, "Edsger Dijkstra")
    await fifth.join(expect_joined=False)
    await expect(fifth.page.locator("#notice-card")).to_have_attribute("data-code", "room-full",
                                                                        timeout=10_000)
    await expect(fifth.page.locator("#notice-title")).to_have_text("This meeting is full")
    await expect(fifth.page.locator("#notice-primary")).to_have_text("Try again")
    await fifth.screenshot("room-full.png")
    # Nobody inside noticed anything.
    await expect(host.page.locator(".tiles > .tile")).to_have_count(4)
    assert inbound(await host.stats(), ids["Grace Hopper"], "audio") > 0

    # An invite link that expired an hour ago: the page says so before anyone types a name.
    meeting_id = await host.page.evaluate(
        "() => JSON.parse(atob(window.demo.invite.split('.')[1].replace(/-/g, '+')"
        ".replace(/_/g, '/'))).mid")
    expired, _ = mint_invite(dev_hub.settings.auth.secrets[0], meeting_id, ttl_s=3600,
                             now=time.time() - 7200)
    late = await browser.open(f"{dev_hub.base_url}/?invite={expired}", "Late Larry")
    await expect(late.page.locator("#notice-card")).to_have_attribute("data-code",
                                                                       "invite-expired")
    await expect(late.page.locator("#notice-title")).to_have_text("This invite link has expired")
    await late.screenshot("link-expired.png")


def copy_screenshot_to_docs() -> None:
    """``python -m tests.browser.test_demo_room``: refresh docs/demo-room.png (1280x800) and
    docs/demo-room-phone.png (390x844) from the last run."""
    for name in ("demo-room.png", "demo-room-phone.png"):
        shutil.copy(REPO / "test-artifacts" / "browser" / name, REPO / "docs" / name)


if __name__ == "__main__":
    copy_screenshot_to_docs()
