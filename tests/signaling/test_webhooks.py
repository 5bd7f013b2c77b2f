"""Webhooks: signing (verified with the ``standardwebhooks`` library), settings, back-off, and a
real hub delivering to a real receiver on loopback: the events of a meeting in order, a
receiver down for a while, a failing meeting holding up only itself, giving up."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from signaling import protocol as p
from signaling.app import HUB_KEY, STORE_KEY
from signaling.cli import main
from signaling.memory_store import MemoryStore
from signaling.protocol import Features
from signaling.redis_store import connect
from signaling.settings import ConfigError, as_dict, load_settings
from signaling.store import Room, Segment
from signaling.testing.hub import HubHandle, start_hub, test_settings
from signaling.testing.redis_server import RedisServer
from signaling.webhook_delivery import DeliveryConfig, backoff_s, retry_after_s
from signaling.webhook_store import OWNER, MemoryWebhookStore
from signaling.webhooks import (
    MAX_BODY_BYTES,
    Signer,
    Webhooks,
    build_event,
    new_secret,
    parse_secret,
)
from tests.support.webhook_receiver import Receiver
from tests.support.wsclient import WsClient
from tests.waiting import wait_until

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()
AUTH = "test-secret-0123456789abcdef-0123456789"

# Quick retries and leases so a test waits little; the defaults are documented in the README.
FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.25, "timeout_s": 1.0, "lease_s": 2.0,
        "poll_interval_s": 0.05}


# ---------------------------------------------------------------------- signing and events

def test_every_signature_verifies_with_standardwebhooks() -> None:
    """Both secrets of a rotation sign; a receiver holding either one accepts the request, and
    a changed body or id is refused."""
    event = build_event("meeting.started", "meeting_ab12",
                        {"meetingId": "meeting_ab12", "roomId": "room_ab12"})
    signer = Signer([SECRET, OLD_SECRET])
    ts = int(time.time())
    headers = signer.headers(event.event_id, ts, event.body)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (SECRET, OLD_SECRET):
        payload = Webhook(secret).verify(event.body, headers)
        assert payload["type"] == "meeting.started"
        assert payload["data"] == {"meetingId": "meeting_ab12", "roomId": "room_ab12"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", payload["timestamp"])
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(event.body.replace(b"ab12", b"ab13"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(event.body, headers | {"webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(event.body, headers)


def test_events_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="unknown webhook event type"):
        build_event("meeting.exploded", "meeting_ab12", {})
    with pytest.raises(ValueError, match="bad meeting id"):
        build_event("meeting.started", "meeting.ab12", {})
    with pytest.raises(ValueError, match="above"):
        build_event("recording.ready", "meeting_ab12", {"x": "y" * 70_000})
    a, b = (build_event("meeting.started", "meeting_ab12", {}) for _ in range(2))
    assert a.event_id != b.event_id and "." not in a.event_id


def test_the_cli_makes_a_usable_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhook-secret"]) == 0
    secret = capsys.readouterr().out.strip()
    assert len(parse_secret(secret)) == 32
    Webhook(secret)  # the library takes it as it is


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    config = DeliveryConfig(backoff_initial_s=5, backoff_max_s=3600)
    assert [backoff_s(n, config, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_s(3, config, rand=lambda: 0.0) == 10  # jitter keeps 50..100 %
    assert backoff_s(1000, config, rand=lambda: 1.0) == 3600
    assert retry_after_s({"Retry-After": "120"}) == 120
    assert retry_after_s({"Retry-After": "soon"}) is None


# ---------------------------------------------------------------------- settings

def _load(**webhooks: Any) -> Any:
    return load_settings(None, env={}, overrides={"auth": {"secrets": AUTH},
                                                   "webhooks": webhooks})


@pytest.mark.parametrize(("webhooks", "message"), [
    ({"urls": "https://backend.example.com/hooks"}, "webhooks.urls needs webhooks.secret"),
    ({"urls": "ftp://backend.example.com/hooks", "secret": SECRET}, "not an http"),
    ({"urls": "https://", "secret": SECRET}, "not an http"),
    ({"urls": "https://backend.example.com:99999/x", "secret": SECRET}, "not a valid URL"),
    ({"urls": "https://u:pw@backend.example.com/x", "secret": SECRET}, "credentials"),
    ({"urls": "http://backend.example.com/hooks", "secret": SECRET}, "plain http"),
    ({"urls": "https://a.example.com/x,https://a.example.com/x", "secret": SECRET}, "twice"),
    ({"secret": "s3cret-but-not-whsec"}, "whsec_"),
    ({"secret": "whsec_!!!notbase64"}, "not base64"),
    ({"secret": "whsec_" + base64.b64encode(b"short").decode()}, "24..64"),
    ({"timeout_s": 40.0}, "lease_s must be above"),
    ({"backoff_initial_s": 0}, "backoff_initial_s"),
    ({"max_queued": 0}, "max_queued"),
    ({"concurrency": 0}, "concurrency"),
])
def test_bad_webhook_settings_are_refused(webhooks: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _load(**webhooks)
    assert "notbase64" not in str(info.value) or "whsec_!!!" not in str(info.value)


def test_webhook_settings_from_the_environment_with_the_secret_masked() -> None:
    settings = load_settings(None, env={
        "CONNVO_RTC_AUTH_SECRET": AUTH,
        "CONNVO_RTC_WEBHOOKS_URLS": "https://a.example.com/h, http://127.0.0.1:9000/h",
        "CONNVO_RTC_WEBHOOKS_SECRET": f"{SECRET},{OLD_SECRET}",
        "CONNVO_RTC_WEBHOOKS_MAX_AGE_S": "7200"})
    w = settings.webhooks
    assert w.urls == ("https://a.example.com/h", "http://127.0.0.1:9000/h")
    assert w.secret == (SECRET, OLD_SECRET) and w.max_age_s == 7200
    assert SECRET not in repr(settings) and as_dict(settings)["webhooks"]["secret"] == ["***"] * 2
    plain = _load(urls="http://backend.internal/h", secret=SECRET, allow_plain_http=True)
    assert plain.webhooks.urls == ("http://backend.internal/h",)


def test_the_cli_exits_1_on_a_bad_webhook_secret(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNVO_RTC_AUTH_SECRET", AUTH)
    monkeypatch.setenv("CONNVO_RTC_WEBHOOKS_URLS", "https://backend.example.com/hooks")
    monkeypatch.setenv("CONNVO_RTC_WEBHOOKS_SECRET", "not-a-whsec-secret")
    assert main(["serve", "--port", "0", "--no-tap"]) == 1
    err = capsys.readouterr().err
    assert "configuration error" in err and "whsec_" in err
    assert "not-a-whsec-secret" not in err


# ---------------------------------------------------------------------- a real hub

@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(SECRET)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def hub_for(receiver: Receiver, **extra: Any) -> HubHandle:
    return await start_hub(test_settings(webhooks={"urls": receiver.url, "secret": SECRET,
                                                   **FAST, **extra}))


async def metric(hub: HubHandle, name: str) -> float:
    session = await hub.session()
    async with session.get(hub.base_url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def run_meeting(hub: HubHandle, *, transcription: bool = False,
                      segments: int = 0) -> tuple[str, list[str]]:
    """A meeting through its life: host, bob and carol join, the host kicks carol, bob leaves,
    the host ends it. Returns the meeting id and the event types it must produce, in order."""
    meeting_id, room_id = await hub.create_room(invite=("bob", "carol"),
                                                transcription=transcription)
    host, bob, carol = [await WsClient.connect(hub.ws_url) for _ in range(3)]
    try:
        await host.join(hub.mint_token(room_id, "host", "host"))
        await bob.join(hub.mint_token(room_id, "bob"))
        jc = await carol.join(hub.mint_token(room_id, "carol"))
        await host.send({"type": "kick", "peerId": jc.peer_id})
        await host.expect(p.PeerLeft)
        await bob.send({"type": "leave"})
        await host.expect(p.PeerLeft)
        store = hub.app[STORE_KEY]
        for n in range(segments):
            await store.append_segment(meeting_id, Segment(
                segment_id=f"s{n}", peer_id="p", user_id="bob", text="hello", start_ms=n,
                end_ms=n + 1))
        await host.send({"type": "end"})
        await host.expect(p.RoomEndedMsg)
    finally:
        for c in (host, bob, carol):
            await c.aclose()
    types = ["meeting.started", "participant.joined", "participant.joined",
             "participant.joined", "participant.left", "participant.left", "participant.left",
             "meeting.ended"]
    return meeting_id, types + (["transcript.ready"] if transcription else [])


async def test_a_meetings_events_arrive_signed_and_in_order(receiver: Receiver) -> None:
    hub = await hub_for(receiver)
    try:
        meeting_id, expected = await run_meeting(hub, transcription=True, segments=2)
        await wait_until(lambda: len(receiver.accepted(meeting_id)) >= len(expected), 10,
                         what="every event of the meeting delivered")
        assert receiver.types(meeting_id) == expected
        assert not receiver.rejected
        data = [r.payload["data"] for r in receiver.accepted(meeting_id)]
        joined = [d["userId"] for d in data[1:4]]
        assert joined == ["host", "bob", "carol"]
        assert {d["userId"]: d["reason"] for d in data[4:7]} == {
            "carol": "kicked", "bob": "left", "host": "ended"}
        ended = data[7]
        assert ended["reason"] == "host" and ended["state"] == "concluded"
        assert ended["durationSeconds"] >= 0 and ended["endedAt"] >= ended["startedAt"]
        assert sorted(x["userId"] for x in ended["participants"]) == ["bob", "carol", "host"]
        assert ended["participantCount"] == 3
        assert data[8]["segmentCount"] == 2
        assert await metric(hub, "connvo_webhooks_delivered_total") == len(expected)
        async def none_pending() -> bool:
            return await metric(hub, "connvo_webhooks_pending") == 0

        await wait_until(none_pending, 10, what="the pending gauge back to 0")
    finally:
        await hub.aclose()


async def test_a_receiver_down_for_a_while_gets_everything_once_back(
        receiver: Receiver) -> None:
    """The receiver is down while two meetings run; once it is back every event arrives, each
    under one id (a retry reuses its id and its exact body), each meeting's in order."""
    await receiver.stop()
    hub = await hub_for(receiver)
    try:
        first, expected_first = await run_meeting(hub)
        second, expected_second = await run_meeting(hub, transcription=True)
        await wait_until(lambda: metric(hub, "connvo_webhook_attempts_failed_total"), 10,
                         what="failed attempts while the receiver is down")
        assert await metric(hub, "connvo_webhooks_delivered_total") == 0
        await wait_until(lambda: metric(hub, "connvo_webhooks_oldest_pending_seconds"), 10,
                         what="the oldest-pending gauge rising")
        await receiver.start()
        total = len(expected_first) + len(expected_second)
        await wait_until(lambda: len({r.msg_id for r in receiver.accepted()}) >= total, 20,
                         what=f"all {total} events delivered after the receiver came back")
        assert receiver.types(first) == expected_first
        assert receiver.types(second) == expected_second
        assert not receiver.rejected
        by_id: dict[str, set[bytes]] = {}
        for r in receiver.received:
            by_id.setdefault(r.msg_id, set()).add(r.raw)
        assert all(len(bodies) == 1 for bodies in by_id.values())  # one id, one body
        bodies = [next(iter(b)) for b in by_id.values()]
        assert len(set(bodies)) == len(bodies) == total  # no event under two ids
    finally:
        await hub.aclose()


