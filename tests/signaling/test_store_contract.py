"""One contract for every Store and Bus: memory, a real redis-server, a real 3-master Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from signaling.bus import Envelope, MemoryBus
from signaling.errors import BadRequest, Conflict, Forbidden, NotFound, RoomEnded, RoomFull
from signaling.memory_store import MemoryStore
from signaling.protocol import Features, MediaState
from signaling.redis_bus import RedisBus
from signaling.redis_store import RedisStore, connect
from signaling.store import Meeting, Room, Seat
from tests.waiting import wait_until

BACKENDS = ["memory", "redis", "cluster"]




@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any, Any]]:
    """(store, make_bus, server) for one backend."""
    kind = request.param
    if kind == "memory":
        shared = MemoryBus()
        yield MemoryStore(), lambda: shared, None
        return
    server = request.getfixturevalue("redis" if kind == "redis" else "cluster")
    cluster = kind == "cluster"
    clients: list[Any] = []

    def make_client() -> Any:
        c = connect(server.url)
        clients.append(c)
        return c

    store = RedisStore(make_client())
    yield store, lambda: RedisBus(make_client(), cluster=cluster), server
    for c in clients:
        await c.aclose()


def meeting(n: int = 1, **kw: Any) -> Meeting:
    return Meeting(meeting_id=f"meeting_{n:04x}abc", title="t", organizer_id="host",
                   participant_emails=("a@x.io",), created_at=1, updated_at=1, **kw)


def room_for(m: Meeting, capacity: int = 4) -> Room:
    return Room(room_id="room_" + m.meeting_id.split("_", 1)[1], meeting_id=m.meeting_id,
                capacity=capacity, features=Features(max_participants=capacity), created_at=2)


def seat(room: Room, i: int, role: str = "participant", user: str | None = None,
         worker: str = "w1") -> Seat:
    return Seat(peer_id=f"p_{i}", room_id=room.room_id, user_id=user or f"u{i}", role=role,
                joined_at=1000 + i, worker_id=worker, resume_hash=f"h{i}")


async def make_room(store: Any, n: int = 1, capacity: int = 4) -> Room:
    m = meeting(n)
    await store.create_meeting(m)
    return await store.attach_room(room_for(m, capacity))


async def test_meeting_lifecycle(backend: tuple[Any, Any, Any]) -> None:
    store, _, _ = backend
    m = meeting()
    await store.create_meeting(m)
    with pytest.raises(Conflict):
        await store.create_meeting(m)
    got = await store.get_meeting(m.meeting_id)
    assert got == m
    assert await store.get_meeting("meeting_missing") is None
    active = await store.transition_meeting(m.meeting_id, "active", from_states=("scheduled",),
                                            now_ms=50)
    assert active.state == "active" and active.started_at == 50 and active.updated_at == 50
    with pytest.raises(Conflict) as err:
        await store.transition_meeting(m.meeting_id, "cancelled", from_states=("scheduled",),
                                       now_ms=60)
    assert err.value.code == "meeting-active"
    with pytest.raises(NotFound):
        await store.transition_meeting("meeting_nope", "active", from_states=("scheduled",),
                                       now_ms=1)
    room = await store.attach_room(room_for(m))
    again = await store.attach_room(msgspec_replace(room_for(m), created_at=99))
    assert again == room  # idempotent: the first room wins
    assert (await store.get_meeting(m.meeting_id)).room_id == room.room_id
    assert await store.get_room(room.room_id) == room


def msgspec_replace(obj: Any, **kw: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(obj, **kw)


async def test_admission_capacity_and_roles(backend: tuple[Any, Any, Any]) -> None:
    store, _, _ = backend
    room = await make_room(store, capacity=2)
    await store.admit(seat(room, 1))
    await store.admit(seat(room, 2))
    with pytest.raises(RoomFull):
        await store.admit(seat(room, 3))
    tap = await store.admit(seat(room, 9, role="tap"))
    assert tap.seat.role == "tap"
    assert [s.peer_id for s in tap.seats] == ["p_1", "p_2", "p_9"]  # the room after admission
    assert await store.presence(room.meeting_id, "u1") == "joined"  # set by admission
    assert await store.presence(room.meeting_id, "u9") is None  # the tap is nobody's presence
    with pytest.raises(RoomFull):
        await store.admit(seat(room, 10, role="tap"))
    assert [s.peer_id for s in await store.seats(room.room_id)] == ["p_1", "p_2", "p_9"]
    with pytest.raises(NotFound):
        await store.admit(Seat(peer_id="p_x", room_id="room_missing", user_id="u", role="host"))


async def test_concurrent_admission_is_atomic(backend: tuple[Any, Any, Any]) -> None:
    store, _, _ = backend
    room = await make_room(store)
    results = await asyncio.gather(*(store.admit(seat(room, i)) for i in range(40)),
                                   return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    assert len(admitted) == 4
    assert all(isinstance(r, RoomFull) for r in results if isinstance(r, BaseException))
    assert len(await store.seats(room.room_id)) == 4


async def test_detach_resume_and_remove(backend: tuple[Any, Any, Any]) -> None:
    store, _, _ = backend
    room = await make_room(store)
    await store.admit(seat(room, 1))
    assert await store.reattach(room.room_id, "p_1", "wrong", "u1", "w2") is None
    assert await store.reattach(room.room_id, "p_1", "h1", "someone-else", "w2") is None
    assert await store.detach(room.room_id, "p_1", now_ms=500, worker_id="w-other") is None
    detached = await store.detach(room.room_id, "p_1", now_ms=500, worker_id="w1")
    assert detached is not None and not detached.connected and detached.detached_at == 500
    back = await store.reattach(room.room_id, "p_1", "h1", "u1", "w2")
    assert back is not None and back.connected and back.worker_id == "w2"
    assert back.detached_at is None
    # A stale grace timer (detached at 500) must not remove the resumed seat.
    assert await store.remove_seat(room.room_id, "p_1", only_if_detached_since=500) is None
    assert await store.remove_seat(room.room_id, "p_1", only_if_worker="w1") is None
    media = await store.update_media(room.room_id, "p_1", MediaState(audio=True, video=True))
    assert media is not None and media.media.video
    gone = await store.remove_seat(room.room_id, "p_1", only_if_worker="w2")
    assert gone is not None and gone.peer_id == "p_1"
    assert await store.seats(room.room_id) == []
    assert await store.update_media(room.room_id, "p_1", MediaState()) is None


async def test_same_user_replaces_own_dropped_seat(backend: tuple[Any, Any, Any]) -> None:
    store, _, _ = backend
    room = await make_room(store, capacity=1)
    await store.admit(seat(room, 1, user="bob"))
    await store.detach(room.room_id, "p_1", now_ms=10)
    admission = await store.admit(seat(room, 2, user="bob"))
    assert [s.peer_id for s in admission.replaced] == ["p_1"]
    assert [s.peer_id for s in await store.seats(room.room_id)] == ["p_2"]


async def test_one_seat_per_user_and_a_new_tap_replaces_a_dropped_one(
        backend: tuple[Any, Any, Any]) -> None:
    """A user's connected seat is replaced too (one seat per user); a tap is not a user's: a
    new tap replaces a dropped tap's seat at once (a dead tap worker's seat waited out its
    resume grace when the rule was first tightened), but never a connected tap."""
    store, _, _ = backend
    room = await make_room(store, capacity=2)
    await store.admit(seat(room, 1, user="bob"))
    admission = await store.admit(seat(room, 2, user="bob"))  # p_1 is still connected
    assert [s.peer_id for s in admission.replaced] == ["p_1"]
    await store.admit(seat(room, 3, role="tap", user="tap"))
    with pytest.raises(RoomFull):
        await store.admit(seat(room, 4, role="tap", user="tap"))  # the first tap is live
    await store.detach(room.room_id, "p_3", now_ms=10)
    admission = await store.admit(seat(room, 5, role="tap", user="tap"))
    assert [s.peer_id for s in admission.replaced] == ["p_3"]
    assert sorted(s.peer_id for s in await store.seats(room.room_id)) == ["p_2", "p_5"]


async def test_ban_and_end(backend: tuple[Any, Any, Any]) -> None:
    store, _, _ = backend
    room = await make_room(store)
    await store.admit(seat(room, 1))
    await store.ban(room.room_id, "u2")
    with pytest.raises(Forbidden):
        await store.admit(seat(room, 2))
    ended = await store.end_room(room.room_id, "bye", now_ms=77)
    assert ended is not None and ended.state == "ended" and ended.end_reason == "bye"
    assert await store.end_room(room.room_id, "again", now_ms=78) is None
    assert await store.seats(room.room_id) == []
    with pytest.raises(RoomEnded):
        await store.admit(seat(room, 3))


async def test_presence(backend: tuple[Any, Any, Any]) -> None:
    store, _, _ = backend
    m = meeting()
    await store.create_meeting(m)
    assert await store.presence(m.meeting_id, "u1") is None
    await store.set_presence(m.meeting_id, "u1", "joined")
    await store.set_presence(m.meeting_id, "u1", "left")
    assert await store.presence(m.meeting_id, "u1") == "left"


async def test_bus_delivers_in_order_between_workers(backend: tuple[Any, Any, Any]) -> None:
    _, make_bus, _ = backend
    a, b = make_bus(), make_bus()
    got: list[Envelope] = []
    probes: list[Envelope] = []
    done = asyncio.Event()

    async def on_b(env: Envelope) -> None:
        if env.room_id == "room_probe":
            probes.append(env)
            return
        got.append(env)
        if len(got) == 200:
            done.set()

    async def on_a(env: Envelope) -> None:
        raise AssertionError("nothing is addressed to a")

    await a.start("wA", on_a)
    await b.start("wB", on_b)

    def b_hears_a() -> bool:
        # Redis pub/sub drops what is published before b's subscription is live: probe first.
        a.send("wB", Envelope("deliver", "room_probe", ("p_0",), b"probe"))
        return bool(probes)

    await wait_until(b_hears_a, interval=0.05, what="b's subscription delivering a's envelopes")
    for i in range(200):
        a.send("wB", Envelope("deliver", "room_x", ("p_1",), f"frame-{i}".encode()))
    await asyncio.wait_for(done.wait(), 10)
    assert [e.frame for e in got] == [f"frame-{i}".encode() for i in range(200)]
    assert got[0].room_id == "room_x" and got[0].to == ("p_1",)
    await a.aclose()
    await b.aclose()


@pytest.mark.parametrize("cursor", ["\u00b9", "abc", "12x", "-1", "1" * 40, "\uff11"])
async def test_a_bad_transcript_cursor_is_refused_alike(backend: tuple[Any, Any, Any],
                                                         cursor: str) -> None:
    """`getTranscript {cursor: "¹"}` was a 500 on the memory store ("¹".isdigit() is true, int()
    refuses it) and a 400 on Redis: both stores now refuse a bad cursor the same way."""
    store, _, _ = backend
    with pytest.raises(BadRequest) as caught:
        await store.segments("meeting_0001abc", after=cursor)
    assert caught.value.code == "invalid-cursor"


@pytest.fixture(params=BACKENDS)
async def short_lived(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A store of each backend whose retention (``key_ttl_s``) is tiny: 0.2 s in memory, 1 s
    (the least a Redis TTL can be) on Redis."""
    if request.param == "memory":
        yield MemoryStore(key_ttl_s=0.2)
        return
    server = request.getfixturevalue("redis" if request.param == "redis" else "cluster")
    client = connect(server.url)
    yield RedisStore(client, key_ttl_s=1)
    await client.aclose()


