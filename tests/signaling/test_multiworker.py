"""Several hub worker processes sharing one real Redis: cross-worker relay, atomic admission,
resume on another worker, kill -9 of a worker, and a Redis outage under live rooms."""

from __future__ import annotations

import asyncio
import collections
import signal

import aiohttp
import pytest

from signaling import protocol as p
from signaling.codes import Close
from signaling.testing.hub_process import HubProcess, run_workers
from signaling.testing.meetings import api, join_token, start_meeting
from signaling.testing.ports import free_port
from signaling.testing.redis_server import RedisServer, run_redis
from tests.support.wsclient import WsClient
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

# Short presence bounds so the crash test is quick; the defaults are documented in the README.
FAST_REAPER = {"CONNVO_RTC_REDIS_HEARTBEAT_S": "0.5", "CONNVO_RTC_REDIS_DEAD_AFTER_S": "3",
               "CONNVO_RTC_REDIS_REAP_INTERVAL_S": "0.5"}


def _drop(client: WsClient) -> None:
    """The network under a client dies: no close frame."""
    client.ws._response.connection.transport.abort()  # type: ignore[union-attr]


async def test_peers_on_two_workers_talk(redis: RedisServer) -> None:
    async with run_workers(redis.url, 2) as (w1, w2):
        meeting_id, room_id = await start_meeting(w1.base_url, invite=("bob",))
        host = await WsClient.connect(w1.ws_url)
        bob = await WsClient.connect(w2.ws_url)
        try:
            jh = await host.join(join_token(room_id, "host", "host"))
            jb = await bob.join(join_token(room_id, "bob"))
            assert [x.peer_id for x in jb.peers] == [jh.peer_id]
            assert (await host.expect(p.PeerJoined)).peer.peer_id == jb.peer_id
            for i in range(50):  # in order per sender->receiver pair, across workers
                await bob.send({"type": "candidate", "to": jh.peer_id,
                                "candidate": {"candidate": f"candidate:{i} 1 udp 1 127.0.0.1 "
                                              f"{1000 + i} typ host", "sdpMid": "0"}})
            got = [await host.expect(p.CandidateFrom) for _ in range(50)]
            assert [c.candidate.candidate.split()[0] for c in got] == \
                [f"candidate:{i}" for i in range(50)]
            await host.send({"type": "answer", "to": jb.peer_id, "sdp": "v=0 a"})
            assert (await bob.expect(p.AnswerFrom)).from_ == jh.peer_id
            # Worker 2's bus sent bob's 50 candidates (and more) in fewer Redis messages.
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{w2.base_url}/metrics") as resp:
                scraped = {line.split()[0]: float(line.split()[1])
                           for line in (await resp.text()).splitlines()
                           if line.startswith("connvo_bus_")}
            assert scraped["connvo_bus_envelopes_total"] >= 50
            assert 1 <= scraped["connvo_bus_messages_total"] <= scraped["connvo_bus_envelopes_total"]
            assert scraped["connvo_bus_dropped_total"] == 0
            await bob.send({"type": "chat", "text": "across workers"})
            assert (await host.expect(p.ChatFrom)).text == "across workers"
            status, body = await api(w2.base_url, "queries/getMeeting", {"meetingId": meeting_id})
            assert status == 200 and body["value"]["participantCount"] == 2
            await bob.send({"type": "leave"})
            assert (await host.expect(p.PeerLeft)).peer_id == jb.peer_id
        finally:
            await host.aclose()
            await bob.aclose()


async def test_concurrent_joins_over_two_workers(redis: RedisServer) -> None:
    """300 concurrent joins (6 per room, alternating workers) into 50 rooms: exactly 4 admitted
    per room (200 in all), every other join refused with room-full."""
    async with run_workers(redis.url, 2,
                           env={"CONNVO_RTC_LIMITS_API_REQUESTS_PER_SECOND": "1000"}) as workers:
        async with aiohttp.ClientSession() as session:
            rooms = [(await start_meeting(workers[0].base_url, session=session))[1]
                     for _ in range(50)]
        plan = [(rooms[i % 50], f"user{i}", workers[i % 2]) for i in range(300)]

        async def attempt(room_id: str, user: str, worker: HubProcess) -> tuple[str, str, object]:
            c = await WsClient.connect(worker.ws_url)
            await c.send({"type": "join", "token": join_token(room_id, user)})
            msg = await c.recv(30)
            if isinstance(msg, p.Joined):
                return room_id, "joined", c
            assert isinstance(msg, p.Error), msg
            code = await c.expect_close(30)
            await c.aclose()
            return room_id, f"{msg.code}/{code}", None

        results = await asyncio.gather(*(attempt(*x) for x in plan))
        try:
            per_room = collections.Counter(r for r, outcome, _ in results if outcome == "joined")
            refused = collections.Counter(o for _, o, _ in results if o != "joined")
            assert set(per_room.values()) == {4} and len(per_room) == 50, (refused, workers[0].log())
            assert refused == {"room-full/4409": 100}
        finally:
            await asyncio.gather(*(c.aclose() for _, _, c in results if c is not None))


