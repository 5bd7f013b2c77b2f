"""PeerClient against the real hub: media flows, roles, typed failures, resume.

Every test runs a real hub on a free loopback port (the ``hub`` fixture or a restartable one)
and real aiortc peers whose ICE host candidates are pinned to 127.0.0.1, so all traffic stays
on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import av
import pytest

from media import (
    FileSpec,
    HubUnreachableError,
    IceFailedError,
    KickedError,
    NotFoundError,
    OpusSpec,
    PeerClient,
    PeerClientConfig,
    PeerClientError,
    RoomEndedError,
    RoomFullError,
    TokenError,
    ToneSpec,
    TurnAuthError,
)
from signaling import protocol
from signaling.codes import Close
from signaling.memory_store import MemoryStore
from signaling.testing.hub import HubHandle, start_hub_on, test_settings
from signaling.testing.ports import free_port
from tests.support.paths import JFK
from tests.support.tcp_proxy import TcpProxy
from tests.support.wsclient import seated
from tests.waiting import wait_until

LOOPBACK = ("127.0.0.1",)


def config(hub: HubHandle, token: str, **overrides: Any) -> PeerClientConfig:
    values: dict[str, Any] = {
        "ws_url": hub.ws_url, "token": token, "audio": OpusSpec(tone_duration_s=1.0),
        "pin_host_addresses": LOOPBACK, "ice_timeout_s": 10.0,
    }
    values.update(overrides)
    return PeerClientConfig(**values)


@asynccontextmanager
async def clients(*configs: PeerClientConfig, **kwargs: Any) -> AsyncIterator[list[PeerClient]]:
    """Connect clients one after the other (join order decides who offers)."""
    async with AsyncExitStack() as stack:
        out = []
        for cfg in configs:
            out.append(await stack.enter_async_context(PeerClient(cfg, **kwargs)))
        yield out


async def two_in_a_room(hub: HubHandle) -> tuple[str, str, str, str]:
    """A started meeting; returns ``(meeting_id, room_id, host_token, guest_token)``."""
    meeting_id, room_id = await hub.create_room(host="alice", invite=("bob",))
    return (meeting_id, room_id, hub.mint_token(room_id, "alice", "host"),
            hub.mint_token(room_id, "bob"))


# --------------------------------------------------------------------------- media


async def test_two_clients_connect_and_hear_each_other(hub: HubHandle) -> None:
    _, _, alice_token, bob_token = await two_in_a_room(hub)
    async with clients(config(hub, alice_token, audio=FileSpec(JFK)),
                       config(hub, bob_token)) as (alice, bob):
        # bob joined second: he is the newcomer and offers to alice.
        assert [p.peer_id for p in bob.joined.peers] == [alice.peer_id]  # type: ignore[union-attr]
        await asyncio.gather(alice.wait_connected(1, timeout=10),
                             bob.wait_connected(1, timeout=10))
        await asyncio.gather(alice.wait_audio_from([bob.peer_id], timeout=10),  # type: ignore[list-item]
                             bob.wait_audio_from(timeout=10))

        async def rtp_accumulated() -> Any:
            """bob's snapshot once some RTP (and its jitter) has accumulated."""
            snap = await bob.snapshot()
            remote = snap.remote_peers[0]
            inbound = [s for s in remote.rtp if s.direction == "inbound" and s.kind == "audio"]
            return snap if (remote.audio_frames > 10 and inbound and inbound[0].packets > 10
                            and inbound[0].jitter_ms is not None
                            and remote.transport_bytes_received > 1000) else None

        snap = await wait_until(rtp_accumulated, timeout=10, what="RTP stats from alice at bob")
        report = snap.to_dict()
    assert snap.state == "joined" and snap.role == "participant" and snap.errors == {}
    # How long these take is measured by bench/bots.py (join, connect, first audio).
    assert snap.ws_connect_s is not None and snap.ws_connect_s > 0
    assert snap.join_s is not None and snap.join_s > 0
    (remote,) = snap.remote_peers
    assert remote.peer_id == alice.peer_id and remote.offerer and remote.state == "connected"
    assert remote.connected_after_s is not None and remote.connected_after_s > 0
    assert remote.first_audio_after_s is not None
    assert remote.first_audio_after_s >= remote.connected_after_s
    assert remote.audio_frames > 10 and remote.audio_decoded
    inbound = [s for s in remote.rtp if s.direction == "inbound" and s.kind == "audio"]
    assert inbound and inbound[0].packets > 10 and inbound[0].packets_lost == 0
    assert inbound[0].jitter_ms is not None
    assert remote.transport_bytes_received > 1000
    assert report["remote_peers"][0]["rtp"][0]["direction"] in ("inbound", "outbound")