async def test_a_failing_meeting_holds_up_only_its_own_events(receiver: Receiver) -> None:
    """The receiver fails every event of one meeting for a while: the other meeting's events
    are all delivered meanwhile; then the failing one's follow, in order, retried under their
    own ids."""
    failing: set[str] = set()
    receiver.answer = lambda payload: 500 if payload["data"]["meetingId"] in failing else 200
    hub = await hub_for(receiver)
    try:
        meeting_a, _ = await hub.create_room(invite=("bob",))
        failing.add(meeting_a)
        _, room_a = meeting_a, (await hub.call("queries/getMeeting",
                                               {"meetingId": meeting_a}))[1]["value"]["roomId"]
        host_a = await WsClient.connect(hub.ws_url)
        await host_a.join(hub.mint_token(room_a, "host", "host"))
        meeting_b, expected_b = await run_meeting(hub)
        await wait_until(lambda: len(receiver.accepted(meeting_b)) >= len(expected_b), 10,
                         what="meeting b delivered while meeting a fails")
        assert receiver.types(meeting_b) == expected_b
        tried_a = [r for r in receiver.received if r.meeting_id == meeting_a]
        assert tried_a and {r.type for r in tried_a} == {"meeting.started"}  # a's head only
        assert len({r.msg_id for r in tried_a}) == 1
        failing.clear()
        await host_a.send({"type": "end"})
        await host_a.expect(p.RoomEndedMsg)
        await host_a.aclose()
        await wait_until(lambda: len(receiver.types(meeting_a)) >= 4, 10,
                         what="meeting a delivered once the receiver takes it")
        assert receiver.types(meeting_a) == ["meeting.started", "participant.joined",
                                             "participant.left", "meeting.ended"]
    finally:
        await hub.aclose()


