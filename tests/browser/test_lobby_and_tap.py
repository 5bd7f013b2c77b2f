"""A blocked camera is explained and does not stop anyone joining; the transcription tap gets
each page's audio (and nothing else), is never shown, and its transcripts appear in the pane;
a recorded meeting shows REC while the server peer records."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from media import PeerClient, PeerClientConfig
from signaling import protocol as p
from signaling.app import HUB_KEY
from signaling.testing.hub import HubHandle
from tests.support.browser import Chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

BLOCKED = ("navigator.mediaDevices.getUserMedia = () => "
           "Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));")


async def test_blocked_camera_is_explained_and_the_person_still_joins(
        dev_hub: HubHandle, browser: Chromium) -> None:
    page = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    await page.context.add_init_script(BLOCKED)
    await page.page.reload()
    banner = page.page.locator("#media-banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_have_attribute("data-code", "microphone-blocked")
    await expect(page.page.locator("#media-banner-title")).to_have_text(
        "Camera and microphone are blocked")
    await expect(page.page.locator("#preview")).to_have_attribute("data-video", "off")

    await page.start_meeting("Listening in")
    self_tile = page.tile(await page.peer_id())
    await expect(self_tile).to_have_attribute("data-video", "off")
    await expect(self_tile.locator(".mic-off")).to_be_visible()
    await expect(page.page.locator("#mic-button .label")).to_have_text("Unmute")
    await page.page.click("#mic-button")
    await expect(page.page.locator(".toast", has_text="microphone is blocked")).to_be_visible()


async def test_tap_gets_audio_only_is_hidden_and_its_transcripts_show(
        dev_hub: HubHandle, browser: Chromium) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    # A transcribed meeting (the hub's own tap is off: this test's peer plays the tap). Since
    # rooms that only record also get a server peer, the page says "Transcribing" only when
    # the room's features say it transcribes.
    link = await ada.start_meeting("Transcribed call", transcribe=True)
    room_id = await ada.room_id()
    tap_config = PeerClientConfig(
        ws_url=dev_hub.ws_url, token=dev_hub.mint_token(room_id, "tap-worker", "tap"),
        audio=None, pin_host_addresses=("127.0.0.1",), decode_audio=False, ice_timeout_s=20.0,
        name="tap")
    # The tap joins after Ada (it offers to her), before Grace (she offers to it).
    async with PeerClient(tap_config) as tap:
        grace = await browser.open(link, "Grace Hopper")
        await grace.join()
        pages = [ada, grace]
        ids = {page.name: await page.peer_id() for page in pages}
        assert tap.peer_id is not None
        await tap.wait_connected(2, timeout=20)
        await tap.wait_audio_from(ids.values(), timeout=15)

        for page in pages:
            other = ids["Grace Hopper" if page is ada else "Ada Lovelace"]
            # The tap is a connection, never a participant: no tile, not counted.
            await page.wait_connected({other})
            await expect(page.page.locator(".tiles > .tile")).to_have_count(2)
            await expect(page.tile(tap.peer_id)).to_have_count(0)
            await expect(page.page.locator("#room-count")).to_have_text("2 people")
            await expect(page.page.locator("#transcribing")).to_be_visible()
            # To the tap: our audio, no video, nothing back.
            stats = await page.wait_stats(
                lambda s: s.get(tap.peer_id, {}).get("outbound", {}).get("audio", {})
                .get("packets", 0) > 20, "audio to the tap")
            to_tap = stats[tap.peer_id]
            assert to_tap["connectionState"] == "connected"
            assert to_tap["outbound"]["video"]["packets"] == 0
            assert to_tap["inbound"]["audio"]["packets"] == 0
            assert to_tap["inbound"]["video"]["packets"] == 0

        # Transcripts (sent to the room as the tap worker will): interim, then final.
        hub = dev_hub.app[HUB_KEY]
        grace_id = ids["Grace Hopper"]
        line = ada.page.locator("#transcript-log .transcript-line")
        for text, final in (("thanks for joining", False),
                            ("Thanks for joining, everyone.", True)):
            await hub.router.broadcast(room_id, p.Transcript(
                peer_id=grace_id, segment_id="seg-1", text=text, final=final, start_ms=1200,
                end_ms=2900))
            await expect(line.locator("span")).to_have_text(text)  # shown before the next
        await ada.page.click("#transcript-button")
        await expect(line).to_have_count(1)
        await expect(line.locator("b")).to_have_text("Grace Hopper")
        await expect(line.locator("span")).to_have_text("Thanks for joining, everyone.")
        await expect(line).not_to_have_class("transcript-line interim")
        await expect(grace.page.locator("#transcript-log .transcript-line b")).to_have_text("You")


async def test_a_recorded_meeting_shows_rec_while_the_server_peer_records(
        dev_hub: HubHandle, browser: Chromium) -> None:
    """The host ticks "Record": everyone sees REC while the room's server peer says it
    records, and not when it says it stopped; a server peer in a room that records without
    transcribing does not make the page say "Transcribing"."""
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    await ada.start_meeting("Recorded call", record=True)
    room_id = await ada.room_id()
    badge = ada.page.locator("#recording-badge")
    await expect(badge).to_be_hidden()
    tap_config = PeerClientConfig(
        ws_url=dev_hub.ws_url, token=dev_hub.mint_token(room_id, "tap-worker", "tap"),
        audio=None, pin_host_addresses=("127.0.0.1",), decode_audio=False, ice_timeout_s=20.0,
        name="tap")
    async with PeerClient(tap_config) as tap:
        assert tap.joined is not None and tap.joined.features.recording
        tap.send(p.RecordingIn(state="recording"))
        await expect(badge).to_be_visible()
        await expect(badge).to_have_text("REC")
        await expect(ada.page.locator("#transcribing")).to_be_hidden()
        tap.send(p.RecordingIn(state="stopped"))
        await expect(badge).to_be_hidden()