async def test_undecoded_receive_counts_frames_and_bytes(hub: HubHandle) -> None:
    _, _, alice_token, bob_token = await two_in_a_room(hub)
    async with clients(config(hub, alice_token, audio=ToneSpec()),
                       config(hub, bob_token, decode_audio=False)) as (alice, bob):
        await bob.wait_connected(1, timeout=10)
        await bob.wait_audio_from([alice.peer_id], timeout=10)  # type: ignore[list-item]
        record = bob.stats.remote_peers[alice.peer_id]  # type: ignore[index]
        await wait_until(lambda: record.audio_frames > 5, what="six frames from alice at bob")
        (remote,) = (await bob.snapshot()).remote_peers
    assert not remote.audio_decoded
    assert remote.audio_frames > 5
    assert remote.audio_bytes > remote.audio_frames  # encoded Opus, a few dozen bytes each


async def test_on_audio_frame_gets_decoded_frames_by_peer(hub: HubHandle) -> None:
    _, _, alice_token, bob_token = await two_in_a_room(hub)
    frames: list[tuple[str, av.AudioFrame]] = []
    async with PeerClient(config(hub, alice_token)) as alice, PeerClient(
        config(hub, bob_token, audio=None), on_audio_frame=lambda p, f: frames.append((p, f))
    ) as bob:
        await bob.wait_audio_from([alice.peer_id], timeout=10)  # type: ignore[list-item]
        # bob has no audio: his line is receive-only, so alice hears nothing from him.
        assert bob.remote_peers[alice.peer_id].plan.audio == "recvonly"  # type: ignore[index]
    assert frames and {p for p, _ in frames} == {alice.peer_id}
    assert frames[0][1].sample_rate == 48_000


async def test_tap_receives_audio_only_and_sends_nothing(hub: HubHandle) -> None:
    _, room_id, alice_token, bob_token = await two_in_a_room(hub)
    tap_token = hub.mint_token(room_id, "tap-worker", "tap")
    async with clients(config(hub, alice_token), config(hub, bob_token),
                       config(hub, tap_token, audio=None)) as (alice, bob, tap):
        await tap.wait_connected(2, timeout=10)
        await tap.wait_audio_from([alice.peer_id, bob.peer_id], timeout=10)  # type: ignore[list-item]
        await alice.wait_connected(2, timeout=10)
        to_tap = alice.remote_peers[tap.peer_id]  # type: ignore[index]
        assert (to_tap.plan.audio, to_tap.plan.video) == ("sendonly", None)
        assert all(r.plan.video is None for r in tap.remote_peers.values())
        # Long enough for the tap's audio to have reached alice if it sent any: she has heard
        # a dozen frames from bob, and the tap from both.
        heard = [(alice, bob), (tap, alice), (tap, bob)]
        await wait_until(lambda: all(
            listener.stats.remote_peers[speaker.peer_id].audio_frames > 10  # type: ignore[index]
            for listener, speaker in heard), what="a dozen audio frames on every sending path")
        snap = await alice.snapshot()
        tap_snap = await tap.snapshot()
    # The hub refuses a tap's SDP if it would send: no error frame means it was recvonly.
    assert snap.errors == {} and tap_snap.errors == {}
    from_tap = next(r for r in snap.remote_peers if r.peer_id == tap.peer_id)
    assert from_tap.audio_frames == 0
    assert not [s for s in from_tap.rtp if s.direction == "inbound"]
    assert all(r.audio_frames > 0 for r in tap_snap.remote_peers)


async def test_observer_receives_and_sends_nothing(hub: HubHandle) -> None:
    _, room_id, alice_token, _ = await two_in_a_room(hub)
    observer_token = hub.mint_token(room_id, "watcher", "observer")
    # An observer's client may still be configured with audio: it must not offer to send it.
    async with clients(config(hub, alice_token),
                       config(hub, observer_token)) as (alice, observer):
        await observer.wait_audio_from([alice.peer_id], timeout=10)  # type: ignore[list-item]
        to_alice = observer.remote_peers[alice.peer_id]  # type: ignore[index]
        assert (to_alice.plan.audio, to_alice.plan.video) == ("recvonly", "recvonly")
        with pytest.raises(PeerClientError):
            observer.set_media(audio=True)
        snap = await alice.snapshot()
    (from_observer,) = snap.remote_peers
    assert from_observer.audio_frames == 0 and snap.errors == {}