async def test_gone_and_too_old_events_are_given_up(receiver: Receiver) -> None:
    """410 Gone gives an event up at once; an event failing past max_age_s is given up at its
    next failed attempt. Either way the meeting's next event follows."""
    answers = {"meeting.started": 410, "participant.joined": 503}
    receiver.answer = lambda payload: answers.get(payload["type"], 200)
    hub = await hub_for(receiver, max_age_s=0.3)
    try:
        meeting_id, room_id = await hub.create_room()
        host = await WsClient.connect(hub.ws_url)
        await host.join(hub.mint_token(room_id, "host", "host"))
        await host.send({"type": "end"})
        await host.expect(p.RoomEndedMsg)
        await host.aclose()
        await wait_until(lambda: receiver.types(meeting_id) == ["participant.left",
                                                                "meeting.ended"], 10,
                         what="the events after the given-up ones delivered")
        assert await metric(hub, 'connvo_webhooks_failed_total{reason="gone"}') == 1
        assert await metric(hub, 'connvo_webhooks_failed_total{reason="expired"}') == 1
    finally:
        await hub.aclose()


async def test_the_emit_api_queues_an_event_other_parts_raise(receiver: Receiver) -> None:
    """``recording.ready`` is raised by the recorder (a later issue) through the same API."""
    hub = await hub_for(receiver)
    try:
        meeting_id, _ = await hub.create_room()
        webhooks = hub.app[HUB_KEY].lifecycle.webhooks
        event_id = await webhooks.emit("recording.ready", meeting_id, {
            "recordingId": "rec_1", "kind": "mixed-audio", "url": "https://files.example/x"})
        assert event_id is not None
        await wait_until(lambda: any(r.msg_id == event_id for r in receiver.accepted()), 10,
                         what="recording.ready delivered")
        got = next(r for r in receiver.accepted() if r.msg_id == event_id)
        assert got.payload["data"] == {"meetingId": meeting_id, "recordingId": "rec_1",
                                       "kind": "mixed-audio", "url": "https://files.example/x"}
        with pytest.raises(ValueError):
            await webhooks.emit("recording.exploded", meeting_id, {})
    finally:
        await hub.aclose()


