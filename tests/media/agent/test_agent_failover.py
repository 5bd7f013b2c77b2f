"""The agent's job fails over like the tap's: two standalone workers (``python -m media.tap``)
on the hub's Redis queue, ``kill -9`` of the one whose agent is in the room. The other claims
the job, its agent takes over the dropped agent's seat (``replaced``, not a wait for the resume
grace) and speaks again to the person. The default [agent] settings: script brain, espeak-ng,
the shipped scenarios."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from media.testing.agent_bot import PersonBot
from signaling import protocol as p
from signaling.testing.hub import HubHandle, start_hub, test_settings
from signaling.testing.meetings import start_agent_meeting
from signaling.testing.redis_server import RedisServer
from tests.conftest import require_binary
from tests.media.tap.test_tap_failover import RECLAIM_BOUND_S, TapProcess, serving_worker

SPEC = p.AgentSpec(scenario_id="interview-practice", name="Alex")


@pytest.fixture
async def redis_hub(redis: RedisServer) -> AsyncIterator[HubHandle]:
    handle = await start_hub(test_settings(redis={"url": redis.url}))
    try:
        yield handle
    finally:
        await handle.aclose()


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_kill_9_of_the_agents_worker_brings_the_agent_back_from_another(
    redis: RedisServer, redis_hub: HubHandle,
) -> None:
    require_binary("espeak-ng")
    hub = redis_hub
    workers = [TapProcess(name, redis.url, hub.ws_url) for name in ("agent-a", "agent-b")]
    try:
        for worker in workers:
            worker.start()
        _, room_id = await start_agent_meeting(hub, SPEC)
        async with PersonBot(hub.ws_url, hub.mint_token(room_id, "alice", "host")) as bot:
            with bot.client.messages() as messages:
                joined = await messages.wait_for(
                    p.PeerJoined, 60, lambda m: m.peer.role == "agent")
                first_agent = joined.peer.peer_id
                assert joined.peer.name == "Alex"
                await bot.agent_speech(time.time() - 60, timeout=30)  # the welcome
                holder = await serving_worker(redis.url)
                victim = next(w for w in workers if w.worker_id == holder)
                assert victim.proc is not None
                killed_at = time.time()
                victim.proc.kill()  # SIGKILL: no leave, no renewals
                victim.proc.wait(10)
                left = await messages.wait_for(p.PeerLeft, RECLAIM_BOUND_S + 10,
                                               lambda m: m.peer_id == first_agent)
                assert left.reason == "replaced", left
                back = await messages.wait_for(
                    p.PeerJoined, 10,
                    lambda m: m.peer.role == "agent" and m.peer.peer_id != first_agent)
                spoke = await bot.agent_speech(killed_at + 0.5, timeout=30)
        print(f"\nagent worker {holder} killed; the agent is back as {back.peer.peer_id} "
              f"(by the other worker) and speaking {spoke - killed_at:.1f} s after the kill")
        assert back.peer.name == "Alex"
        assert await serving_worker(redis.url) != holder
    except BaseException:
        for worker in workers:
            print(f"--- {worker.worker_id} log ---\n{worker.log()}")
        raise
    finally:
        for worker in workers:
            worker.stop()
