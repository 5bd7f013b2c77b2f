"""Websocket protocol v1 against a real hub: join, relay, media, chat, leave, kick, end."""

from __future__ import annotations

from signaling import protocol as p
from signaling.codes import Close
from signaling.testing.hub import HubHandle
from tests.support.wsclient import WsClient


async def test_join_relay_and_leave(hub: HubHandle) -> None:
    _, room = await hub.create_room(invite=("bob",))
    a = await WsClient.connect(hub.ws_url)
    b = await WsClient.connect(hub.ws_url)
    try:
        ja = await a.join(hub.mint_token(room, "host", "host"))
        assert ja.room_id == room and ja.peers == [] and ja.role == "host"
        jb = await b.join(hub.mint_token(room, "bob"))
        assert [peer.peer_id for peer in jb.peers] == [ja.peer_id]
        joined = await a.expect(p.PeerJoined)
        assert joined.peer.peer_id == jb.peer_id and joined.peer.user_id == "bob"

        await b.send({"type": "offer", "to": ja.peer_id, "sdp": "v=0 offer"})
        offer = await a.expect(p.OfferFrom)
        assert offer.from_ == jb.peer_id and offer.sdp == "v=0 offer"
        await a.send({"type": "answer", "to": jb.peer_id, "sdp": "v=0 answer"})
        assert (await b.expect(p.AnswerFrom)).from_ == ja.peer_id
        await a.send({"type": "candidate", "to": jb.peer_id,
                      "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                    "sdpMid": "0", "sdpMLineIndex": 0}})
        cand = await b.expect(p.CandidateFrom)
        assert cand.candidate is not None and cand.candidate.sdp_mid == "0"

        await b.send({"type": "media", "audio": True, "video": False, "screen": False})
        updated = await a.expect(p.PeerUpdated)
        assert updated.peer.media.audio and not updated.peer.media.video

        await b.send({"type": "chat", "text": "hello"})
        chat = await a.expect(p.ChatFrom)
        assert chat.text == "hello" and chat.from_ == jb.peer_id and chat.ts > 0

        await a.send({"type": "ping", "ts": 12.5})
        assert (await a.expect(p.Pong)).ts == 12.5

        await b.send({"type": "leave"})
        left = await a.expect(p.PeerLeft)
        assert left.peer_id == jb.peer_id and left.reason == "left"
        assert await b.expect_close() == 1000
    finally:
        await a.aclose()
        await b.aclose()


async def test_kick_and_end(hub: HubHandle) -> None:
    meeting, room = await hub.create_room(invite=("bob", "carol"))
    clients = [await WsClient.connect(hub.ws_url) for _ in range(3)]
    host, bob, carol = clients
    try:
        await host.join(hub.mint_token(room, "host", "host"))
        jb = await bob.join(hub.mint_token(room, "bob"))
        await carol.join(hub.mint_token(room, "carol"))

        await bob.send({"type": "kick", "peerId": carol.peer_id})
        err = await bob.expect(p.Error)
        assert err.code == "forbidden"

        await host.send({"type": "kick", "peerId": jb.peer_id})
        await bob.expect(p.Kicked)
        assert await bob.expect_close() == Close.FORBIDDEN
        left = await carol.expect(p.PeerLeft)
        assert left.peer_id == jb.peer_id and left.reason == "kicked"
        again = await WsClient.connect(hub.ws_url)
        clients.append(again)
        await again.send({"type": "join", "token": hub.mint_token(room, "bob")})
        assert (await again.expect(p.Error)).code == "removed"
        assert await again.expect_close() == Close.FORBIDDEN

        await host.send({"type": "end"})
        assert (await carol.expect(p.RoomEndedMsg)).reason == "ended by host"
        assert await carol.expect_close() == Close.ROOM_ENDED
        status, body = await hub.call("queries/getMeeting", {"meetingId": meeting})
        assert status == 200 and body["value"]["state"] == "concluded"
    finally:
        for c in clients:
            await c.aclose()