async def test_resume_on_a_different_worker(redis: RedisServer) -> None:
    async with run_workers(redis.url, 2) as (w1, w2):
        meeting_id, room_id = await start_meeting(w1.base_url, invite=("bob",))
        host = await WsClient.connect(w1.ws_url)
        bob = await WsClient.connect(w2.ws_url)
        bob_again = None
        try:
            jh = await host.join(join_token(room_id, "host", "host"))
            token = join_token(room_id, "bob")
            jb = await bob.join(token)
            await host.expect(p.PeerJoined)
            _drop(bob)
            await bob.aclose()

            async def bob_detached() -> bool:
                status, body = await api(w1.base_url, "queries/getMeeting",
                                         {"meetingId": meeting_id})
                assert status == 200, body
                return body["value"]["activeWebRTCSessions"] == 1  # host only; bob's seat kept

            await wait_until(bob_detached, timeout=10, interval=0.1,
                             what="worker 2 noticing bob's dropped socket")
            bob_again = await WsClient.connect(w1.ws_url)  # the load balancer picked w1
            again = await bob_again.join(token, resume=jb.resume_token)
            assert again.resumed and again.peer_id == jb.peer_id
            await host.send({"type": "offer", "to": jb.peer_id, "sdp": "v=0 after"})
            assert (await bob_again.expect(p.OfferFrom)).sdp == "v=0 after"
            await host.send({"type": "ping"})
            await host.expect(p.Pong)
            assert not host.seen(p.PeerLeft)
            assert jh.peer_id in [x.peer_id for x in again.peers]
        finally:
            await host.aclose()
            if bob_again is not None:
                await bob_again.aclose()


async def test_kill_9_of_a_worker_frees_its_seats(redis: RedisServer) -> None:
    bound = float(FAST_REAPER["CONNVO_RTC_REDIS_DEAD_AFTER_S"]) + \
        float(FAST_REAPER["CONNVO_RTC_REDIS_REAP_INTERVAL_S"])
    w1, w2 = (HubProcess(free_port(), redis.url, env=FAST_REAPER) for _ in range(2))
    try:
        for w in (w1, w2):
            w.start()
        await asyncio.gather(w1.wait_ready(), w2.wait_ready())
        meeting_id, room_id = await start_meeting(w1.base_url, invite=("bob", "carol", "dave"))
        host = await WsClient.connect(w1.ws_url)
        bob = await WsClient.connect(w2.ws_url)
        carol = await WsClient.connect(w2.ws_url)
        await host.join(join_token(room_id, "host", "host"))
        jb = await bob.join(join_token(room_id, "bob"))
        jc = await carol.join(join_token(room_id, "carol"))
        w2.kill(signal.SIGKILL)
        # How soon after the kill this comes is measured by bench/join_storm.py --failover.
        left = {(await host.expect(p.PeerLeft, timeout=bound + 5)).peer_id for _ in range(2)}
        assert left == {jb.peer_id, jc.peer_id}
        status, body = await api(w1.base_url, "queries/getMeeting", {"meetingId": meeting_id})
        assert status == 200, body
        assert body["value"]["participantCount"] == 1
        assert body["value"]["activeWebRTCSessions"] == 1
        # Their seats are free again.
        dave = await WsClient.connect(w1.ws_url)
        await dave.join(join_token(room_id, "dave"))
        for c in (host, bob, carol, dave):
            await c.aclose()
    finally:
        w1.cleanup()
        w2.cleanup()


