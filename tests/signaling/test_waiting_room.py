"""The waiting room on one worker: knock, admit, deny, timeout, limits, late hosts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from signaling import protocol as p
from signaling.app import STORE_KEY
from signaling.codes import Close
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.wsclient import WsClient
from tests.waiting import wait_until

WAITING_ROOM = {"waitingRoomEnabled": True}


async def closed_with(client: WsClient, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason."""
    while True:
        msg = await client.ws.receive(timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            client.inbox.append(p.decode_server(msg.data))
            continue
        if msg.type == aiohttp.WSMsgType.CLOSE:
            reason = msg.extra or ""
            await client.ws.close()
            return msg.data, reason
        return client.ws.close_code, ""


async def knock(hub: HubHandle, room_id: str, user: str, role: str = "participant") -> WsClient:
    """``user`` joins and is told to wait."""
    client = await WsClient.connect(hub.ws_url)
    await client.send({"type": "join", "token": hub.mint_token(room_id, user, role)})
    await client.expect(p.Waiting)
    return client


@pytest.fixture
async def clients() -> AsyncIterator[list[WsClient]]:
    made: list[WsClient] = []
    yield made
    for client in made:
        await client.aclose()


async def host_in(hub: HubHandle, room_id: str, clients: list[WsClient],
                  user: str = "host") -> WsClient:
    host = await WsClient.connect(hub.ws_url)
    clients.append(host)
    await host.join(hub.mint_token(room_id, user, "host"))
    return host


async def test_admitted_knocker_joins(hub: HubHandle, clients: list[WsClient]) -> None:
    meeting_id, room_id = await hub.create_room(invite=("bob",), **WAITING_ROOM)
    host = await host_in(hub, room_id, clients)
    bob = await knock(hub, room_id, "bob")
    clients.append(bob)
    knocked = (await host.expect(p.Knock)).peer
    assert (knocked.user_id, knocked.name, knocked.role) == ("bob", "bob", "participant")
    # waiting holds no seat
    seats = await hub.app[STORE_KEY].seats(room_id)
    assert [s.user_id for s in seats] == ["host"]
    status, body = await hub.call("queries/getMeeting", {"meetingId": meeting_id})
    assert status == 200 and body["value"]["participantCount"] == 1
    await host.send({"type": "admit", "peerId": knocked.peer_id})
    joined = await bob.expect(p.Joined)
    assert joined.peer_id == knocked.peer_id  # the peer the host saw knocking
    assert [peer.user_id for peer in joined.peers] == ["host"]
    assert (await host.expect(p.PeerJoined)).peer.peer_id == knocked.peer_id
    ended = await host.expect(p.KnockEnded)
    assert (ended.peer_id, ended.reason) == (knocked.peer_id, "admitted")
    # admitted, bob is a peer like any other
    await bob.send({"type": "chat", "text": "thanks"})
    assert (await host.expect(p.ChatFrom)).text == "thanks"


async def test_denied_knocker_is_closed_4403_denied(hub: HubHandle,
                                                    clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob",), **WAITING_ROOM)
    host = await host_in(hub, room_id, clients)
    bob = await knock(hub, room_id, "bob")
    clients.append(bob)
    knocked = (await host.expect(p.Knock)).peer
    await host.send({"type": "deny", "peerId": knocked.peer_id})
    assert (await closed_with(bob)) == (Close.FORBIDDEN, "denied")
    assert [m.code for m in bob.seen(p.Error)] == ["denied"]
    assert not bob.seen(p.Joined)
    assert (await host.expect(p.KnockEnded)).reason == "denied"
    # answering again: nobody is waiting
    await host.send({"type": "admit", "peerId": knocked.peer_id})
    assert (await host.expect(p.Error)).code == "unknown-peer"


async def test_only_hosts_answer_knocks(hub: HubHandle, clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob", "carol"), **WAITING_ROOM)
    host = await host_in(hub, room_id, clients)
    bob = await knock(hub, room_id, "bob")
    clients.append(bob)
    knocked = (await host.expect(p.Knock)).peer
    await host.send({"type": "admit", "peerId": knocked.peer_id})
    await bob.expect(p.Joined)
    carol = await knock(hub, room_id, "carol")
    clients.append(carol)
    carol_knock = (await host.expect(p.Knock)).peer
    assert not bob.seen(p.Knock)  # participants never see knocks
    for kind in ("admit", "deny"):
        await bob.send({"type": kind, "peerId": carol_knock.peer_id})
        assert (await bob.expect(p.Error)).code == "forbidden"
    # carol still waits: the host can still let her in
    await host.send({"type": "admit", "peerId": carol_knock.peer_id})
    await carol.expect(p.Joined)


async def test_a_knocker_can_only_ping_and_leave(hub: HubHandle,
                                                 clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob",), **WAITING_ROOM)
    host = await host_in(hub, room_id, clients)
    bob = await knock(hub, room_id, "bob")
    clients.append(bob)
    knocked = (await host.expect(p.Knock)).peer
    frames: list[dict[str, Any]] = [
        {"type": "offer", "to": host.peer_id, "sdp": "v=0"},
        {"type": "candidate", "to": host.peer_id, "candidate": None},
        {"type": "chat", "text": "let me in"},
        {"type": "media", "audio": True},
        {"type": "admit", "peerId": knocked.peer_id},
        {"type": "end"},
    ]
    for frame in frames:
        await bob.send(frame)
        assert (await bob.expect(p.Error)).code == "waiting", frame
    await bob.send({"type": "ping", "ts": 7})
    assert (await bob.expect(p.Pong)).ts == 7
    await bob.send({"type": "leave"})
    assert (await closed_with(bob))[0] == Close.NORMAL
    ended = await host.expect(p.KnockEnded)
    assert (ended.peer_id, ended.reason) == (knocked.peer_id, "left")
    assert not host.seen(p.OfferFrom) and not host.seen(p.ChatFrom)
    assert await hub.app[STORE_KEY].knocking(room_id) == []


async def test_a_knocker_that_drops_stops_waiting(hub: HubHandle,
                                                  clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob",), **WAITING_ROOM)
    host = await host_in(hub, room_id, clients)
    bob = await knock(hub, room_id, "bob")
    knocked = (await host.expect(p.Knock)).peer
    bob.ws._response.connection.transport.abort()  # type: ignore[union-attr]
    await bob.aclose()
    assert (await host.expect(p.KnockEnded)).reason == "left"
    await host.send({"type": "admit", "peerId": knocked.peer_id})
    assert (await host.expect(p.Error)).code == "unknown-peer"


async def test_hosts_joining_later_get_the_waiting_knocks(hub: HubHandle,
                                                          clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob", "carol"), **WAITING_ROOM)
    bob = await knock(hub, room_id, "bob")
    carol = await knock(hub, room_id, "carol")
    clients += [bob, carol]
    host = await host_in(hub, room_id, clients)
    first, second = await host.expect(p.Knock), await host.expect(p.Knock)
    assert [first.peer.user_id, second.peer.user_id] == ["bob", "carol"]  # oldest first
    # a second host (another user with a host token) gets them too, and every host hears
    # how a knock ended
    cohost = await host_in(hub, room_id, clients, user="cohost")
    assert {(await cohost.expect(p.Knock)).peer.user_id for _ in range(2)} == {"bob", "carol"}
    await cohost.send({"type": "admit", "peerId": first.peer.peer_id})
    await bob.expect(p.Joined)
    assert (await host.expect(p.KnockEnded)).peer_id == first.peer.peer_id
    assert (await cohost.expect(p.KnockEnded)).peer_id == first.peer.peer_id
    # both answer carol at once: one wins
    await host.send({"type": "deny", "peerId": second.peer.peer_id})
    await cohost.send({"type": "admit", "peerId": second.peer.peer_id})
    outcome = await carol.recv()
    assert isinstance(outcome, (p.Joined, p.Error)), outcome


async def test_admission_when_the_room_is_full(hub: HubHandle, clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob", "carol"), maxParticipants=2,
                                       **WAITING_ROOM)
    host = await host_in(hub, room_id, clients)
    bob = await knock(hub, room_id, "bob")
    carol = await knock(hub, room_id, "carol")
    clients += [bob, carol]
    for _ in range(2):
        await host.expect(p.Knock)
    by_user = {m.peer.user_id: m.peer.peer_id for m in host.seen(p.Knock)}
    await host.send({"type": "admit", "peerId": by_user["bob"]})
    await bob.expect(p.Joined)
    await host.send({"type": "admit", "peerId": by_user["carol"]})
    assert (await closed_with(carol))[0] == Close.ROOM_FULL
    assert [m.code for m in carol.seen(p.Error)] == ["room-full"]
    reasons = {}
    while len(reasons) < 2:
        ended = await host.expect(p.KnockEnded)
        reasons[ended.peer_id] = ended.reason
    assert reasons == {by_user["bob"]: "admitted", by_user["carol"]: "room-full"}


async def test_auto_admit_lets_everyone_in(hub: HubHandle, clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob",), autoAdmit=True, **WAITING_ROOM)
    bob = await WsClient.connect(hub.ws_url)
    clients.append(bob)
    await bob.join(hub.mint_token(room_id, "bob"))  # no host needed
    assert not bob.seen(p.Waiting)


async def test_without_a_waiting_room_nobody_waits(hub: HubHandle,
                                                   clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob",))
    host = await host_in(hub, room_id, clients)
    bob = await WsClient.connect(hub.ws_url)
    clients.append(bob)
    await bob.join(hub.mint_token(room_id, "bob"))
    await host.send({"type": "admit", "peerId": bob.peer_id})
    assert (await host.expect(p.Error)).code == "unknown-peer"


async def test_ending_the_room_closes_the_waiting_room(hub: HubHandle,
                                                       clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob",), **WAITING_ROOM)
    host = await host_in(hub, room_id, clients)
    bob = await knock(hub, room_id, "bob")
    clients.append(bob)
    await host.expect(p.Knock)
    await host.send({"type": "end"})
    assert (await closed_with(bob))[0] == Close.ROOM_ENDED
    assert bob.seen(p.RoomEndedMsg)


async def test_a_removed_user_cannot_knock(hub: HubHandle, clients: list[WsClient]) -> None:
    _, room_id = await hub.create_room(invite=("bob",), **WAITING_ROOM)
    host = await host_in(hub, room_id, clients)
    bob = await knock(hub, room_id, "bob")
    clients.append(bob)
    await host.send({"type": "admit", "peerId": (await host.expect(p.Knock)).peer.peer_id})
    bob.joined = await bob.expect(p.Joined)
    await host.send({"type": "kick", "peerId": bob.peer_id})
    await closed_with(bob)
    again = await WsClient.connect(hub.ws_url)
    clients.append(again)
    await again.send({"type": "join", "token": hub.mint_token(room_id, "bob")})
    assert (await closed_with(again))[0] == Close.FORBIDDEN
    assert [m.code for m in again.seen(p.Error)] == ["removed"]


async def test_waiting_timeout_and_limit() -> None:
    """Nobody answering within rooms.waiting_timeout_s closes the knocker (4408
    waiting-timeout); more than rooms.max_waiting knockers are refused (4409)."""
    hub = await start_hub(test_settings(rooms={"waiting_timeout_s": 0.5, "max_waiting": 1}))
    clients: list[WsClient] = []
    try:
        _, room_id = await hub.create_room(invite=("bob", "carol"), **WAITING_ROOM)
        host = await host_in(hub, room_id, clients)
        bob = await knock(hub, room_id, "bob")
        clients.append(bob)
        carol = await WsClient.connect(hub.ws_url)
        clients.append(carol)
        await carol.send({"type": "join", "token": hub.mint_token(room_id, "carol")})
        assert (await closed_with(carol))[0] == Close.ROOM_FULL
        assert [m.code for m in carol.seen(p.Error)] == ["waiting-room-full"]
        assert (await closed_with(bob))[0] == Close.JOIN_TIMEOUT
        assert [m.code for m in bob.seen(p.Error)] == ["waiting-timeout"]
        knocked = (await host.expect(p.Knock)).peer
        ended = await host.expect(p.KnockEnded)
        assert (ended.peer_id, ended.reason) == (knocked.peer_id, "timeout")
        store = hub.app[STORE_KEY]

        async def nobody_waits() -> bool:
            return await store.knocking(room_id) == []

        await wait_until(nobody_waits, what="the waiting room emptying")
    finally:
        for client in clients:
            await client.aclose()
        await hub.aclose()
