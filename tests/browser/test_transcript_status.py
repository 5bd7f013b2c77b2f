"""The demo says when transcription falls behind and what it lost, instead of a steady
"Transcribing" (issue 14: four pages got no transcript line in 8 minutes on a busy machine
while each showed "Transcribing")."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from signaling.testing.hub import HubHandle
from tests.support.browser import Chromium
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


async def test_the_page_shows_transcription_behind_and_the_speech_it_lost(
        dev_hub: HubHandle, browser: Chromium) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    await ada.start_meeting("Busy machine")
    room_id, ada_id = await ada.room_id(), await ada.peer_id()
    # A tap on the protocol alone: what it says is what the hub relays to the page.
    tap = await WsClient.connect(dev_hub.ws_url)
    try:
        await tap.join(dev_hub.mint_token(room_id, "tap-worker", "tap"))
        indicator = ada.page.locator("#transcribing")
        await expect(indicator).to_have_text("Transcribing")
        await tap.send({"type": "transcript-status", "state": "delayed", "behindMs": 3200})
        await expect(indicator).to_have_text("Transcription is behind")
        await expect(indicator).to_have_attribute("data-state", "delayed")
        await tap.send({"type": "transcript-status", "state": "dropping", "peerId": ada_id,
                        "dropped": 1, "behindMs": 16000})
        await expect(indicator).to_have_text(
            "Transcription is behind — some speech was not transcribed")
        await ada.page.click("#transcript-button")
        gap = ada.page.locator("#transcript-log .transcript-gap")
        await expect(gap).to_have_text("Some of your speech was not transcribed.")
        await tap.send({"type": "transcript-status", "state": "live"})
        await expect(indicator).to_have_text("Transcribing")
        await expect(indicator).to_have_attribute("data-state", "live")
        await expect(gap).to_have_count(1)  # the transcript keeps the gap
    finally:
        await tap.aclose()
