"""Load-test bots (media.bots) against a real hub on loopback.

Bots run in the test's event loop next to the in-process hub; ICE host candidates are pinned
to 127.0.0.1, so every packet stays on loopback. Assertions read the bots' own counters (their
:class:`~media.bots.BotResult`), never wall-clock speed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from itertools import combinations

import pytest

from media.bots import Bot, BotResult, BotTimes, bot_client_config
from media.sources import OpusSource, OpusSpec, ToneSpec, encode_opus_spec, open_audio_source
from signaling.testing.hub import HubHandle
from tests.support.wsclient import seated
from tests.waiting import wait_until

LOOPBACK = ("127.0.0.1",)


def make_bot(hub: HubHandle, token: str, index: int, room_id: str, expected_peers: int = 3,
             **kwargs: object) -> Bot:
    config = bot_client_config(hub.ws_url, token, name=f"bot-{index}",
                               pin_host_addresses=LOOPBACK, **kwargs)  # type: ignore[arg-type]
    return Bot(config, index=index, room_id=room_id, expected_peers=expected_peers)


def times(join_in: float = 0.0, window_in: float = 1.0, window_s: float = 1.0) -> BotTimes:
    now = time.monotonic()
    return BotTimes(join_at=now + join_in, window_start=now + window_in,
                    window_end=now + window_in + window_s)


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    crashed = [r for r in caplog.records if r.exc_info]
    assert not crashed, [r.getMessage() for r in crashed]


# --------------------------------------------------------------------------- profiles


def test_cheap_and_naive_profiles() -> None:
    cheap = bot_client_config("ws://127.0.0.1:1/ws", "t")
    assert isinstance(cheap.audio, OpusSpec)
    assert not cheap.decode_audio and not cheap.decode_video
    assert cheap.resume_attempts == 0  # a dropped socket is an error a load test must show
    naive = bot_client_config("ws://127.0.0.1:1/ws", "t", profile="naive")
    assert isinstance(naive.audio, ToneSpec) and naive.decode_audio and naive.decode_video
    with pytest.raises(ValueError):
        bot_client_config("ws://127.0.0.1:1/ws", "t", profile="fast")  # type: ignore[arg-type]


async def test_cheap_bots_of_a_process_share_one_encoded_clip() -> None:
    clip = encode_opus_spec(OpusSpec(tone_duration_s=0.2))
    configs = [bot_client_config("ws://127.0.0.1:1/ws", "t", opus_clip=clip) for _ in range(2)]
    sources = [await open_audio_source(c.audio) for c in configs]
    assert all(isinstance(s, OpusSource) and s.clip is clip for s in sources)
    assert "clip" not in repr(configs[0].audio)  # ten kilobytes of packets stay out of logs


# --------------------------------------------------------------------------- media


@pytest.mark.slow
async def test_two_rooms_of_four_bots_connect_and_hear_everyone(
    hub: HubHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    rooms = [(await hub.create_room(host=f"host{r}"))[1] for r in range(2)]
    bots = [
        make_bot(hub, hub.mint_token(room_id, f"u{r}{s}", "host" if s == 0 else "participant"),
                 r * 4 + s, room_id)
        for r, room_id in enumerate(rooms) for s in range(4)
    ]
    start = time.monotonic()
    # 20 joins/s, then 2 s to connect, then a 5 s window.
    schedule = [BotTimes(join_at=start + i * 0.05, window_start=start + 2.5,
                         window_end=start + 7.5) for i in range(len(bots))]
    async with asyncio.timeout(30):
        results: list[BotResult] = list(await asyncio.gather(
            *(bot.run(t) for bot, t in zip(bots, schedule, strict=True))))

    assert [r.error for r in results] == [None] * 8
    assert all(r.errors == {} for r in results), [r.errors for r in results]
    by_room: dict[str, list[BotResult]] = {}
    for r in results:
        by_room.setdefault(r.room_id, []).append(r)
    connected_pairs = 0
    for members in by_room.values():
        ids = {r.peer_id for r in members}
        assert len(ids) == 4 and None not in ids
        for a, b in combinations(members, 2):
            a_to_b = next(x for x in a.remotes if x.peer_id == b.peer_id)
            b_to_a = next(x for x in b.remotes if x.peer_id == a.peer_id)
            if a_to_b.connected_after_s is not None and b_to_a.connected_after_s is not None:
                connected_pairs += 1
        for r in members:
            # Every bot hears every other bot of its room, and only them.
            assert {x.peer_id for x in r.remotes} == ids - {r.peer_id}
            for remote in r.remotes:
                assert remote.state == "connected"
                assert remote.first_audio_after_s is not None
                assert remote.audio_packets > 0 and not remote.audio_decoded
    assert connected_pairs == 12
    expected = sum(r.packets_expected for r in results)
    received = sum(r.packets_received for r in results)
    assert expected >= 8 * 3 * 240  # 5 s window at 50 packets/s per remote peer
    assert received / expected >= 0.95, (received, expected)
    assert_no_tracebacks(caplog)


# --------------------------------------------------------------------------- failures


async def test_bot_against_a_full_room_ends_with_room_full(
    hub: HubHandle, caplog: pytest.LogCaptureFixture
) -> None:
    _, room_id = await hub.create_room()
    async with seated(hub, room_id):
        bot = make_bot(hub, hub.mint_token(room_id, "fifth"), 4, room_id)
        async with asyncio.timeout(10):
            result = await bot.run(times())
    assert (result.error, result.state, result.peer_id) == ("room-full", "failed", None)
    assert result.errors == {"room-full": 1}
    # A bot that never got in counts as hearing nothing for the whole window.
    assert result.packets_expected == 3 * 50 and result.packets_received == 0
    assert bot.phase == "failed" and bot.client.state == "closed"
    assert_no_tracebacks(caplog)


async def test_bot_with_an_expired_token_ends_with_unauthenticated(
    hub: HubHandle, caplog: pytest.LogCaptureFixture
) -> None:
    _, room_id = await hub.create_room()
    token, _ = hub.tokens.mint_join(room_id, "late", "participant", ttl_s=60,
                                    now=time.time() - 3600)
    bot = make_bot(hub, token, 0, room_id)
    async with asyncio.timeout(10):
        result = await bot.run(times())
    assert (result.error, result.state) == ("unauthenticated", "failed")
    assert result.remotes == [] and result.join_s is None
    assert_no_tracebacks(caplog)


async def test_bot_against_a_stopped_hub_ends_with_hub_unreachable(
    hub: HubHandle, caplog: pytest.LogCaptureFixture
) -> None:
    _, room_id = await hub.create_room()
    token = hub.mint_token(room_id, "alice")
    await hub.runner.cleanup()
    bot = make_bot(hub, token, 0, room_id)
    async with asyncio.timeout(10):
        result = await bot.run(times())
    assert (result.error, result.state) == ("hub-unreachable", "failed")
    assert_no_tracebacks(caplog)


async def test_bot_whose_hub_dies_mid_run_reports_it(
    hub: HubHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """Bots do not resume: a hub that goes away during the run is an error in the result,
    and the bot still finishes on schedule instead of hanging."""
    _, room_id = await hub.create_room()
    bot = make_bot(hub, hub.mint_token(room_id, "alice"), 0, room_id, expected_peers=1)
    run = asyncio.create_task(bot.run(times(window_in=0.5, window_s=0.5)))
    await wait_until(lambda: bot.phase == "joined", what="the bot joining")
    await hub.runner.cleanup()  # closes every socket with 1001
    async with asyncio.timeout(10):
        result = await run
    assert result.error == "hub-unreachable" and result.state == "failed"
    assert result.join_s is not None and result.packets_received == 0
    assert_no_tracebacks(caplog)


async def test_stop_ends_a_waiting_bot_at_once(hub: HubHandle) -> None:
    _, room_id = await hub.create_room()
    bot = make_bot(hub, hub.mint_token(room_id, "alice"), 0, room_id, expected_peers=1)
    run = asyncio.create_task(bot.run(times(join_in=60, window_in=61, window_s=60)))
    await asyncio.sleep(0)  # one turn of the loop: run() starts and parks in its wait to join
    assert not run.done() and bot.phase == "waiting"
    bot.stop()
    async with asyncio.timeout(5):
        result = await run
    assert result.error is None and result.peer_id is None and result.packets_expected == 0
    await bot.aclose()  # idempotent after run