async def test_ended_and_never_started_meetings_expire_after_the_retention(
        short_lived: Any) -> None:
    """The memory store kept every meeting forever (5,000 meetings took RSS 94 -> 176 MiB, and
    ending them freed nothing), while Redis keys expire. Both stores now drop a meeting and
    everything of it (room, seats, bans, presence, transcript) `key_ttl_s` after its last
    write: a concluded meeting stays readable for the retention period and then goes, and so
    does a meeting that never started. Its quota slot goes with it."""
    from signaling.store import Segment

    store = short_lived
    ended = meeting(1)
    await store.create_meeting(ended)
    room = await store.attach_room(room_for(ended))
    await store.transition_meeting(ended.meeting_id, "active", from_states=("scheduled",),
                                   now_ms=10)
    await store.admit(seat(room, 1))
    await store.ban(room.room_id, "u9")
    await store.set_presence(ended.meeting_id, "u1", "left")
    await store.append_segment(ended.meeting_id, Segment(
        segment_id="s1", peer_id="p_1", user_id="u1", text="hi", start_ms=0, end_ms=1))
    await store.remove_seat(room.room_id, "p_1")
    await store.end_room(room.room_id, "ended by host", now_ms=20)
    await store.transition_meeting(ended.meeting_id, "concluded", from_states=("active",),
                                   now_ms=20)
    never_started = msgspec_replace(meeting(2), organizer_id="lonely")
    await store.create_meeting(never_started, max_open=1)
    # Within the retention everything is still there: a concluded meeting can be read.
    assert (await store.get_meeting(ended.meeting_id)).state == "concluded"
    assert (await store.segments(ended.meeting_id))[0][0].text == "hi"

    async def all_gone() -> bool:
        return (await store.get_meeting(ended.meeting_id) is None
                and await store.get_meeting(never_started.meeting_id) is None
                and await store.get_room(room.room_id) is None
                and await store.presence(ended.meeting_id, "u1") is None
                and await store.segments(ended.meeting_id) == ([], ""))

    await wait_until(all_gone, timeout=10, interval=0.05, what="both meetings expiring")
    assert await store.seats(room.room_id) == []
    if isinstance(store, MemoryStore):
        assert set(store.sizes().values()) == {0}, store.sizes()  # freed, not just hidden
    # The expired scheduled meeting no longer counts towards its organizer's open meetings.
    await store.create_meeting(msgspec_replace(meeting(3), organizer_id="lonely"), max_open=1)


