"""Three Chromium pages and one aiortc bot in one demo room: the full mesh, then the room's
everyday life (mute, screen share, chat, leaving) as the other participants see it."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest
from playwright.async_api import expect

from media import PeerClient, PeerClientConfig, ToneSpec
from signaling.testing.hub import HubHandle
from tests.support.browser import Chromium, inbound
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LOOPBACK = ("127.0.0.1",)


def bot_config(hub: HubHandle, room_id: str) -> PeerClientConfig:
    return PeerClientConfig(
        ws_url=hub.ws_url, token=hub.mint_token(room_id, "bot-1", name="Recorder Bot"),
        audio=ToneSpec(), pin_host_addresses=LOOPBACK, decode_video=False, ice_timeout_s=20.0,
        name="bot",
    )


async def test_three_browsers_and_a_bot(dev_hub: HubHandle, browser: Chromium) -> None:
    async with AsyncExitStack() as stack:
        ada = await browser.open(dev_hub.base_url + "/", "Ada Lovelace")
        link = await ada.start_meeting("Design review")
        grace = await browser.open(link, "Grace Hopper")
        await grace.join()
        # The bot joins third: it offers to the two browsers already in and answers the last.
        bot = await stack.enter_async_context(PeerClient(bot_config(dev_hub, await ada.room_id())))
        alan = await browser.open(link, "Alan Turing")
        await alan.join()
        pages = [ada, grace, alan]
        ids = {page.name: await page.peer_id() for page in pages}
        assert bot.peer_id is not None
        everyone = {*ids.values(), bot.peer_id}

        # All 6 connections are up: every page to 3 peers, and the bot to the 3 pages.
        await asyncio.gather(*(page.wait_connected(everyone - {ids[page.name]}) for page in pages),
                             bot.wait_connected(3, timeout=25))

        # Audio and video RTP on every browser pair, the bot's audio at every page.
        for page in pages:
            others = [ids[p.name] for p in pages if p is not page]
            await page.wait_stats(
                lambda s, others=others: all(inbound(s, o, "audio") > 20 and inbound(s, o, "video") > 10
                                             for o in others) and inbound(s, bot.peer_id, "audio") > 20,
                f"audio+video from {others} and audio from the bot")
        # The bot hears each browser's microphone (decoded Opus frames per peer).
        await bot.wait_audio_from(ids.values(), timeout=15)
        snapshot = await bot.snapshot()
        heard = {r.peer_id: r.audio_frames for r in snapshot.remote_peers}
        assert all(heard[pid] > 0 for pid in ids.values()), heard

        # Mute: the others see Grace's mute indicator (and the bot sees her media flags).
        mute_icon = ada.tile(ids["Grace Hopper"]).locator(".mic-off")
        await expect(mute_icon).to_be_hidden()
        await grace.page.click("#mic-button")
        for page in (ada, alan):
            await expect(page.tile(ids["Grace Hopper"]).locator(".mic-off")).to_be_visible()
        await expect(grace.page.locator("#mic-button")).to_have_attribute("data-on", "false")
        await wait_until(lambda: not bot.room_peers[ids["Grace Hopper"]].media.audio,
                         what="the bot seeing Grace mute")

        # Screen share from Ada, the polite peer of every connection: she renegotiates with
        # everyone (the bot answers a new video line too); the pages show her screen.
        await ada.page.click("#screen-button")
        for page in (grace, alan):
            screen = page.page.locator(f'.tile[data-key="{ids["Ada Lovelace"]}:screen"]')
            await expect(screen).to_be_visible(timeout=10_000)
            await expect(screen.locator(".name")).to_have_text("Ada Lovelace's screen")
        await grace.wait_stats(lambda s: s[ids["Ada Lovelace"]]["signalingState"] == "stable"
                               and s[ids["Ada Lovelace"]]["connectionState"] == "connected",
                               "stable after the renegotiation")
        await ada.page.click("#screen-button")
        await expect(grace.page.locator(".screen-tile")).to_have_count(0)

        # Chat from Alan reaches everyone, with his name.
        await alan.page.click("#chat-button")
        await alan.page.fill("#chat-input", "Shall we start with the agenda?")
        await alan.page.press("#chat-input", "Enter")
        for page in pages:
            message = page.page.locator("#chat-log .chat-message", has_text="start with the agenda")
            await expect(message).to_have_count(1)
            await expect(message.locator("b")).to_have_text("You" if page is alan else "Alan Turing")
        await expect(ada.page.locator("#chat-badge")).to_have_text("1")

        # Alan leaves: his tile disappears everywhere, the bot drops him.
        await expect(ada.tile(ids["Alan Turing"])).to_have_count(1)
        await alan.page.click("#leave-button")
        await expect(alan.page.locator("#notice-title")).to_have_text("You left the meeting")
        for page in (ada, grace):
            await expect(page.tile(ids["Alan Turing"])).to_have_count(0)
            await expect(page.page.locator("#room-count")).to_have_text("3 people")
        await wait_until(lambda: ids["Alan Turing"] not in bot.room_peers,
                         what="the bot seeing Alan leave")
