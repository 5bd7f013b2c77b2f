"""Bad input on the websocket: each case gets its documented error or close code, and the hub
keeps serving the other peers of the room."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import jwt
import pytest

from signaling import protocol as p
from signaling.codes import Close
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.wsclient import WsClient


@dataclass
class Room:
    hub: HubHandle
    room_id: str
    other_room: str
    host: WsClient
    bob: WsClient


@pytest.fixture
async def room(hub: HubHandle) -> Room:
    _, room_id = await hub.create_room(invite=("bob", "eve"))
    _, other = await hub.create_room(host="host2", invite=("mallory",))
    host = await WsClient.connect(hub.ws_url)
    bob = await WsClient.connect(hub.ws_url)
    await host.join(hub.mint_token(room_id, "host", "host"))
    await bob.join(hub.mint_token(room_id, "bob"))
    await host.expect(p.PeerJoined)
    yield Room(hub, room_id, other, host, bob)  # type: ignore[misc]
    await host.aclose()
    await bob.aclose()


async def assert_room_still_works(r: Room) -> None:
    """The two good peers still relay to each other through the hub."""
    await r.bob.send({"type": "offer", "to": r.host.peer_id, "sdp": "v=0 still-alive"})
    offer = await r.host.expect(p.OfferFrom)
    assert offer.sdp == "v=0 still-alive"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_token(room_id: str) -> str:
    claims = {"iss": "connvo-rtc", "aud": "connvo-rtc:join", "sub": "eve", "room": room_id,
              "role": "host", "iat": int(time.time()), "exp": int(time.time()) + 600}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def forged_token(room_id: str) -> str:
    claims = {"iss": "connvo-rtc", "aud": "connvo-rtc:join", "sub": "eve", "room": room_id,
              "role": "host", "iat": int(time.time()), "exp": int(time.time()) + 600}
    return jwt.encode(claims, "not-the-secret-but-long-enough-0123456789", algorithm="HS256")


# --------------------------------------------------------------------------- joined-peer input

JOINED_CASES: list[tuple[str, Callable[[Room], str | bytes], str]] = [
    ("not JSON", lambda r: "this is not json", "invalid-json"),
    ("JSON array", lambda r: "[1, 2]", "invalid-message"),
    ("unknown type", lambda r: json.dumps({"type": "teleport"}), "unknown-type"),
    ("type not a string", lambda r: json.dumps({"type": 7}), "unknown-type"),
    ("missing type", lambda r: json.dumps({"to": "x"}), "invalid-message"),
    ("offer missing sdp", lambda r: json.dumps({"type": "offer", "to": r.host.peer_id}),
     "invalid-message"),
    ("offer wrong type", lambda r: json.dumps({"type": "offer", "to": 5, "sdp": "v=0"}),
     "invalid-message"),
    ("chat empty", lambda r: json.dumps({"type": "chat", "text": ""}), "invalid-message"),
    ("binary frame", lambda r: b"\x00\x01binary", "invalid-message"),
    ("relay to unknown peer",
     lambda r: json.dumps({"type": "offer", "to": "p_nobody", "sdp": "v=0"}), "unknown-peer"),
    ("relay to self", lambda r: json.dumps({"type": "offer", "to": r.bob.peer_id, "sdp": "v=0"}),
     "unknown-peer"),
    ("second join", lambda r: json.dumps({"type": "join", "token": "x"}), "already-joined"),
    ("kick by participant",
     lambda r: json.dumps({"type": "kick", "peerId": r.host.peer_id}), "forbidden"),
    ("end by participant", lambda r: json.dumps({"type": "end"}), "forbidden"),
]


@pytest.mark.parametrize("frame,code", [(c[1], c[2]) for c in JOINED_CASES],
                         ids=[c[0] for c in JOINED_CASES])
async def test_bad_frame_from_joined_peer(room: Room, frame: Callable[[Room], str | bytes],
                                          code: str) -> None:
    await room.bob.send(frame(room))
    error = await room.bob.expect(p.Error)
    assert error.code == code, error
    assert error.message
    await assert_room_still_works(room)


async def test_relay_to_peer_of_another_room_is_not_delivered(room: Room) -> None:
    hub = room.hub
    mallory = await WsClient.connect(hub.ws_url)
    try:
        joined = await mallory.join(hub.mint_token(room.other_room, "mallory"))
        # mallory knows bob's peer id and tries to reach him from her own room.
        await mallory.send({"type": "offer", "to": room.bob.peer_id, "sdp": "v=0 evil"})
        assert (await mallory.expect(p.Error)).code == "unknown-peer"
        await assert_room_still_works(room)
        # Nothing from mallory ever reached bob: a relay the host sends him after her attempt
        # arrives, and nothing from her came before it.
        await room.host.send({"type": "offer", "to": room.bob.peer_id, "sdp": "v=0 marker"})
        marker = await room.bob.expect(p.OfferFrom)
        assert (marker.from_, marker.sdp) == (room.host.peer_id, "v=0 marker")
        assert not any(getattr(m, "from_", None) == joined.peer_id for m in room.bob.inbox)
    finally:
        await mallory.aclose()


# --------------------------------------------------------------------------- join refusals

JOIN_CASES: list[tuple[str, Callable[[Room], dict | str], str, int]] = [
    ("expired token", lambda r: {"type": "join", "token": r.hub.tokens.mint_join(
        r.room_id, "eve", now=time.time() - 7200, ttl_s=600)[0]}, "token-expired", 4401),
    ("bad signature", lambda r: {"type": "join", "token": forged_token(r.room_id)},
     "bad-token", 4401),
    ("alg none", lambda r: {"type": "join", "token": unsigned_token(r.room_id)},
     "bad-token", 4401),
    ("garbage token", lambda r: {"type": "join", "token": "abc.def"}, "bad-token", 4401),
    ("token for another room", lambda r: {"type": "join", "roomId": r.room_id,
                                          "token": r.hub.mint_token(r.other_room, "eve")},
     "wrong-room", 4403),
    ("room does not exist", lambda r: {"type": "join",
                                       "token": r.hub.mint_token("room_missing", "eve")},
     "no-room", 4404),
    ("first frame not join", lambda r: {"type": "ping"}, "bad-join", 4400),
    ("join not JSON", lambda r: "{{{", "bad-join", 4400),
    ("join missing token", lambda r: {"type": "join"}, "bad-join", 4400),
]


@pytest.mark.parametrize("frame,code,close", [(c[1], c[2], c[3]) for c in JOIN_CASES],
                         ids=[c[0] for c in JOIN_CASES])
async def test_bad_join(room: Room, frame: Callable[[Room], dict | str], code: str,
                        close: int) -> None:
    eve = await WsClient.connect(room.hub.ws_url)
    try:
        await eve.send(frame(room))
        error = await eve.expect(p.Error)
        assert error.code == code, error
        assert await eve.expect_close() == close
    finally:
        await eve.aclose()
    await assert_room_still_works(room)


async def test_join_timeout_closes_4408() -> None:
    hub = await start_hub(test_settings(limits={"join_timeout_s": 0.3}))
    client = await WsClient.connect(hub.ws_url)
    try:
        assert (await client.expect(p.Error)).code == "join-timeout"
        assert await client.expect_close() == Close.JOIN_TIMEOUT
    finally:
        await client.aclose()
        await hub.aclose()


async def test_oversized_frame_closes_1009(room: Room) -> None:
    limit = room.hub.settings.limits.max_frame_bytes
    await room.bob.send({"type": "offer", "to": room.host.peer_id, "sdp": "x" * (limit + 10)})
    assert await room.bob.expect_close() == Close.FRAME_TOO_LARGE
    # bob dropped (not left): host is not told until the resume grace ends.
    await room.host.send({"type": "ping"})
    await room.host.expect(p.Pong)
    assert not room.host.seen(p.PeerLeft)


async def test_flood_beyond_rate_limit() -> None:
    hub = await start_hub(test_settings(limits={"messages_per_second": 5, "message_burst": 10,
                                                "abuse_strikes": 5}))
    try:
        _, room_id = await hub.create_room(invite=("bob",))
        host = await WsClient.connect(hub.ws_url)
        bob = await WsClient.connect(hub.ws_url)
        await host.join(hub.mint_token(room_id, "host", "host"))
        await bob.join(hub.mint_token(room_id, "bob"))
        for _ in range(40):
            await bob.send({"type": "ping"})
        errors_then_close = await bob.expect_close()
        assert errors_then_close == Close.RATE_LIMITED
        codes = {m.code for m in bob.seen(p.Error)}
        assert codes == {"rate-limited"}
        assert 1 <= len(bob.seen(p.Pong)) <= 12  # the burst got through, the flood did not
        # host is unaffected
        await host.send({"type": "ping"})
        await host.expect(p.Pong)
        await host.aclose()
        await bob.aclose()
    finally:
        await hub.aclose()


async def test_repeated_bad_frames_close_the_socket() -> None:
    hub = await start_hub(test_settings(limits={"abuse_strikes": 3}))
    try:
        _, room_id = await hub.create_room()
        c = await WsClient.connect(hub.ws_url)
        await c.join(hub.mint_token(room_id, "host", "host"))
        for _ in range(3):
            await c.send("nope")
        assert await c.expect_close() == Close.BAD_JOIN
        assert len(c.seen(p.Error)) == 3
        await c.aclose()
    finally:
        await hub.aclose()


async def test_observer_may_not_send_media(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("olga",))
    host = await WsClient.connect(hub.ws_url)
    olga = await WsClient.connect(hub.ws_url)
    try:
        jh = await host.join(hub.mint_token(room_id, "host", "host"))
        jo = await olga.join(hub.mint_token(room_id, "olga", "observer"))
        assert jo.role == "observer"
        await olga.send({"type": "media", "audio": True})
        assert (await olga.expect(p.Error)).code == "forbidden"
        await olga.send({"type": "offer", "to": jh.peer_id,
                         "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n"})
        assert (await olga.expect(p.Error)).code == "forbidden"
        await olga.send({"type": "offer", "to": jh.peer_id,
                         "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n"})
        assert (await host.expect(p.OfferFrom)).from_ == jo.peer_id
    finally:
        await host.aclose()
        await olga.aclose()


async def test_chat_disabled_feature(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(chatEnabled=False)
    host = await WsClient.connect(hub.ws_url)
    try:
        await host.join(hub.mint_token(room_id, "host", "host"))
        await host.send({"type": "chat", "text": "hi"})
        assert (await host.expect(p.Error)).code == "feature-disabled"
    finally:
        await host.aclose()


Opener = Callable[[], Awaitable[WsClient]]
