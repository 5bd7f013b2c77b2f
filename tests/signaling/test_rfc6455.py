"""The hub's own websocket server (signaling/websocket.py, signaling/server.py) against a raw TCP
client that writes frames byte by byte: the handshake, fragmentation, control frames, the close
handshake, framing errors, liveness, and HTTP still served on the same port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import ClassVar

import aiohttp
import pytest

from signaling import protocol as p
from signaling.app import HUB_KEY
from signaling.rfc6455 import GUID, encode_frame, parse_upgrade, sweep
from signaling.testing.echo import EchoSocket
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.wsclient import WsClient
from tests.waiting import wait_until

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_CONT = 1, 2, 8, 9, 10, 0


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
                 rsv: int = 0) -> bytes:
    """A client → server frame (masked, as RFC 6455 requires, unless ``mask`` is False)."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawWs:
    """A websocket client made of a TCP stream: it sends exactly the bytes a test gives."""

    opened: ClassVar[list[RawWs]] = []  # closed by the hub fixture

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        RawWs.opened.append(self)

    @classmethod
    async def connect(cls, port: int, *, path: str = "/ws", extra: bytes = b"",
                      after_http: int = 0) -> RawWs:
        """Open a websocket; ``after_http`` plain HTTP requests go first on the same
        connection (as a proxy reusing a kept-alive upstream connection does)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(after_http):
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            await reader.readexactly(length)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode() + extra)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 "), head
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
        assert b"Sec-WebSocket-Accept: " + accept in head
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def send_json(self, message: dict[str, object]) -> None:
        self.send(client_frame(OP_TEXT, json.dumps(message).encode()))

    async def frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload); (-1, b"") at EOF."""
        async with asyncio.timeout(timeout):
            try:
                b0, b1 = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return -1, b""
            assert not b1 & 0x80, "server frames are never masked"
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            assert b0 & 0x80, "the hub never fragments"
            return b0 & 0x0F, await self.reader.readexactly(n)

    async def message(self, timeout: float = 5.0) -> p.ServerMessage:
        opcode, payload = await self.frame(timeout)
        assert opcode == OP_TEXT, (opcode, payload)
        return p.decode_server(payload)

    async def close_code(self, timeout: float = 5.0) -> int:
        """Read up to the server's close frame; its code."""
        while True:
            opcode, payload = await self.frame(timeout)
            assert opcode != -1, "connection ended without a close frame"
            if opcode == OP_CLOSE:
                return int.from_bytes(payload[:2], "big")

    async def eof(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read() == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    handle = await start_hub(test_settings(limits={"max_frame_bytes": 4096}))
    try:
        yield handle
    finally:
        for ws in RawWs.opened:
            ws.writer.close()
            with contextlib.suppress(OSError):
                await ws.writer.wait_closed()
        RawWs.opened.clear()
        await handle.aclose()


def port_of(hub: HubHandle) -> int:
    return int(hub.base_url.rsplit(":", 1)[1])


async def joined(hub: HubHandle, room_id: str, user: str) -> tuple[RawWs, str]:
    ws = await RawWs.connect(port_of(hub))
    ws.send_json({"type": "join", "token": hub.mint_token(room_id, user)})
    while True:
        message = await ws.message()
        if isinstance(message, p.Joined):
            return ws, message.peer_id


async def test_handshake_then_fragmented_text_control_frames_between_and_relay(
        hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("ada", "bob"))
    ada, ada_id = await joined(hub, room_id, "ada")
    bob, bob_id = await joined(hub, room_id, "bob")
    # One offer in three fragments, with a ping between them: the pong comes first.
    text = json.dumps({"type": "offer", "to": bob_id, "sdp": "v=0 " + "é" * 40}).encode()
    ada.send(client_frame(OP_TEXT, text[:10], fin=False))
    ada.send(client_frame(OP_PING, b"are you there"))
    ada.send(client_frame(OP_CONT, text[10:30], fin=False))
    frame = await ada.frame()
    while frame[0] == OP_TEXT:  # bob's peer-joined
        frame = await ada.frame()
    assert frame == (OP_PONG, b"are you there")
    ada.send(client_frame(OP_CONT, text[30:]))
    offer = await bob.message()
    while not isinstance(offer, p.OfferFrom):
        offer = await bob.message()
    assert offer.from_ == ada_id and offer.sdp == "v=0 " + "é" * 40
    # A frame split across TCP writes, and two frames in one write, are read alike.
    two = (client_frame(OP_TEXT, json.dumps({"type": "ping", "ts": 1}).encode())
           + client_frame(OP_TEXT, json.dumps({"type": "ping", "ts": 2}).encode()))
    for i in range(0, len(two), 3):
        bob.send(two[i:i + 3])
        await bob.writer.drain()
    assert [await bob.message(), await bob.message()] == [p.Pong(ts=1), p.Pong(ts=2)]
    ada.close()
    bob.close()


async def test_an_upgrade_on_a_kept_alive_http_connection_works_too(hub: HubHandle) -> None:
    """nginx with upstream ``keepalive`` sends upgrades on connections that carried HTTP."""
    _, room_id = await hub.create_room(invite=("ada", "bob"))
    join = client_frame(OP_TEXT, json.dumps(
        {"type": "join", "token": hub.mint_token(room_id, "ada")}).encode())
    ada = await RawWs.connect(port_of(hub), after_http=2, extra=join)
    joined_frame = await ada.message()
    assert isinstance(joined_frame, p.Joined)
    bob, bob_id = await joined(hub, room_id, "bob")
    ada.send_json({"type": "offer", "to": bob_id, "sdp": "v=0 kept-alive"})
    message = await bob.message()
    assert isinstance(message, p.OfferFrom) and message.from_ == joined_frame.peer_id
    ada.send(client_frame(OP_PING, b"hi"))
    frame = await ada.frame()
    while frame[0] == OP_TEXT:
        frame = await ada.frame()
    assert frame == (OP_PONG, b"hi")
    ada.send(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
    assert await ada.close_code() == 1000
    assert await ada.eof()
    while not isinstance(message := await bob.message(), p.PeerLeft):
        pass
    assert message.peer_id == joined_frame.peer_id
    assert hub.app[HUB_KEY].socket_count == 1


async def test_upgrade_request_and_first_frame_in_one_packet(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("ada",))
    join = client_frame(OP_TEXT, json.dumps(
        {"type": "join", "token": hub.mint_token(room_id, "ada")}).encode())
    ws = await RawWs.connect(port_of(hub), extra=join)
    assert isinstance(await ws.message(), p.Joined)
    ws.close()


@pytest.mark.parametrize(("frame", "code"), [
    (client_frame(OP_TEXT, b'{"type":"ping"}', mask=False), 1002),  # clients must mask
    (client_frame(OP_TEXT, b'{"type":"ping"}', rsv=0x40), 1002),  # no extension negotiated
    (client_frame(0x3, b"x"), 1002),  # reserved opcode
    (client_frame(OP_PING, b"x" * 126), 1002),  # control frame over 125 bytes
    (client_frame(OP_PING, b"x", fin=False), 1002),  # fragmented control frame
    (client_frame(OP_CONT, b"x"), 1002),  # continuation with nothing to continue
    (client_frame(OP_TEXT, b"\xff\xfe"), 1007),  # text that is not UTF-8
    (client_frame(OP_TEXT, b"x" * 5000), 1009),  # over max_frame_bytes (4096 here)
    (client_frame(OP_TEXT, b"x" * 3000, fin=False)
     + client_frame(OP_CONT, b"x" * 3000), 1009),  # the whole message counts
], ids=["unmasked", "rsv-bit", "reserved-opcode", "long-ping", "fragmented-ping",
        "stray-continuation", "not-utf8", "over-max-size", "fragments-over-max-size"])
async def test_framing_errors_close_with_the_rfc_code(hub: HubHandle, frame: bytes,
                                                      code: int) -> None:
    _, room_id = await hub.create_room(invite=("ada", "bob"))
    ws, _ = await joined(hub, room_id, "ada")
    ws.send(frame)
    assert await ws.close_code() == code
    ws.send(client_frame(OP_CLOSE, code.to_bytes(2, "big")))
    assert await ws.eof()
    # The room is fine: another peer joins and pings.
    bob, _ = await joined(hub, room_id, "bob")
    bob.send_json({"type": "ping", "ts": 7})
    assert await bob.message() == p.Pong(ts=7)
    bob.close()


async def test_an_oversized_frame_is_refused_from_its_header(hub: HubHandle) -> None:
    """A 1 GB length in the header is refused at once, not buffered."""
    _, room_id = await hub.create_room(invite=("ada",))
    ws, _ = await joined(hub, room_id, "ada")
    ws.send(bytes([0x81, 0x80 | 127]) + (1 << 30).to_bytes(8, "big") + os.urandom(4) + b"x" * 10)
    assert await ws.close_code() == 1009


async def test_client_close_is_echoed_and_1000_means_left(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("ada", "bob"))
    ada, ada_id = await joined(hub, room_id, "ada")
    bob, _ = await joined(hub, room_id, "bob")
    ada.send(client_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye"))
    assert await ada.close_code() == 1000
    assert await ada.eof()  # the server closes TCP after the handshake
    while True:
        message = await bob.message()
        if isinstance(message, p.PeerLeft):
            assert message.peer_id == ada_id
            break
    bob.close()


async def test_a_dropped_socket_keeps_the_seat(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("ada", "bob"))
    ada, ada_id = await joined(hub, room_id, "ada")
    bob, _ = await joined(hub, room_id, "bob")
    ada.writer.transport.abort()  # no close frame: a network drop
    seen: list[p.ServerMessage] = []

    async def relay_to_ada_fails() -> bool:
        bob.send_json({"type": "offer", "to": ada_id, "sdp": "v=0"})
        bob.send_json({"type": "ping", "ts": len(seen)})
        while not isinstance(message := await bob.message(), p.Pong):
            seen.append(message)
        return any(isinstance(m, p.Error) and m.code == "peer-unavailable" for m in seen)

    await wait_until(relay_to_ada_fails, interval=0.05,
                     what="the hub noticing ada's dropped socket (relays to her refused)")
    assert not any(isinstance(m, p.PeerLeft) for m in seen), "the seat is kept for resume"
    seats = await hub.app[HUB_KEY].store.seats(room_id)
    assert any(s.peer_id == ada_id and not s.connected for s in seats)
    bob.close()


async def test_liveness_sweep_pings_silent_clients_and_drops_dead_ones(hub: HubHandle) -> None:
    _, room_id = await hub.create_room(invite=("ada", "bob"))
    ada, _ = await joined(hub, room_id, "ada")
    bob, _ = await joined(hub, room_id, "bob")
    sockets = hub.app[HUB_KEY].sockets()
    sweep(sockets, 2)
    sweep(sockets, 2)  # two silent sweeps: both get a ping
    for ws in (ada, bob):
        frame = await ws.frame()
        while frame[0] == OP_TEXT:  # peer-joined
            frame = await ws.frame()
        assert frame == (OP_PING, b"")
    ada.send(client_frame(OP_PONG, b""))  # ada answers, bob does not
    # The hub has read ada's pong once it answers a message she sent after it.
    ada.send_json({"type": "ping", "ts": 2})
    assert await ada.message() == p.Pong(ts=2)
    sweep(sockets, 2)
    assert await bob.eof(), "a client that does not answer the ping is cut off"
    ada.send_json({"type": "ping", "ts": 3})
    assert await ada.message() == p.Pong(ts=3)
    ada.close()


async def test_http_and_bad_upgrades_are_served_by_aiohttp_on_the_same_port(
        hub: HubHandle) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.base_url}/healthz") as resp:
            assert resp.status == 200
        async with session.get(f"{hub.base_url}/ws") as resp:  # plain GET, no upgrade
            assert resp.status == 400
            assert "upgrade" in (await resp.text()).lower()
        async with session.get(f"{hub.base_url}/ws", headers={
                "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "x"}) as resp:
            assert resp.status == 400
        # Keep-alive: a second request on the same connection is still HTTP.
        for _ in range(2):
            async with session.get(f"{hub.base_url}/healthz") as resp:
                assert resp.status == 200
    # aiohttp's own websocket client works as it does against any server.
    _, room_id = await hub.create_room(invite=("ada",))
    client = await WsClient.connect(hub.ws_url)
    await client.join(hub.mint_token(room_id, "ada"))
    await client.send({"type": "ping", "ts": 5})
    assert (await client.expect(p.Pong)).ts == 5
    await client.aclose()


def test_parse_upgrade_accepts_only_valid_rfc6455_requests() -> None:
    key = base64.b64encode(b"k" * 16).decode()
    good = (f"GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
            f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13").encode()
    request = parse_upgrade(good)
    assert request is not None and request.path == "/ws" and request.query == "x=1"
    for bad in (good.replace(b"GET", b"POST"), good.replace(b"HTTP/1.1", b"HTTP/1.0"),
                good.replace(b"Version: 13", b"Version: 12"),
                good.replace(key.encode(), b"c2hvcnQ="),  # 5 bytes, not 16
                good.replace(b"Upgrade: WebSocket\r\n", b""),
                good.replace(b"keep-alive, Upgrade", b"keep-alive"),
                good.replace(b"Host: h", b"Host h")):
        assert parse_upgrade(bad) is None, bad


def test_server_frames_use_the_shortest_length_encoding() -> None:
    assert encode_frame(OP_TEXT, b"x" * 125)[:2] == bytes([0x81, 125])
    assert encode_frame(OP_TEXT, b"x" * 126)[:4] == bytes([0x81, 126, 0, 126])
    assert encode_frame(OP_TEXT, b"x" * 65536)[:10] == bytes([0x81, 127]) + (65536).to_bytes(
        8, "big")


async def test_liveness_timings_are_settings() -> None:
    """The ping interval and the sweep were module constants (20 s / 5 s); they are settings
    (limits.ping_after_s, limits.liveness_sweep_s), and the hub's own sweep loop uses them."""
    handle = await start_hub(test_settings(limits={"ping_after_s": 0.4,
                                                   "liveness_sweep_s": 0.1}))
    try:
        _, room_id = await handle.create_room(invite=("ada",))
        ada, _ = await joined(handle, room_id, "ada")
        assert await ada.frame() == (OP_PING, b""), "a silent client is pinged"
        assert await ada.eof(), "a client that does not answer the ping is dropped"
    finally:
        for ws in RawWs.opened:
            ws.writer.close()
        RawWs.opened.clear()
        await handle.aclose()


# ---------------------------------------------------------------------------- Autobahn cases
# Regression tests for what the Autobahn|Testsuite (make conformance) found; each is named
# after the suite's cases.


class RecordingTransport(asyncio.Transport):
    """A transport that keeps what the protocol writes, for tests of the protocol alone."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.eof_written = False
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.eof_written, "a write after write_eof"
        self.written += data

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def frames(self) -> list[tuple[int, bytes]]:
        """The server frames written so far: (opcode, payload)."""
        data, frames, pos = bytes(self.written), [], 0
        while pos < len(data):
            n, head = data[pos + 1] & 0x7F, pos + 2
            if n == 126:
                n, head = int.from_bytes(data[head:head + 2], "big"), head + 2
            elif n == 127:
                n, head = int.from_bytes(data[head:head + 8], "big"), head + 8
            frames.append((data[pos] & 0x0F, data[head:head + n]))
            pos = head + n
        return frames


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return client_frame(OP_CLOSE, code.to_bytes(2, "big") + reason)


@pytest.mark.parametrize("bad", [
    # 3.3: RSV = 3 (refused before the rest of the read already; 3.4 below is its bug)
    client_frame(OP_TEXT, b'{"type":"ping","ts":2}', rsv=0x30),
    client_frame(0x5, b""),  # 4.1.3: reserved non-control opcode
    client_frame(0xB, b""),  # 4.2.3: reserved control opcode
], ids=["3.3-rsv", "4.1.3-opcode-5", "4.2.3-opcode-11"])
async def test_autobahn_3_3_no_pong_after_a_bad_frame_in_the_same_write(
        hub: HubHandle, bad: bytes) -> None:
    """Autobahn 3.3, 4.1.3-4.1.5 and 4.2.3-4.2.5 send a message, a bad frame and a ping. The
    message was answered and the connection failed with 1002, but the ping behind the bad
    frame was answered too, with a pong after our close frame: the rest of the buffer was still
    parsed after the connection was failed. Once failed, nothing more is read (RFC 6455 7.1.7):
    our close frame is the last frame, and then our side of TCP is shut."""
    _, room_id = await hub.create_room(invite=("ada",))
    ws, _ = await joined(hub, room_id, "ada")
    ws.send_json({"type": "ping", "ts": 1})
    assert await ws.message() == p.Pong(ts=1)
    ws.send(bad + client_frame(OP_PING, b"still there?"))
    frames = []
    while (frame := await ws.frame())[0] != -1:  # up to EOF, without sending our close
        frames.append(frame)
    assert frames == [(OP_CLOSE, frames[-1][1])], "our close is the only frame after the bad one"
    assert int.from_bytes(frames[-1][1][:2], "big") == 1002


async def test_autobahn_3_4_nothing_is_read_after_the_connection_failed() -> None:
    """Autobahn 3.4 sends its frames in separate writes: a ping that came in a later read,
    after the connection had failed, was still answered (a pong after our close 1002), and a
    message after it was still echoed. The protocol alone, fed read by read: after the bad
    frame, only our close frame goes out, then the write side is shut."""
    sock = EchoSocket()
    transport = RecordingTransport()
    sock.connection_made(transport)
    sock.data_received(client_frame(OP_TEXT, b"hello"))
    sock.data_received(client_frame(OP_TEXT, b"hello", rsv=0x30))
    sock.data_received(client_frame(OP_PING, b"ping"))
    sock.data_received(client_frame(OP_TEXT, b"again") + close_frame(1000))
    assert transport.frames() == [(OP_TEXT, b"hello"), (OP_CLOSE, (1002).to_bytes(2, "big")
                                                        + b"reserved bits set or frame not masked")]
    assert transport.eof_written and sock.close_code == 1002
    sock.connection_lost(None)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999])
async def test_autobahn_7_9_an_invalid_close_code_is_answered_with_1002(
        hub: HubHandle, code: int) -> None:
    """Autobahn 7.9.1-7.9.9: a close frame with a code no endpoint may send (0, 999, the
    reserved 1004-1006 and 1015, the unassigned 1016-2999) was answered with a clean 1000, as
    if it were a normal close. It is a protocol error: we close with 1002."""
    ws = await RawWs.connect(port_of(hub))
    ws.send(close_frame(code))
    assert await ws.close_code() == 1002
    assert await ws.eof()


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000,
                                  3999, 4000, 4999])
async def test_autobahn_7_7_a_valid_close_code_is_echoed(hub: HubHandle, code: int) -> None:
    """Autobahn 7.7.1-7.7.13 (which passed): every code a client may send is echoed, with the
    reason it came with dropped, and the connection ends."""
    ws = await RawWs.connect(port_of(hub))
    ws.send(close_frame(code, b"bye"))
    assert await ws.close_code() == code
    assert await ws.eof()


async def test_autobahn_7_5_1_a_close_reason_that_is_not_utf8_is_answered_with_1007(
        hub: HubHandle) -> None:
    """Autobahn 7.5.1: a close frame with code 1000 and a reason that is not UTF-8 was echoed
    with 1000. The reason must be UTF-8 (RFC 6455 5.5.1): we close with 1007."""
    ws = await RawWs.connect(port_of(hub))
    ws.send(close_frame(1000, "µ@ßöäüàá".encode()[:-1] + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce"))
    assert await ws.close_code() == 1007
    assert await ws.eof()


async def test_autobahn_7_3_2_a_one_byte_close_payload_is_answered_with_1002(
        hub: HubHandle) -> None:
    """Autobahn 7.3.2: a close frame whose payload is 1 byte (half a code) was answered with a
    clean 1000. A close payload is empty or at least the 2-byte code: we close with 1002."""
    ws = await RawWs.connect(port_of(hub))
    ws.send(client_frame(OP_CLOSE, b"\x03"))
    assert await ws.close_code() == 1002
    assert await ws.eof()


async def test_a_ping_after_our_close_gets_no_pong_and_the_handshake_still_ends(
        hub: HubHandle) -> None:
    """After our close frame nothing more goes out (RFC 6455 5.5.1), so a ping that arrives
    while we wait for the client's close is not answered; the client's close is still read and
    ends the connection."""
    ws = await RawWs.connect(port_of(hub))
    ws.send_json({"type": "ping", "ts": 1})  # the first frame must be join
    assert await ws.close_code() == 4400
    ws.send(client_frame(OP_PING, b"late"))
    ws.send(close_frame(4400))
    assert await ws.frame() == (-1, b""), "no pong after our close, then EOF"