async def test_redis_outage_under_live_rooms() -> None:
    async with run_redis() as server:
        # Keep data across the restart, as a production Redis with AOF would.
        server.stop()
        server.extra_args = ["--appendonly", "yes", "--appendfsync", "always"]
        await asyncio.to_thread(server.start)
        async with run_workers(server.url, 1, extra=()) as (w,):
            meeting_id, room_id = await start_meeting(w.base_url, invite=("bob", "carol"))
            host = await WsClient.connect(w.ws_url)
            bob = await WsClient.connect(w.ws_url)
            jh = await host.join(join_token(room_id, "host", "host"))
            jb = await bob.join(join_token(room_id, "bob"))
            await host.expect(p.PeerJoined)

            server.stop()  # Redis is gone
            # Peers on the same worker keep relaying.
            await bob.send({"type": "offer", "to": jh.peer_id, "sdp": "v=0 during outage"})
            try:
                offer = await host.expect(p.OfferFrom, timeout=8)
            except TimeoutError:
                raise AssertionError(w.log()) from None
            assert offer.sdp == "v=0 during outage"
            # New joins fail fast with a clear, retryable error.
            carol = await WsClient.connect(w.ws_url)
            await carol.send({"type": "join", "token": join_token(room_id, "carol")})
            error = await carol.expect(p.Error, timeout=10)
            assert error.code == "unavailable" and error.retryable
            assert await carol.expect_close() == Close.TRY_AGAIN_LATER
            await carol.aclose()
            # The API answers 503 in the envelope; /readyz says not ready.
            status, body = await api(w.base_url, "queries/getMeeting", {"meetingId": meeting_id})
            assert status == 503 and body["errorData"]["code"] == "unavailable"
            async with aiohttp.ClientSession() as s, s.get(w.base_url + "/readyz") as resp:
                assert resp.status == 503
            # bob leaves while Redis is down: his seat must not become a ghost.
            await bob.send({"type": "leave"})
            await bob.expect_close()
            await bob.aclose()

            await asyncio.to_thread(server.start)  # Redis is back; no hub restart
            await w.wait_ready(timeout=15)
            assert (await host.expect(p.PeerLeft, timeout=15)).peer_id == jb.peer_id
            status, body = await api(w.base_url, "queries/getMeeting", {"meetingId": meeting_id})
            assert status == 200 and body["value"]["participantCount"] == 1
            carol = await WsClient.connect(w.ws_url)
            await carol.join(join_token(room_id, "carol"))
            assert (await host.expect(p.PeerJoined)).peer.user_id == "carol"
            await carol.aclose()
            await host.aclose()


async def test_aiortc_peers_on_two_workers_hear_each_other(redis: RedisServer) -> None:
    from media import OpusSpec, PeerClient, PeerClientConfig

    async with run_workers(redis.url, 2) as (w1, w2):
        _, room_id = await start_meeting(w1.base_url, invite=("bob",))

        def cfg(worker: HubProcess, token: str) -> PeerClientConfig:
            return PeerClientConfig(ws_url=worker.ws_url, token=token,
                                    audio=OpusSpec(tone_duration_s=1.0),
                                    pin_host_addresses=("127.0.0.1",), ice_timeout_s=10.0)

        async with PeerClient(cfg(w1, join_token(room_id, "host", "host"))) as alice, \
                PeerClient(cfg(w2, join_token(room_id, "bob"))) as bob:
            await asyncio.gather(alice.wait_connected(1, timeout=15),
                                 bob.wait_connected(1, timeout=15))
            await asyncio.gather(alice.wait_audio_from([bob.peer_id], timeout=15),
                                 bob.wait_audio_from([alice.peer_id], timeout=15))
            (remote,) = (await alice.snapshot()).remote_peers
            assert remote.peer_id == bob.peer_id and remote.audio_frames > 0


async def test_serve_workers_share_one_port(redis: RedisServer) -> None:
    """`serve --workers 2`: two processes behind one port (SO_REUSEPORT), shut down together."""
    port = free_port()
    hub = HubProcess(port, redis.url, extra=("--workers", "2"))
    hub.start()
    try:
        await hub.wait_ready()
        seen: set[str] = set()

        async def both_workers_answered() -> bool:
            # A new connection each time, so the kernel may pick either worker.
            async with aiohttp.ClientSession() as s, s.get(hub.base_url + "/readyz") as resp:
                seen.add((await resp.json())["worker"])
            return len(seen) == 2

        await wait_until(both_workers_answered, timeout=20, interval=0,
                         what="/readyz answered by both workers")
        _, room_id = await start_meeting(hub.base_url, invite=("bob",))
        a, b = await WsClient.connect(hub.ws_url), await WsClient.connect(hub.ws_url)
        ja = await a.join(join_token(room_id, "host", "host"))
        await b.join(join_token(room_id, "bob"))
        await b.send({"type": "offer", "to": ja.peer_id, "sdp": "v=0 one port"})
        assert (await a.expect(p.OfferFrom)).sdp == "v=0 one port"
        assert hub.proc is not None
        hub.proc.send_signal(signal.SIGTERM)
        assert await a.expect_close(15) == Close.GOING_AWAY
        assert await asyncio.to_thread(hub.proc.wait, 20) == 0
        await a.aclose()
        await b.aclose()
    finally:
        hub.cleanup()
