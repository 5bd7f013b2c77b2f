"""Room capacity, resume, grace expiry, limits on connections and slow consumers."""

from __future__ import annotations

import asyncio

from signaling import protocol as p
from signaling.app import STORE_KEY
from signaling.codes import Close
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.wsclient import WsClient
from tests.waiting import wait_until


async def _try_join(hub: HubHandle, token: str) -> tuple[WsClient, str | int]:
    c = await WsClient.connect(hub.ws_url)
    await c.send({"type": "join", "token": token})
    msg = await c.recv(10)
    if isinstance(msg, p.Joined):
        c.joined = msg
        return c, "joined"
    assert isinstance(msg, p.Error), msg
    code = await c.expect_close(10)
    assert code is not None
    return c, f"{msg.code}/{code}"


async def test_fifty_concurrent_joins_admit_exactly_four(hub: HubHandle) -> None:
    _, room_id = await hub.create_room()
    tokens = [hub.mint_token(room_id, f"user{i}") for i in range(50)]
    results = await asyncio.gather(*(_try_join(hub, t) for t in tokens))
    try:
        outcomes = [r for _, r in results]
        assert outcomes.count("joined") == 4
        assert outcomes.count("room-full/4409") == 46
        seats = await hub.app[STORE_KEY].seats(room_id)
        assert len(seats) == 4
    finally:
        await asyncio.gather(*(c.aclose() for c, _ in results))


async def test_tap_does_not_take_a_seat(hub: HubHandle) -> None:
    _, room_id = await hub.create_room()
    clients = []
    try:
        for i in range(4):
            c, outcome = await _try_join(hub, hub.mint_token(room_id, f"u{i}"))
            clients.append(c)
            assert outcome == "joined"
        tap, outcome = await _try_join(hub, hub.mint_token(room_id, "tap-worker", "tap"))
        clients.append(tap)
        assert outcome == "joined"
        fifth, outcome = await _try_join(hub, hub.mint_token(room_id, "u5"))
        clients.append(fifth)
        assert outcome == "room-full/4409"
        tap2, outcome = await _try_join(hub, hub.mint_token(room_id, "tap-2", "tap"))
        clients.append(tap2)
        assert outcome == "room-full/4409"
    finally:
        for c in clients:
            await c.aclose()


async def test_dropped_socket_resumes_with_same_peer_id(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("bob",))
    host = await WsClient.connect(hub.ws_url)
    bob = await WsClient.connect(hub.ws_url)
    bob2 = None
    try:
        jh = await host.join(hub.mint_token(room_id, "host", "host"))
        bob_token = hub.mint_token(room_id, "bob")
        jb = await bob.join(bob_token)
        await host.expect(p.PeerJoined)
        # The network drops: the TCP connection dies without a close handshake.
        transport = bob.ws._response.connection.transport  # type: ignore[union-attr]
        transport.abort()
        await bob.aclose()
        store = hub.app[STORE_KEY]

        async def bob_detached() -> bool:
            return any(seat.peer_id == jb.peer_id and not seat.connected
                       for seat in await store.seats(room_id))

        await wait_until(bob_detached, what="the hub noticing bob's dropped socket")
        bob2 = await WsClient.connect(hub.ws_url)
        again = await bob2.join(bob_token, resume=jb.resume_token)
        assert again.peer_id == jb.peer_id and again.resumed
        assert [peer.peer_id for peer in again.peers] == [jh.peer_id]
        # Relaying works both ways on the new socket.
        await host.send({"type": "offer", "to": jb.peer_id, "sdp": "v=0 restart"})
        assert (await bob2.expect(p.OfferFrom)).sdp == "v=0 restart"
        await host.send({"type": "ping"})
        await host.expect(p.Pong)
        assert not host.seen(p.PeerLeft) and len(host.seen(p.PeerJoined)) == 1
    finally:
        await host.aclose()
        if bob2 is not None:
            await bob2.aclose()


