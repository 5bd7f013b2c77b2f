"""The job queue the tap jobs and the mix jobs share (signaling/jobqueue.py): one contract,
run against the in-process queue and against a real redis-server. (The two job kinds had
kept a copy each of this logic; the copies had already drifted: only the mix jobs counted
deliveries, and only they refused to renew a job whose subject had a newer one.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from signaling.mixjobs import MemoryMixJobs, MixJob, RedisMixJobs
from signaling.redis_store import connect
from signaling.tapjobs import MemoryTapJobs, RedisTapJobs, TapJob
from signaling.testing.redis_server import RedisServer

RECLAIM_S = 0.2


def tap_job(n: int, room: str = "room_a") -> TapJob:
    return TapJob(job_id=f"tap_{n}", room_id=room, meeting_id="m", token="t", started_at_ms=1)


def mix_job(n: int, room: str = "room_a") -> MixJob:
    return MixJob(job_id=f"mix_{n}", meeting_id=f"m_{room}", room_id=room, started_at_ms=1,
                  ended_at_ms=2)


@pytest.fixture(params=["memory-tap", "redis-tap", "memory-mix", "redis-mix"])
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    kind = request.param
    make = tap_job if kind.endswith("tap") else mix_job
    if kind.startswith("memory"):
        jobs = (MemoryTapJobs if kind.endswith("tap") else MemoryMixJobs)(
            reclaim_after_s=RECLAIM_S)
        yield jobs, make
        return
    server: RedisServer = request.getfixturevalue("redis")
    client = connect(server.url)
    jobs = (RedisTapJobs if kind.endswith("tap") else RedisMixJobs)(
        client, reclaim_after_s=RECLAIM_S)
    try:
        yield jobs, make
    finally:
        await client.aclose()


async def test_one_open_job_per_subject_claimed_renewed_and_completed(
    queue: tuple[Any, Any],
) -> None:
    jobs, make = queue
    assert await jobs.enqueue(make(1))
    assert not await jobs.enqueue(make(2))  # the room/meeting has an open job
    assert await jobs.enqueue(make(3, room="room_b"))
    first = await jobs.claim("w1", timeout_s=1)
    second = await jobs.claim("w2", timeout_s=1)
    assert first is not None and second is not None
    assert {first.job_id, second.job_id} == {"tap_1", "tap_3"} or \
        {first.job_id, second.job_id} == {"mix_1", "mix_3"}
    assert first.entry and first.deliveries == 1
    assert await jobs.claim("w3", timeout_s=0.05) is None  # both held
    assert await jobs.renew("w1", first)
    assert not await jobs.renew("w2", first)  # not w2's
    await jobs.complete(first)
    assert not await jobs.renew("w1", first)
    assert await jobs.enqueue(make(4, room=first.room_id))  # the subject may have a new one


async def test_an_unrenewed_claim_goes_to_the_next_worker_and_counts_a_delivery(
    queue: tuple[Any, Any],
) -> None:
    jobs, make = queue
    assert await jobs.enqueue(make(1))
    first = await jobs.claim("dead", timeout_s=1)
    assert first is not None
    again = None
    for _ in range(10):  # after reclaim_after_s (claims block for 0.5 s at most each)
        again = await jobs.claim("alive", timeout_s=0.5)
        if again is not None:
            break
    assert again is not None and again.job_id == first.job_id and again.deliveries == 2
    assert not await jobs.renew("dead", first)  # the dead worker lost it
    assert await jobs.renew("alive", again)


async def test_a_released_job_is_handed_on_at_once(queue: tuple[Any, Any]) -> None:
    jobs, make = queue
    assert await jobs.enqueue(make(1))
    first = await jobs.claim("gone", timeout_s=1)
    assert first is not None
    await jobs.release("gone", first)
    again = await jobs.claim("next", timeout_s=0.1)  # before reclaim_after_s could pass
    assert again is not None and again.job_id == first.job_id