async def test_no_webhooks_configured_sends_nothing(receiver: Receiver) -> None:
    hub = await start_hub()
    try:
        await run_meeting(hub)
        assert not hub.app[HUB_KEY].lifecycle.webhooks.enabled
        assert receiver.received == []
        assert await metric(hub, "connvo_webhooks_queued_total") == 0
        session = await hub.session()
        async with session.get(hub.base_url + "/metrics") as resp:
            assert "connvo_webhooks_pending" not in await resp.text()  # no sender, no queue
    finally:
        await hub.aclose()


async def test_a_worker_stopping_mid_delivery_hands_the_event_to_another(
        receiver: Receiver, redis: RedisServer) -> None:
    """Two hubs share Redis; the receiver holds the first request. The hub delivering it shuts
    down: it hands the lane back instead of leaving it leased, so the other hub delivers the
    same event (same id) long before the lease (30 s here) would have run out."""
    receiver.hold = asyncio.Event()
    settings = test_settings(
        redis={"url": redis.url},
        webhooks={"urls": receiver.url, "secret": SECRET, **FAST, "timeout_s": 20.0,
                  "lease_s": 30.0})
    hubs = [await start_hub(settings) for _ in range(2)]
    client = connect(redis.url)
    try:
        meeting_id, _ = await hubs[0].create_room()
        await wait_until(lambda: receiver.holding, 10, what="the first request held")
        (owner,) = (await wait_until(lambda: client.hgetall(OWNER), 5, what="a lease")).values()
        worker = owner.decode().split()[0]
        (delivering,) = [h for h in hubs if h.app[HUB_KEY].worker_id == worker]
        first_id = receiver.arrivals[0]
        await delivering.aclose()
        hubs.remove(delivering)
        receiver.hold.set()
        await wait_until(lambda: receiver.arrivals.count(first_id) >= 2, 10,
                         what="the other hub delivering the same event")
        assert receiver.types(meeting_id) == ["meeting.started"]
        assert not receiver.rejected
    finally:
        receiver.hold.set()
        for hub in hubs:
            await hub.aclose()
        await client.aclose()


