"""One contract for every WebhookStore: memory, a real redis-server, a real 3-master Cluster.

Lanes (one endpoint's events of one meeting) are delivered head first, by one lease holder at
a time; a lease that runs out passes the same event to the next claimer; a stale holder
changes nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from signaling.redis_store import connect
from signaling.webhook_store import MemoryWebhookStore, RedisWebhookStore
from signaling.webhooks import build_event
from tests.waiting import wait_until

BACKENDS = ["memory", "redis", "cluster"]
EP, OTHER = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A factory of stores sharing one backend (``max_queued`` per store)."""
    kind = request.param
    if kind == "memory":
        shared: dict[str, MemoryWebhookStore] = {}

        def memory(max_queued: int = 100) -> MemoryWebhookStore:
            # one process: every "worker" shares the same store object
            return shared.setdefault("s", MemoryWebhookStore(max_queued=max_queued))

        yield memory
        return
    server = request.getfixturevalue("redis" if kind == "redis" else "cluster")
    clients: list[Any] = []

    def redis(max_queued: int = 100) -> RedisWebhookStore:
        client = connect(server.url)
        clients.append(client)
        return RedisWebhookStore(client, max_queued=max_queued)

    yield redis
    for c in clients:
        await c.aclose()


def event(meeting: str, n: int, at_ms: int = 1_800_000_000_000) -> Any:
    return build_event("participant.joined", meeting, {"n": n}, at_ms=at_ms + n)


async def test_a_lane_is_delivered_head_first_by_one_holder(make_store: Any) -> None:
    store = make_store()
    events = [event("meeting_a1", n) for n in range(3)]
    for e in events:
        assert await store.enqueue(e, [EP]) == []
    got = []
    for _ in events:
        lease = await store.claim("w1", [EP], 10_000)
        assert lease is not None and lease.attempts == 0
        assert await store.claim("w2", [EP], 10_000) is None  # leased: nobody else
        got.append(lease.event)
        assert await store.delivered(lease)
    assert got == events  # same ids and the same body bytes, in order
    assert await store.claim("w1", [EP], 10_000) is None
    assert (await store.stats()).pending == 0


async def test_a_failing_meeting_holds_up_only_itself(make_store: Any) -> None:
    store = make_store()
    a1, a2, b1 = event("meeting_a1", 1), event("meeting_a1", 2), event("meeting_b2", 1)
    for e in (a1, a2, b1):
        await store.enqueue(e, [EP])
    first = await store.claim("w1", [EP], 10_000)
    assert first is not None and first.event == a1
    assert await store.retry(first, 60_000)  # a1 failed: its lane waits a minute
    due = await store.next_due_ms([EP])
    assert due is not None and due <= time.time() * 1000 + 1000  # b's lane: due now
    other = await store.claim("w1", [EP], 10_000)
    assert other is not None and other.event == b1  # meeting b goes on
    assert await store.delivered(other)
    assert await store.claim("w1", [EP], 10_000) is None  # a2 never overtakes a1
    due = await store.next_due_ms([EP])
    assert due is not None and due - time.time() * 1000 > 30_000  # a's retry, a minute on
    assert await store.next_due_ms([OTHER]) is None


async def test_a_retry_comes_back_after_its_delay_counting_attempts(make_store: Any) -> None:
    store = make_store()
    e = event("meeting_c3", 1)
    await store.enqueue(e, [EP])
    lease = await store.claim("w1", [EP], 10_000)
    assert lease is not None
    assert await store.retry(lease, 150)
    again = await wait_until(lambda: store.claim("w2", [EP], 10_000), 5,
                             what="the retried lane due again")
    assert again.event == e and again.attempts == 1
    assert await store.retry(again, 0)
    third = await wait_until(lambda: store.claim("w1", [EP], 10_000), 5, what="due again")
    assert third.attempts == 2


async def test_an_expired_lease_passes_the_event_on_and_fences_the_old_holder(
        make_store: Any) -> None:
    """A worker killed mid-delivery never finishes its attempt: once its lease runs out the
    next claimer gets the same event (same id); the old holder, should it come back, can
    neither remove it nor reschedule it."""
    store = make_store()
    e = event("meeting_d4", 1)
    await store.enqueue(e, [EP])
    dead = await store.claim("w_dead", [EP], 200)
    assert dead is not None
    taken = await wait_until(lambda: store.claim("w_alive", [EP], 10_000), 5,
                             what="the lane claimed after the lease ran out")
    assert taken.event == e and taken.owner != dead.owner
    assert not await store.delivered(dead)
    assert not await store.retry(dead, 0)
    assert await store.delivered(taken)
    assert (await store.stats()).pending == 0


async def test_endpoints_are_separate_lanes_and_bounded(make_store: Any) -> None:
    store = make_store(max_queued=2)
    e1, e2, e3 = (event("meeting_e5", n) for n in range(3))
    assert await store.enqueue(e1, [EP, OTHER]) == []
    assert await store.enqueue(e2, [EP]) == []
    assert await store.enqueue(e3, [EP, OTHER]) == [EP]  # EP holds its 2: e3 refused there
    stats = await store.stats()
    assert stats.pending == 4 and stats.oldest_ms == e1.created_ms
    lease = await store.claim("w1", [OTHER], 10_000)
    assert lease is not None and lease.endpoint == OTHER and lease.event == e1
    # OTHER's lane is leased, EP's is free: a worker configured for EP only takes EP's
    mine = await store.claim("w2", [EP], 10_000)
    assert mine is not None and mine.endpoint == EP
    assert await store.claim("w3", ["cccccccccccc"], 10_000) is None


async def test_participants_are_remembered_until_forgotten(make_store: Any) -> None:
    store = make_store()
    await store.note_participant("meeting_f6", "u1", b'{"userId":"u1"}')
    await store.note_participant("meeting_f6", "u1", b'{"userId":"u1","name":"x"}')
    await store.note_participant("meeting_f6", "u2", b'{"userId":"u2"}')
    assert sorted(await store.participants("meeting_f6")) == [
        b'{"userId":"u1","name":"x"}', b'{"userId":"u2"}']
    await store.forget_participants("meeting_f6")
    assert await store.participants("meeting_f6") == []
