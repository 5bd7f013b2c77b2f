"""Connection quality per tile, from getStats: good on loopback, and the page's own rules
(quality.js, run in the browser) for round-trip time, loss and jitter."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from signaling.testing.hub import HubHandle
from tests.support.browser import Chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def sample(*, state: str = "connected", received: int = 1000, lost: int = 0, rtt: float = 0.01,
           jitter: float = 0.002) -> dict[str, Any]:
    """One peer's ``room.getStats()`` entry, as the client reports it."""
    kind = {"packets": received, "bytes": 0, "lost": lost, "jitter": jitter}
    return {"connectionState": state, "roundTripTime": rtt,
            "inbound": {"audio": kind, "video": {**kind, "packets": 0, "lost": 0, "frames": 0}}}


async def test_tiles_show_connection_quality(dev_hub: HubHandle, browser: Chromium) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Quality")
    grace = await browser.open(link, "Grace Hopper")
    await grace.join()
    tile = ada.tile(await grace.peer_id())
    await expect(tile).to_have_attribute("data-quality", "good", timeout=15_000)
    await expect(tile.get_by_role("img", name="Connection: good")).to_have_count(1)

    # The rules, in the page's own module.
    cases = [
        (sample(), sample(received=500), "good"),
        (sample(rtt=0.4), sample(received=500), "fair"),
        (sample(rtt=0.8), sample(received=500), "poor"),
        (sample(received=1000, lost=30), sample(received=500, lost=0), "fair"),  # 5.7 %
        (sample(received=1000, lost=100), sample(received=500, lost=0), "poor"),  # 16.7 %
        (sample(jitter=0.05), sample(received=500), "fair"),
        (sample(received=1000), sample(received=1000), "poor"),  # nothing arrived since
        (sample(state="disconnected"), sample(), "poor"),
        (sample(state="connecting"), None, "unknown"),
    ]
    got = await ada.page.evaluate(
        """async (cases) => {
            const { qualityOf } = await import('/static/quality.js');
            return cases.map(([now, before]) => qualityOf(now, before));
        }""", [[now, before] for now, before, _ in cases])
    assert got == [want for *_, want in cases]
