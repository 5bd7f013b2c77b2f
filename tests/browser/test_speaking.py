"""Who is talking: audio levels per tile (Web Audio), the active speaker highlighted, a hint
for someone talking while muted, and captions over the video that each viewer turns on or
off."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import pytest
from playwright.async_api import expect

from signaling import protocol as p
from signaling.app import HUB_KEY
from signaling.testing.hub import HubHandle
from tests.support.browser import Chromium, fake_audio_file_arg

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def tone_wav(path: Path, seconds: float = 3.0, hz: float = 220.0) -> Path:
    """A steady tone at about -12 dBFS: someone talking without pause, as far as levels go."""
    rate = 48_000
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate)))
            for i in range(int(rate * seconds))))
    return path


async def test_active_speaker_and_the_muted_hint(dev_hub: HubHandle, browser: Chromium,
                                                 tmp_path: Path) -> None:
    talker = await browser.launch(fake_audio_file_arg(tone_wav(tmp_path / "tone.wav")))
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Who's talking")
    await ada.page.get_by_role("button", name="Mute").click()  # Ada listens
    grace = await talker.open(link, "Grace Hopper")
    await grace.join()
    grace_id = await grace.peer_id()
    grace_tile = ada.tile(grace_id)
    # Grace talks: her tile on Ada's page is the active speaker, with a level.
    await expect(grace_tile).to_have_attribute("data-speaking", "true", timeout=15_000)
    level = await grace_tile.evaluate("(t) => Number(t.style.getPropertyValue('--level'))")
    assert level > 0.05, level
    await expect(ada.tile(await ada.peer_id())).to_have_attribute("data-speaking", "false")

    # Grace mutes and keeps talking: nobody hears her, and her page tells her so.
    await grace.page.get_by_role("button", name="Mute").click()
    await expect(grace_tile).to_have_attribute("data-speaking", "false")
    hint = grace.page.get_by_role("status").filter(has_text="You're muted")
    await expect(hint).to_be_visible()
    await grace.page.get_by_role("button", name="Unmute").click()
    await expect(hint).to_be_hidden()
    await expect(grace_tile).to_have_attribute("data-speaking", "true", timeout=15_000)


async def test_captions_over_the_video_per_viewer(dev_hub: HubHandle, browser: Chromium) -> None:
    ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
    link = await ada.start_meeting("Captioned", transcribe=True)
    grace = await browser.open(link, "Grace Hopper")
    await grace.join()
    room_id, grace_id = await ada.room_id(), await grace.peer_id()
    captions_button = ada.page.get_by_role("button", name="Captions")
    await expect(captions_button).to_have_attribute("aria-pressed", "false")
    await captions_button.click()
    await expect(captions_button).to_have_attribute("aria-pressed", "true")

    hub = dev_hub.app[HUB_KEY]
    for text, final in (("shall we", False), ("Shall we start?", True)):
        await hub.router.broadcast(room_id, p.Transcript(
            peer_id=grace_id, segment_id="seg-1", text=text, final=final, start_ms=0,
            end_ms=900))
    captions = ada.page.locator("#captions")
    await expect(captions).to_be_visible()
    await expect(captions.locator("p")).to_have_count(1)  # the final replaced the partial
    await expect(captions).to_have_text("Grace Hopper: Shall we start?")
    # Grace did not turn captions on: her page shows none (the choice is each viewer's).
    await expect(grace.page.get_by_role("button", name="Captions")).to_have_attribute(
        "aria-pressed", "false")
    await expect(grace.page.locator("#captions")).to_be_hidden()
    # Ada's choice holds for her next meeting page (kept in this browser).
    assert await ada.page.evaluate("() => localStorage.getItem('connvo.captions')") == "on"
    await captions_button.click()
    await expect(captions).to_be_hidden()