async def test_every_leave_reason_reaches_the_backend(receiver: Receiver) -> None:
    """``participant.left`` says why: the backend removed bob (``removed``), carol joined again
    from a second tab (``replaced``, before her new seat's ``participant.joined``), dave's
    connection dropped and he did not resume within the grace (``timeout``)."""
    hub = await start_hub(test_settings(
        rooms={"resume_grace_s": 0.2},
        webhooks={"urls": receiver.url, "secret": SECRET, **FAST}))
    clients: list[WsClient] = []
    try:
        meeting_id, room_id = await hub.create_room(invite=("bob", "carol", "dave"))
        for _ in range(5):
            clients.append(await WsClient.connect(hub.ws_url))
        host, bob, carol, carol2, dave = clients
        await host.join(hub.mint_token(room_id, "host", "host"))
        for client, user in ((bob, "bob"), (carol, "carol"), (dave, "dave")):
            await client.join(hub.mint_token(room_id, user))
        status, body = await hub.call("webrtc/index/removeParticipant",
                                      {"meetingId": meeting_id, "userId": "bob"})
        assert status == 200, body
        await host.expect(p.PeerLeft)
        await carol2.join(hub.mint_token(room_id, "carol"))
        await host.expect(p.PeerLeft)
        dave.ws._response.connection.transport.abort()  # type: ignore[union-attr]
        await host.expect(p.PeerLeft, timeout=10)
        await wait_until(lambda: len(receiver.types(meeting_id)) >= 9, 10,
                         what="every join and leave delivered")
        got = [(r.type, r.payload["data"]["userId"], r.payload["data"].get("reason"))
               for r in receiver.accepted(meeting_id)[1:]]
        assert got == [("participant.joined", "host", None), ("participant.joined", "bob", None),
                       ("participant.joined", "carol", None), ("participant.joined", "dave", None),
                       ("participant.left", "bob", "removed"),
                       ("participant.left", "carol", "replaced"),
                       ("participant.joined", "carol", None),
                       ("participant.left", "dave", "timeout")]
    finally:
        for client in clients:
            await client.aclose()
        await hub.aclose()


async def test_events_above_max_queued_are_refused_and_counted(receiver: Receiver) -> None:
    await receiver.stop()  # nothing is delivered: the queue only fills
    hub = await hub_for(receiver, max_queued=2)
    try:
        meeting_id, room_id = await hub.create_room()
        host = await WsClient.connect(hub.ws_url)
        await host.join(hub.mint_token(room_id, "host", "host"))  # the 2nd event: full now
        await host.send({"type": "end"})
        await host.expect(p.RoomEndedMsg)
        await host.aclose()
        assert await metric(hub, "connvo_webhooks_queued_total") == 2
        assert await metric(hub, 'connvo_webhooks_failed_total{reason="full"}') == 2
        await receiver.start()
        await wait_until(lambda: len(receiver.types(meeting_id)) >= 2, 10,
                         what="the two queued events delivered")
        assert receiver.types(meeting_id) == ["meeting.started", "participant.joined"]
    finally:
        await hub.aclose()