async def test_open_meetings_per_organizer_are_limited(backend: tuple[Any, Any, Any]) -> None:
    """One user at the API rate limit could create ~72,000 meetings an hour. `max_open` caps an
    organizer's open (scheduled or active) meetings, in one step with the create (concurrent
    creates never overshoot); concluded and cancelled meetings stop counting."""
    store, _, _ = backend

    def mine(n: int, organizer: str = "host") -> Meeting:
        return msgspec_replace(meeting(n), organizer_id=organizer)

    for n in range(3):
        await store.create_meeting(mine(n), max_open=3)
    with pytest.raises(Conflict) as refused:
        await store.create_meeting(mine(3), max_open=3)
    assert refused.value.code == "meeting-quota" and refused.value.http_status == 409
    assert await store.get_meeting(mine(3).meeting_id) is None
    await store.create_meeting(mine(10, "someone-else"), max_open=3)  # per organizer
    await store.transition_meeting(mine(0).meeting_id, "active", from_states=("scheduled",),
                                   now_ms=5)
    with pytest.raises(Conflict):  # active still counts
        await store.create_meeting(mine(3), max_open=3)
    await store.transition_meeting(mine(1).meeting_id, "cancelled", from_states=("scheduled",),
                                   now_ms=6)
    await store.transition_meeting(mine(0).meeting_id, "concluded", from_states=("active",),
                                   now_ms=7)
    await store.create_meeting(mine(3), max_open=3)
    await store.create_meeting(mine(4), max_open=3)
    with pytest.raises(Conflict):
        await store.create_meeting(mine(5), max_open=3)
    await store.create_meeting(mine(5))  # max_open=0: no limit
    results = await asyncio.gather(
        *(store.create_meeting(mine(100 + n, "racer"), max_open=4) for n in range(12)),
        return_exceptions=True)
    assert sum(r is None for r in results) == 4
    assert all(isinstance(r, Conflict) for r in results if r is not None)