async def test_peer_left_closes_the_connection(hub: HubHandle) -> None:
    _, _, alice_token, bob_token = await two_in_a_room(hub)
    async with clients(config(hub, alice_token), config(hub, bob_token)) as (alice, bob):
        await alice.wait_connected(1, timeout=10)
        with alice.messages() as events:
            await bob.leave()
            left = await events.wait_for(protocol.PeerLeft, 5)
        assert left.peer_id == bob.peer_id and bob.state == "left"
        await wait_until(lambda: not alice.remote_peers,
                         what="alice closing her connection to bob")
        assert alice.stats.remote_peers[bob.peer_id].state == "closed"  # type: ignore[index]


async def test_chat_ping_and_media_announcements(hub: HubHandle) -> None:
    _, _, alice_token, bob_token = await two_in_a_room(hub)
    async with clients(config(hub, alice_token), config(hub, bob_token)) as (alice, bob):
        with bob.messages() as events:
            alice.send_chat("hello bob")
            chat = await events.wait_for(protocol.ChatFrom, 5)
            assert (chat.from_, chat.text) == (alice.peer_id, "hello bob")
            alice.set_media(audio=False)
            update = await events.wait_for(protocol.PeerUpdated, 5,
                                           lambda m: m.peer.peer_id == alice.peer_id)
            assert update.peer.media.audio is False
        assert await bob.ping() >= 0
        with pytest.raises(ValueError):
            alice.set_media(video=True)  # video was not configured


@pytest.mark.slow
async def test_video_is_sent_and_received(hub: HubHandle) -> None:
    _, _, alice_token, bob_token = await two_in_a_room(hub)
    async with clients(config(hub, alice_token, send_video=True),
                       config(hub, bob_token)) as (alice, bob):
        await bob.wait_connected(1, timeout=10)
        record = bob.stats.remote_peers[alice.peer_id]  # type: ignore[index]
        await wait_until(lambda: record.video_frames >= 3, what="three video frames at bob")
        snap = record.snapshot()
    assert snap.video_frames >= 3 and snap.first_video_after_s is not None


# --------------------------------------------------------------------------- join failures


async def test_full_room_raises_room_full_error(hub: HubHandle) -> None:
    _, room_id = await hub.create_room()
    async with seated(hub, room_id):
        client = PeerClient(config(hub, hub.mint_token(room_id, "fifth")))
        with pytest.raises(RoomFullError) as caught:
            await client.connect()
        await client.aclose()
    assert caught.value.code == "room-full" and caught.value.retryable
    assert caught.value.close_code == Close.ROOM_FULL
    assert client.state == "closed" and client.stats.errors == {"room-full": 1}


async def test_expired_token_raises_token_error(hub: HubHandle) -> None:
    _, room_id = await hub.create_room()
    token, _ = hub.tokens.mint_join(room_id, "late", "participant", ttl_s=60,
                                    now=time.time() - 3600)
    with pytest.raises(TokenError) as caught:
        async with PeerClient(config(hub, token)):
            pass
    assert caught.value.code == "unauthenticated" and not caught.value.retryable
    assert caught.value.close_code == Close.UNAUTHENTICATED


async def test_garbage_token_raises_token_error(hub: HubHandle) -> None:
    with pytest.raises(TokenError):
        async with PeerClient(config(hub, "not-a-jwt")):
            pass


async def test_unknown_room_raises_not_found(hub: HubHandle) -> None:
    with pytest.raises(NotFoundError) as caught:
        async with PeerClient(config(hub, hub.mint_token("room_nope", "alice"))):
            pass
    assert caught.value.close_code == Close.NOT_FOUND


async def test_ended_room_ends_joined_clients_and_refuses_new_ones(hub: HubHandle) -> None:
    meeting_id, _, alice_token, bob_token = await two_in_a_room(hub)
    async with PeerClient(config(hub, bob_token)) as bob:
        with bob.messages() as events:
            status, body = await hub.call("lifecycle/endMeeting", {"meetingId": meeting_id},
                                          user="alice")
            assert status == 200, body
            ended = await events.wait_for(protocol.RoomEndedMsg, 5)
            assert ended.reason
            with pytest.raises(RoomEndedError):
                await bob.wait_connected(1, timeout=5)
        assert bob.state == "failed" and isinstance(bob.error, RoomEndedError)
    with pytest.raises(RoomEndedError) as caught:
        async with PeerClient(config(hub, alice_token)):
            pass
    assert caught.value.close_code == Close.ROOM_ENDED