async def test_events_wait_in_redis_for_the_next_hub(receiver: Receiver,
                                                     redis: RedisServer) -> None:
    """Durable: events queued in Redis while the receiver is down outlive the hub that queued
    them; a hub started later (the receiver back by then) delivers them, in order."""
    await receiver.stop()
    settings = test_settings(redis={"url": redis.url},
                             webhooks={"urls": receiver.url, "secret": SECRET, **FAST})
    first = await start_hub(settings)
    try:
        meeting_id, expected = await run_meeting(first)
        await wait_until(lambda: metric(first, "connvo_webhook_attempts_failed_total"), 10,
                         what="failed attempts while the receiver is down")
    finally:
        await first.aclose()
    await receiver.start()
    second = await start_hub(settings)
    try:
        await wait_until(lambda: len(receiver.types(meeting_id)) >= len(expected), 10,
                         what="the next hub delivering what the first one queued")
        assert receiver.types(meeting_id) == expected
        assert not receiver.rejected
    finally:
        await second.aclose()


async def test_a_huge_participant_list_is_cut_to_fit_the_body() -> None:
    """A meeting.ended listing more people than fit a webhook body (a bound, far beyond four
    seats) still goes out: the list is cut, the count stays true, and it says so."""
    queue = MemoryWebhookStore()
    hooks = Webhooks(store=queue, endpoints=["aaaaaaaaaaaa"], state=MemoryStore())
    room = Room(room_id="room_ab12", meeting_id="meeting_ab12", capacity=4,
                features=Features(), state="ended", ended_at=1_800_000_000_000,
                end_reason="empty")
    for i in range(900):
        await queue.note_participant("meeting_ab12", f"user_{i}", json.dumps(
            {"userId": f"user_{i:04d}" + "u" * 118, "name": "n" * 64,
             "role": "participant"}).encode())
    await hooks.room_ended(room, [])
    lease = await queue.claim("w", ["aaaaaaaaaaaa"], 1000)
    assert lease is not None and lease.event.type == "meeting.ended"
    assert len(lease.event.body) <= MAX_BODY_BYTES
    data = json.loads(lease.event.body)["data"]
    assert data["participantCount"] == 900 and data["participantsTruncated"] is True
    assert 100 < len(data["participants"]) < 900 and data["reason"] == "empty"


async def test_waiting_room_and_deadline_events(receiver: Receiver) -> None:
    """A knock alone is no participant; the knocker admitted is participant.joined then. A
    meeting that reaches its maxDurationMinutes ends with meeting.ended reason max-duration."""
    hub = await start_hub(test_settings(
        webhooks={"urls": receiver.url, "secret": SECRET, **FAST},
        rooms={"duration_minute_s": 0.25, "ending_warning_s": 0.5}))
    clients: list[WsClient] = []
    try:
        meeting_id, room_id = await hub.create_room(invite=("bob",), waitingRoomEnabled=True,
                                                    maxDurationMinutes=12)  # 3 s
        host = await WsClient.connect(hub.ws_url)
        bob = await WsClient.connect(hub.ws_url)
        clients += [host, bob]
        await host.join(hub.mint_token(room_id, "host", "host"))
        await bob.send({"type": "join", "token": hub.mint_token(room_id, "bob")})
        await bob.expect(p.Waiting)
        knocked = (await host.expect(p.Knock)).peer
        await host.send({"type": "admit", "peerId": knocked.peer_id})
        await bob.expect(p.Joined)
        await bob.expect(p.RoomEndedMsg, timeout=15)
        for client in (bob, host):  # closed by the hub at the deadline
            await client.expect_close(15)

        def types() -> list[str]:
            return [r.type for r in receiver.received if r.meeting_id == meeting_id]

        await wait_until(lambda: "meeting.ended" in types(), timeout=15,
                         what="meeting.ended delivered")
        got = [r.payload["data"] for r in receiver.received if r.meeting_id == meeting_id]
        joined = [d for d, t in zip(got, types(), strict=True) if t == "participant.joined"]
        assert [d["userId"] for d in joined] == ["host", "bob"]
        assert [d["peerId"] for d in joined][1] == knocked.peer_id
        ended = next(d for d, t in zip(got, types(), strict=True) if t == "meeting.ended")
        assert ended["reason"] == "max-duration" and ended["state"] == "concluded"
    finally:
        for client in clients:
            await client.aclose()
        await hub.aclose()