@pytest.mark.parametrize("cursor", ["0", "7", "12-3", "0-0"])
async def test_both_stores_take_one_transcript_cursor_syntax(backend: tuple[Any, Any, Any],
                                                            cursor: str) -> None:
    """schemathesis found `getTranscript` refusing cursors the served spec allowed (any string).
    The spec now states the one cursor syntax (digits, or Redis' `<ms>-<seq>`), and every store
    takes every cursor of it (the memory store refused `12-3`); what it points at is the
    store's."""
    store, _, _ = backend
    assert await store.segments("meeting_0001abc", after=cursor) == ([], "")


async def test_waiting_room(backend: tuple[Any, Any, Any]) -> None:
    """Knocks: limited per room (checked and written in one step), one answer per knock, the
    same user's earlier knock replaced, the removed refused, gone when the room ends."""
    store, _, _ = backend
    room = await make_room(store)
    await store.knock(seat(room, 1), max_waiting=2)
    assert await store.knock(seat(room, 2), max_waiting=2) == ()
    with pytest.raises(RoomFull) as full:
        await store.knock(seat(room, 3), max_waiting=2)
    assert full.value.code == "waiting-room-full"
    # the same user knocking again (another tab) replaces the earlier knock, even when full
    replaced = await store.knock(seat(room, 4, user="u1"), max_waiting=2)
    assert [s.peer_id for s in replaced] == ["p_1"]
    assert [s.peer_id for s in await store.knocking(room.room_id)] == ["p_2", "p_4"]
    results = await asyncio.gather(*(store.unknock(room.room_id, "p_2") for _ in range(5)))
    assert [r.peer_id for r in results if r is not None] == ["p_2"]  # one answer wins
    assert await store.seats(room.room_id) == []  # waiting is no seat
    await store.ban(room.room_id, "u7")
    with pytest.raises(Forbidden):
        await store.knock(seat(room, 7), max_waiting=2)
    with pytest.raises(NotFound):
        await store.knock(Seat(peer_id="p_x", room_id="room_missing", user_id="u", role="p"),
                          max_waiting=2)
    await store.end_room(room.room_id, "ended", now_ms=5)
    assert await store.knocking(room.room_id) == []
    with pytest.raises(RoomEnded):
        await store.knock(seat(room, 8), max_waiting=2)
