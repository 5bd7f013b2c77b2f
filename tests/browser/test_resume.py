"""A page whose websocket dies resumes its seat; its media never stops and nobody sees it leave."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from playwright.async_api import expect

from signaling.app import HUB_KEY
from signaling.testing.hub import HubHandle
from tests.support.browser import Chromium, inbound
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_dropped_socket_resumes_and_media_keeps_flowing(dev_hub: HubHandle,
                                                              browser: Chromium) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Standup")
    grace = await browser.open(link, "Grace Hopper")
    await grace.join()
    alan = await browser.open(link, "Alan Turing")
    await alan.join()
    pages = [ada, grace, alan]
    ids = {page.name: await page.peer_id() for page in pages}
    ada_id = ids["Ada Lovelace"]
    await asyncio.gather(*(p.wait_connected(set(ids.values()) - {ids[p.name]}) for p in pages))
    watchers = [grace, alan]
    for page in watchers:
        await page.wait_stats(lambda s: inbound(s, ada_id, "audio") > 20
                              and inbound(s, ada_id, "video") > 10, "media from Ada")
        await page.record_events("peer-left", "peer-joined")
    await ada.record_events("state", "joined", "reconnecting")

    # A network drop as the hub sees it: the TCP connection is aborted under the websocket.
    hub = dev_hub.app[HUB_KEY]
    dropped = hub.router.socket_of(ada_id)
    dropped.abort()

    # While Ada reconnects and after, the others keep receiving her audio and video: every
    # sample (about every 300 ms, from the drop until five samples after her page resumed)
    # shows more packets than the one before.
    samples: dict[str, list[tuple[int, int]]] = {p.name: [] for p in watchers}
    after_resume = 0

    async def sampled_past_the_resume() -> bool:
        nonlocal after_resume
        resumed = any(e["type"] == "joined" and e["resumed"] for e in await ada.recorded())
        for page in watchers:
            stats = await page.stats()
            samples[page.name].append((inbound(stats, ada_id, "audio"),
                                       inbound(stats, ada_id, "video")))
        after_resume += resumed
        return after_resume >= 5

    await wait_until(sampled_past_the_resume, timeout=20, interval=0.3,
                     what="Ada's page resuming (and five samples of her media after it)")
    for name, series in samples.items():
        assert len(series) >= 5, series
        for (audio0, video0), (audio1, video1) in itertools.pairwise(series):
            assert audio1 > audio0 and video1 > video0, f"{name} lost Ada's media: {series}"

    # Ada resumed: same peerId, a new socket on the hub, `joined {resumed: true}`.
    await ada.page.wait_for_function("() => window.demo.room.state === 'joined'")
    assert await ada.peer_id() == ada_id
    assert hub.router.socket_of(ada_id) is not dropped
    events = await ada.recorded()
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states[:2] == ["reconnecting", "joined"], events
    assert [e["resumed"] for e in events if e["type"] == "joined"] == [True], events
    await expect(ada.page.locator("#notice")).to_be_hidden()

    # Nobody saw her leave (or come back), and her tile never went away.
    for page in watchers:
        assert await page.recorded() == [], await page.recorded()
        await expect(page.tile(ada_id)).to_have_count(1)
        assert (await page.peer_states())[ada_id] == "connected"

    # The resumed socket carries signalling again: a mute still reaches everyone.
    await ada.page.click("#mic-button")
    for page in watchers:
        await expect(page.tile(ada_id).locator(".mic-off")).to_be_visible()

    # The browser reports a network change: Ada restarts ICE with everyone (new credentials,
    # renegotiated over the resumed socket) and the media keeps flowing.
    before = await ada.stats()
    watched = {page.name: inbound(await page.stats(), ada_id, "video") for page in watchers}
    await ada.page.evaluate("() => window.dispatchEvent(new Event('online'))")
    await ada.wait_stats(
        lambda s: all(s[pid]["iceUfrag"] not in (None, before[pid]["iceUfrag"])
                      and s[pid]["signalingState"] == "stable"
                      and s[pid]["connectionState"] == "connected" for pid in before),
        "ICE restarted with every peer")
    for page in watchers:
        await page.wait_stats(
            lambda s, page=page: inbound(s, ada_id, "video") > watched[page.name] + 10,
            "video from Ada after the ICE restart")
