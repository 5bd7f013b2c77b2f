"""Issue 15's frames: the host's ``ask-mute`` (relayed as ``mute-requested`` from a host only,
to a validated target) and ``leave {closing: true}`` (a closing or reloading page keeps its seat
only for ``rooms.closing_grace_s``)."""

from __future__ import annotations

import pytest

from signaling import protocol as p
from signaling.app import STORE_KEY
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.wsclient import WsClient


async def test_host_asks_a_participant_to_mute(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("bob", "carol"))
    host, bob, carol = [await WsClient.connect(hub.ws_url) for _ in range(3)]
    try:
        await host.join(hub.mint_token(room_id, "host", "host", name="Hostess"))
        jb = await bob.join(hub.mint_token(room_id, "bob"))
        await carol.join(hub.mint_token(room_id, "carol"))
        await host.send({"type": "ask-mute", "peerId": jb.peer_id})
        asked = await bob.expect(p.MuteRequested)
        assert asked.from_ == host.peer_id and asked.name == "Hostess"
        # Only Bob was asked.
        await carol.send({"type": "ping"})
        await carol.expect(p.Pong)
        assert carol.seen(p.MuteRequested) == []
    finally:
        for c in (host, bob, carol):
            await c.aclose()


async def test_ask_mute_is_the_hosts_and_needs_a_person_in_the_room(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("bob", "carol", "olive"))
    _, other_room = await hub.create_room(host="host2")
    host, bob, carol, olive, stranger = [await WsClient.connect(hub.ws_url) for _ in range(5)]
    try:
        await host.join(hub.mint_token(room_id, "host", "host"))
        jb = await bob.join(hub.mint_token(room_id, "bob"))
        jc = await carol.join(hub.mint_token(room_id, "carol"))
        jo = await olive.join(hub.mint_token(room_id, "olive", "observer"))
        js = await stranger.join(hub.mint_token(other_room, "stranger"))

        # A participant may not ask: forbidden, and the target hears nothing.
        await bob.send({"type": "ask-mute", "peerId": jc.peer_id})
        err = await bob.expect(p.Error)
        assert err.code == "forbidden"

        # The host: not itself, not an observer (nothing to mute), not a peer of another
        # room, not a peer that does not exist; a malformed frame is invalid.
        for target in (host.peer_id, jo.peer_id, js.peer_id, "nobody"):
            await host.send({"type": "ask-mute", "peerId": target})
            err = await host.expect(p.Error)
            assert err.code == "unknown-peer", (target, err)
        for bad in ({"type": "ask-mute"}, {"type": "ask-mute", "peerId": ""},
                    {"type": "ask-mute", "peerId": 42}, {"type": "ask-mute", "peerId": "a b"}):
            await host.send(bad)
            err = await host.expect(p.Error)
            assert err.code == "invalid-message", (bad, err)

        # Every socket is still open and nobody was asked.
        for c in (host, bob, carol, olive, stranger):
            await c.send({"type": "ping"})
            await c.expect(p.Pong)
        for c in (carol, olive, stranger, host):
            assert c.seen(p.MuteRequested) == []
        assert jb.peer_id  # bob stays in the room
    finally:
        for c in (host, bob, carol, olive, stranger):
            await c.aclose()


@pytest.mark.parametrize("reload", [True, False], ids=["reload", "closed"])
async def test_closing_page_keeps_its_seat_briefly(reload: bool) -> None:
    """A page that is going away says ``leave {closing: true}``: a reload resumes its seat
    (same peerId, nobody sees it leave); a closed tab's seat is freed after the closing grace,
    long before the (here 120 s) resume grace would have freed it."""
    hub = await start_hub(test_settings(rooms={"resume_grace_s": 120.0, "closing_grace_s": 3.0}))
    host = await WsClient.connect(hub.ws_url)
    bob = await WsClient.connect(hub.ws_url)
    bob2 = None
    try:
        _, room_id = await hub.create_room(invite=("bob",))
        await host.join(hub.mint_token(room_id, "host", "host"))
        token = hub.mint_token(room_id, "bob")
        jb = await bob.join(token)
        await host.expect(p.PeerJoined)
        await bob.send({"type": "leave", "closing": True})
        await bob.aclose()  # the browser closes the socket as the page unloads
        if reload:
            bob2 = await WsClient.connect(hub.ws_url)
            again = await bob2.join(token, resume=jb.resume_token)
            assert again.resumed and again.peer_id == jb.peer_id
            await host.send({"type": "ping"})
            await host.expect(p.Pong)
            assert host.seen(p.PeerLeft) == []
        else:
            left = await host.expect(p.PeerLeft, timeout=10)
            assert left.peer_id == jb.peer_id and left.reason == "disconnected"
            assert [s.peer_id for s in await hub.app[STORE_KEY].seats(room_id)] == [host.peer_id]
    finally:
        for c in (host, bob, bob2):
            if c is not None:
                await c.aclose()
        await hub.aclose()


async def test_closing_grace_is_checked_at_start() -> None:
    with pytest.raises(Exception, match="closing_grace_s"):
        test_settings(rooms={"closing_grace_s": -1.0})
    # Longer than the resume grace is allowed (a test hub shortens the resume grace alone);
    # the shorter of the two applies.
    assert test_settings(rooms={"resume_grace_s": 0.5}).rooms.closing_grace_s == 5.0


async def test_a_plain_leave_still_frees_the_seat_at_once(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("bob",))
    host, bob = await WsClient.connect(hub.ws_url), await WsClient.connect(hub.ws_url)
    try:
        await host.join(hub.mint_token(room_id, "host", "host"))
        jb = await bob.join(hub.mint_token(room_id, "bob"))
        await bob.send({"type": "leave"})
        left = await host.expect(p.PeerLeft)
        assert (left.peer_id, left.reason) == (jb.peer_id, "left")
        assert await bob.expect_close() == 1000
    finally:
        await host.aclose()
        await bob.aclose()