async def test_grace_expiry_tells_the_room() -> None:
    hub = await start_hub(test_settings(rooms={"resume_grace_s": 0.5}))
    try:
        _, room_id = await hub.create_room(invite=("bob",))
        host = await WsClient.connect(hub.ws_url)
        bob = await WsClient.connect(hub.ws_url)
        await host.join(hub.mint_token(room_id, "host", "host"))
        token = hub.mint_token(room_id, "bob")
        jb = await bob.join(token)
        bob.ws._response.connection.transport.abort()  # type: ignore[union-attr]
        await bob.aclose()
        left = await host.expect(p.PeerLeft, timeout=5)
        assert left.peer_id == jb.peer_id and left.reason == "disconnected"
        # Too late to resume: the hub admits bob afresh with a new peer id.
        late = await WsClient.connect(hub.ws_url)
        again = await late.join(token, resume=jb.resume_token)
        assert not again.resumed and again.peer_id != jb.peer_id
        await late.aclose()
        await host.aclose()
    finally:
        await hub.aclose()


async def test_resume_while_the_old_socket_is_open_closes_it_as_taken_over(
        hub: HubHandle) -> None:
    """A seat resumed from another socket (a reloaded tab whose old socket the hub has not seen
    drop yet) used to close the old socket with 4409, which both clients read as 'room full'
    and the Python client retried. It is 4411, taken over, and the new socket has the seat."""
    _, room_id = await hub.create_room(invite=("bob",))
    old = await WsClient.connect(hub.ws_url)
    new = await WsClient.connect(hub.ws_url)
    try:
        token = hub.mint_token(room_id, "bob")
        first = await old.join(token)
        again = await new.join(token, resume=first.resume_token)
        assert again.resumed and again.peer_id == first.peer_id
        assert await old.expect_close() == Close.TAKEN_OVER
        await new.send({"type": "ping"})
        await new.expect(p.Pong)
        assert not new.seen(p.PeerLeft)
    finally:
        await old.aclose()
        await new.aclose()


async def test_resume_token_of_someone_else_is_refused(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("bob", "eve"))
    bob = await WsClient.connect(hub.ws_url)
    eve = await WsClient.connect(hub.ws_url)
    try:
        jb = await bob.join(hub.mint_token(room_id, "bob"))
        je = await eve.join(hub.mint_token(room_id, "eve"), resume=jb.resume_token)
        assert je.peer_id != jb.peer_id and not je.resumed
    finally:
        await bob.aclose()
        await eve.aclose()


async def test_max_connections_per_worker() -> None:
    hub = await start_hub(test_settings(limits={"max_connections": 2}))
    clients = [await WsClient.connect(hub.ws_url) for _ in range(2)]
    try:
        extra = await WsClient.connect(hub.ws_url)
        clients.append(extra)
        error = await extra.expect(p.Error)
        assert error.code == "server-full" and error.retryable
        assert await extra.expect_close() == Close.TRY_AGAIN_LATER
    finally:
        for c in clients:
            await c.aclose()
        await hub.aclose()


async def test_slow_consumer_is_disconnected() -> None:
    hub = await start_hub(test_settings(limits={"send_queue_frames": 8,
                                                "messages_per_second": 10_000,
                                                "message_burst": 10_000}))
    try:
        _, room_id = await hub.create_room(invite=("bob",))
        host = await WsClient.connect(hub.ws_url)
        bob = await WsClient.connect(hub.ws_url)
        await host.join(hub.mint_token(room_id, "host", "host"))
        jb = await bob.join(hub.mint_token(room_id, "bob"))
        # bob stops reading; host sends ~25 MB of offers to him.
        transport = bob.ws._response.connection.transport  # type: ignore[union-attr]
        transport.pause_reading()
        sdp = "v=0 " + "x" * 60_000
        for _ in range(400):
            await host.send({"type": "offer", "to": jb.peer_id, "sdp": sdp})
            if host.ws.closed:
                break
        await host.send({"type": "ping"})
        await host.expect(p.Pong, timeout=10)
        # The hub dropped bob instead of buffering: host eventually sees him leave the
        # socket (grace keeps the seat) and his relays now fail as 'peer-unavailable'.
        async def relay_to_bob_fails() -> bool:
            await host.send({"type": "offer", "to": jb.peer_id, "sdp": "v=0"})
            await host.send({"type": "ping"})
            await host.expect(p.Pong, timeout=5)
            return any(e.code == "peer-unavailable" for e in host.seen(p.Error))

        await wait_until(relay_to_bob_fails, timeout=10, interval=0.1,
                         what="the hub disconnecting the slow consumer bob")
        transport.resume_reading()
        await host.aclose()
        await bob.aclose()
    finally:
        await hub.aclose()