async def test_kicked_client_fails_with_kicked_error(hub: HubHandle) -> None:
    _, _, alice_token, bob_token = await two_in_a_room(hub)
    async with clients(config(hub, alice_token), config(hub, bob_token)) as (alice, bob):
        await alice.wait_connected(1, timeout=10)
        alice.send(protocol.Kick(peer_id=bob.peer_id))  # type: ignore[arg-type]
        with pytest.raises(KickedError):
            await bob.wait_connected(5, timeout=5)
        assert bob.stats.errors.get("kicked") == 1


async def test_stopped_hub_is_unreachable_at_once(hub: HubHandle) -> None:
    _, room_id = await hub.create_room()
    token = hub.mint_token(room_id, "alice")
    await hub.runner.cleanup()
    with pytest.raises(HubUnreachableError) as caught:
        async with PeerClient(config(hub, token)):
            pass
    assert "no websocket within" not in str(caught.value)  # refused, not waited out
    assert caught.value.retryable


# --------------------------------------------------------------------------- ICE / TURN


async def test_ice_failure_is_reported_not_hung(hub: HubHandle) -> None:
    # IPv4-only against IPv6-only host candidates: no pair can ever succeed.
    _, _, alice_token, bob_token = await two_in_a_room(hub)
    async with clients(config(hub, alice_token, ice_timeout_s=2.0),
                       config(hub, bob_token, pin_host_addresses=("::1",),
                              ice_timeout_s=2.0)) as (_, bob):
        # ICE's own timeout ends the wait (wait_connected's would raise MediaTimeoutError).
        with pytest.raises(IceFailedError) as caught:
            await bob.wait_connected(1, timeout=10)
        assert caught.value.code == "ice-failed"
        assert bob.stats.errors["ice-failed"] >= 1
        assert bob.state == "joined"  # one failed connection does not end the client


async def test_relay_only_without_turn_is_turn_auth_failed(hub: HubHandle) -> None:
    _, _, alice_token, bob_token = await two_in_a_room(hub)
    async with clients(config(hub, alice_token),
                       config(hub, bob_token, ice_transport_policy="relay")) as (_, bob):
        with pytest.raises(TurnAuthError) as caught:
            await bob.wait_connected(1, timeout=5)
    assert caught.value.code == "turn-auth-failed"


# --------------------------------------------------------------------------- resume


async def test_network_drop_resumes_and_keeps_media_flowing(hub: HubHandle) -> None:
    proxy = await TcpProxy(int(hub.base_url.rsplit(":", 1)[1])).start()
    try:
        _, _, alice_token, bob_token = await two_in_a_room(hub)
        async with clients(config(hub, alice_token),
                           config(hub, bob_token, ws_url=proxy.ws_url(),
                                  resume_backoff_s=0.05)) as (alice, bob):
            await bob.wait_connected(1, timeout=10)
            await bob.wait_audio_from(timeout=10)
            bob_id = bob.peer_id
            with alice.messages() as alice_events:
                proxy.cut()  # both TCP legs reset: the hub sees an abnormal close
                await wait_until(lambda: bob.stats.resumes, what="bob resuming")
                assert bob.stats.resumes == 1 and bob.peer_id == bob_id
                assert bob.state == "joined"

                def from_alice() -> int:
                    return bob.stats.remote_peers[alice.peer_id].audio_frames  # type: ignore[index]

                before = from_alice()
                # the peer connection never noticed
                await wait_until(lambda: from_alice() > before,
                                 what="audio from alice after the resume")
                assert bob.remote_peers[alice.peer_id].state == "connected"  # type: ignore[index]
                bob.send_chat("still here")  # and the new socket works
                seen = []
                while not seen or not isinstance(seen[-1], protocol.ChatFrom):
                    seen.append(await alice_events.get(timeout=5))
                assert seen[-1].from_ == bob_id  # type: ignore[union-attr]
                # Within the grace period the room never saw bob leave.
                assert not [m for m in seen if isinstance(m, protocol.PeerLeft)]
            assert alice.remote_peers[bob_id].state == "connected"  # type: ignore[index]
    finally:
        await proxy.aclose()


