"""A page going away: a reload resumes its seat (same peerId, the resume token kept in this
tab's sessionStorage) and its media flows again; a closed tab frees its seat at once instead of
holding it for the resume grace, so a newcomer is not told the room is full."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.browser import Chromium, inbound

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
async def hub_long_grace() -> AsyncIterator[HubHandle]:
    """A dev hub whose resume grace (120 s) outlasts every test here: a seat freed within the
    test was freed by the closing page, not by the grace running out."""
    handle = await start_hub(test_settings(auth={"dev_login": True},
                                           rooms={"resume_grace_s": 120.0}))
    try:
        yield handle
    finally:
        await handle.aclose()


async def test_reload_resumes_the_seat(hub_long_grace: HubHandle, browser: Chromium) -> None:
    hub = hub_long_grace
    ada = await browser.open(hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Reloads")
    grace = await browser.open(link, "Grace Hopper")
    await grace.join()
    grace_id, ada_id = await grace.peer_id(), await ada.peer_id()
    await ada.wait_connected({grace_id})
    await ada.record_events("peer-left", "peer-joined")

    await grace.page.reload()
    # Straight back into the room, no lobby: the same seat.
    await grace.wait_joined(timeout=20)
    assert await grace.peer_id() == grace_id
    assert await grace.page.evaluate("() => window.demo.room.seatResumed") is True
    await expect(grace.page.get_by_role("group", name="Grace Hopper (you)")).to_be_visible()
    # Ada never saw her leave; the connection is made afresh and media flows both ways.
    await ada.wait_connected({grace_id})
    await grace.wait_connected({ada_id})
    before = inbound(await ada.stats(), grace_id, "video")
    await ada.wait_stats(lambda s: inbound(s, grace_id, "video") > before + 10,
                         "video from Grace after her reload")
    await grace.wait_stats(lambda s: inbound(s, ada_id, "audio") > 20, "audio from Ada")
    assert await ada.recorded() == []
    await expect(ada.page.locator(".tiles > .tile")).to_have_count(2)
    await expect(ada.page.locator("#room-count")).to_have_text("2 people")


async def test_closed_tab_frees_its_seat(hub_long_grace: HubHandle, browser: Chromium) -> None:
    hub = hub_long_grace
    ada = await browser.open(hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Closing tabs")
    pages = [ada]
    for name in ("Grace Hopper", "Alan Turing", "Katherine Johnson"):
        page = await browser.open(link, name)
        await page.join()
        pages.append(page)
    await expect(ada.page.locator("#room-count")).to_have_text("4 people")
    alan = pages[2]
    alan_id = await alan.peer_id()
    await alan.page.close(run_before_unload=True)  # the tab is closed: pagehide fires
    await expect(ada.tile(alan_id)).to_have_count(0, timeout=20_000)
    await expect(ada.page.locator("#room-count")).to_have_text("3 people")
    # The seat is free well within the 120 s resume grace: a newcomer gets in.
    edsger = await browser.open(link, "Edsger Dijkstra")
    await edsger.join()
    await expect(edsger.page.locator("#room-count")).to_have_text("4 people")


async def test_leaving_forgets_the_session(hub_long_grace: HubHandle, browser: Chromium) -> None:
    """Leave, then reload: the lobby again (not back into the room)."""
    hub = hub_long_grace
    ada = await browser.open(hub.base_url + "/", "Ada Lovelace")
    await ada.start_meeting("Short")
    await ada.page.get_by_role("button", name="Leave").click()
    await expect(ada.page.get_by_role("heading", name="You left the meeting")).to_be_visible()
    await ada.page.reload()
    await expect(ada.page.get_by_role("button", name="Join meeting")).to_be_visible()
    assert await ada.page.evaluate("() => sessionStorage.getItem('connvo.session')") is None
