"""axe-core (vendored, tests/support/vendor) on the page as people get it: the lobby, a room
with four people (chat open, one muted, one camera off) and a notice. No serious or critical
violation of WCAG 2.2 A/AA or axe's best practices."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from signaling.testing.hub import HubHandle
from tests.support.a11y import axe_violations, describe
from tests.support.browser import Chromium, DemoPage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

NAMES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson")


async def check(page: DemoPage, where: str) -> None:
    found = await axe_violations(page.page)
    assert not found, f"{where}:\n{describe(found)}"


async def test_lobby_room_of_four_and_a_notice(dev_hub: HubHandle, browser: Chromium) -> None:
    ada = await browser.open(dev_hub.base_url + "/", NAMES[0], viewport=(1280, 800))
    await ada.page.wait_for_function("() => window.demo.preview?.getVideoTracks().length > 0")
    await check(ada, "the lobby")
    link = await ada.start_meeting("Accessible standup")
    pages = [ada]
    for name in NAMES[1:]:
        page = await browser.open(link, name)
        await page.join()
        pages.append(page)
    ids = {p.name: await p.peer_id() for p in pages}
    await asyncio.gather(*(p.wait_connected(set(ids.values()) - {ids[p.name]}) for p in pages))
    await pages[2].page.get_by_role("button", name="Mute").click()
    await pages[3].page.get_by_role("button", name="Stop video").click()
    await expect(ada.page.get_by_role("group", name="Katherine Johnson, camera off")
                 ).to_be_visible()
    await check(ada, "the room of four")
    await ada.page.get_by_role("button", name="Chat", exact=True).click()
    await ada.page.get_by_role("textbox", name="Chat message").fill("Hello all")
    await ada.page.keyboard.press("Enter")
    await check(ada, "the room with chat open")
    await ada.page.get_by_role("button", name="People").click()
    await check(ada, "the room with the people pane")
    # The invitee's lobby, and a notice (Grace leaves).
    lobby = await browser.open(link, "Edsger Dijkstra", viewport=(390, 844))
    await expect(lobby.page.get_by_role("button", name="Join meeting")).to_be_enabled()
    await check(lobby, "the invitee's lobby on a phone")
    await pages[1].page.get_by_role("button", name="Leave").click()
    await expect(pages[1].page.get_by_role("heading", name="You left the meeting")).to_be_visible()
    await check(pages[1], "the 'you left' notice")