@pytest.mark.slow
async def test_hub_restart_resumes_and_keeps_media_flowing() -> None:
    port, store = free_port(), MemoryStore()
    hub = await start_hub_on(port, store=store)
    try:
        _, _, alice_token, bob_token = await two_in_a_room(hub)
        async with clients(config(hub, alice_token, resume_backoff_s=0.1),
                           config(hub, bob_token, resume_backoff_s=0.1)) as (alice, bob):
            await bob.wait_connected(1, timeout=10)
            await bob.wait_audio_from(timeout=10)
            peer_ids = (alice.peer_id, bob.peer_id)
            await hub.aclose()  # closes every socket with 1001 "going away"
            hub = await start_hub_on(port, store=store)
            await wait_until(lambda: alice.stats.resumes and bob.stats.resumes,
                             what="alice and bob resuming")
            assert (alice.stats.resumes, bob.stats.resumes) == (1, 1)
            assert (alice.peer_id, bob.peer_id) == peer_ids
            assert alice.state == bob.state == "joined"

            def from_alice() -> int:
                return bob.stats.remote_peers[alice.peer_id].audio_frames  # type: ignore[index]

            before = from_alice()
            # the peer connection never noticed
            await wait_until(lambda: from_alice() > before,
                             what="audio from alice after the restart")
            assert bob.remote_peers[alice.peer_id].state == "connected"  # type: ignore[index]
            bob.send_chat("still here")  # and the new socket works
            await alice.ping()
    finally:
        await hub.aclose()


async def test_hub_gone_for_good_fails_after_bounded_resume() -> None:
    port, store = free_port(), MemoryStore()
    hub = await start_hub_on(port, store=store, settings=test_settings())
    try:
        _, room_id = await hub.create_room()
        token = hub.mint_token(room_id, "alice")
        async with PeerClient(config(hub, token, resume_attempts=3,
                                     resume_backoff_s=0.05)) as alice:
            await hub.aclose()
            # The client gives up after its resume attempts (not wait_connected's timeout).
            with pytest.raises(HubUnreachableError):
                await alice.wait_connected(1, timeout=10)
            assert alice.state == "failed"
            assert alice.stats.errors["hub-unreachable"] >= 3
    finally:
        await hub.aclose()


# --------------------------------------------------------------------------- real coturn

TURN_SECRET = "media-test-turn-secret-0123456789"


@asynccontextmanager
async def hub_with_turn(turn_secret: str) -> AsyncIterator[tuple[HubHandle, Any]]:
    """A real coturn accepting TURN_SECRET and a hub handing out credentials signed with
    ``turn_secret``."""
    from signaling.testing.hub import start_hub
    from tests.support.turnserver import run_turnserver

    async with run_turnserver([TURN_SECRET]) as turn:
        hub = await start_hub(test_settings(ice={
            "turn_host": "127.0.0.1", "turn_port": turn.port, "turn_secrets": (turn_secret,),
        }))
        try:
            yield hub, turn
        finally:
            await hub.aclose()


@pytest.mark.slow
async def test_relay_only_connects_through_coturn() -> None:
    async with hub_with_turn(TURN_SECRET) as (hub, turn):
        _, _, alice_token, bob_token = await two_in_a_room(hub)
        async with clients(config(hub, alice_token, ice_transport_policy="relay"),
                           config(hub, bob_token, ice_transport_policy="relay")) as (alice, bob):
            assert any("turn:" in str(s.urls) for s in bob.joined.ice_servers)  # type: ignore[union-attr]
            await asyncio.gather(alice.wait_connected(1, timeout=15),
                                 bob.wait_connected(1, timeout=15))
            await bob.wait_audio_from(timeout=10)
            sdp = bob.remote_peers[alice.peer_id].pc.localDescription.sdp  # type: ignore[index]
            assert " typ relay" in sdp and " typ host" not in sdp
        assert turn.allocation_lines()


@pytest.mark.slow
async def test_relay_only_with_refused_credentials_is_turn_auth_failed() -> None:
    async with hub_with_turn("a-secret-coturn-does-not-know-0123") as (hub, turn):
        _, _, alice_token, bob_token = await two_in_a_room(hub)
        async with clients(config(hub, alice_token),
                           config(hub, bob_token, ice_transport_policy="relay")) as (_, bob):
            with pytest.raises(TurnAuthError):  # reported, not wait_connected's timeout
                await bob.wait_connected(1, timeout=10)
        assert turn.auth_failure_lines()
