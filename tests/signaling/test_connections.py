"""Who may hold a connection to the hub (issue 13, items 2 and 11): every TCP connection counted
from accept, a deadline for the request head, caps in total and per address, refusals counted
and logged at a bounded rate, and the websocket ``Origin`` allow-list. Real sockets against a
real hub; the "other" client address is 127.0.0.2 (all of 127/8 is loopback on Linux)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from prometheus_client import Counter

from signaling import protocol as p
from signaling.app import CONNECTIONS_KEY
from signaling.connections import Connections, Refusal, RefusalLog, address_key
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.wsclient import WsClient
from tests.waiting import wait_until

OTHER = "127.0.0.2"  # a second client address on loopback


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def refused(text: str, reason: Refusal) -> float:
    return metric(text, f'connvo_refused_connections_total{{reason="{reason}"}}')


async def scrape(session: aiohttp.ClientSession, hub: HubHandle) -> str:
    async with session.get(hub.base_url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def port_of(hub: HubHandle) -> int:
    return int(hub.base_url.rsplit(":", 1)[1])


class Raw:
    """A TCP connection to the hub that sends exactly what the test says."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, hub: HubHandle, source: str = "127.0.0.1") -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(hub),
                                                       local_addr=(source, 0))
        return cls(reader, writer)

    async def answer(self, timeout: float = 5.0) -> bytes:
        """Everything the hub sends until it closes the connection."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def raws() -> AsyncIterator[list[Raw]]:
    opened: list[Raw] = []
    try:
        yield opened
    finally:
        for raw in opened:
            raw.close()


def session_from(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


def upgrade(port: int, origin: str | None = None, path: str = "/ws") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if origin is not None:
        head += f"Origin: {origin}\r\n"
    return (head + "\r\n").encode()


# ------------------------------------------------------------------ the request-head deadline


@pytest.mark.parametrize("path", ["/ws", "/healthz"])
async def test_silent_and_dribbling_connections_are_cut_at_the_head_deadline(path: str) -> None:
    """TCP connections that never sent a request head, or sent `GET /ws…` / `GET /healthz…`
    one byte at a time, stayed open for ever and were counted nowhere: 2,000 of them showed
    `connvo_open_websockets 0`, and at the file-descriptor limit they locked out `/healthz`
    and every real user. Every connection is counted from accept now
    (`connvo_open_connections`), and one that has not sent its whole first request head within
    `limits.request_head_timeout_s` is closed (408 when it sent part of one), however steadily
    it dribbles; each such cut is a `head-timeout` refusal in the metrics."""
    hub = await start_hub(test_settings(limits={"request_head_timeout_s": 0.5}))
    connections = hub.app[CONNECTIONS_KEY]
    head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {'a' * 300}\r\n\r\n").encode()
    sent = 0
    stop = asyncio.Event()

    async def dribble(raw: Raw) -> None:  # one byte every 20 ms: ~7 s for the whole head
        nonlocal sent
        for byte in head:
            if stop.is_set():
                return
            raw.writer.write(bytes([byte]))
            sent += 1
            await asyncio.sleep(0.02)

    try:
        async with raws() as opened, aiohttp.ClientSession() as session:
            silent = await Raw.open(hub)
            dribbler = await Raw.open(hub)
            opened += [silent, dribbler]
            await wait_until(lambda: connections.open == 2, what="both connections counted")
            text = await scrape(session, hub)  # its own connection is the third
            assert metric(text, "connvo_open_connections") == 3
            assert metric(text, "connvo_open_websockets") == 0
            dribbling = asyncio.create_task(dribble(dribbler))
            try:
                assert await silent.answer() == b"", "a silent connection is just closed"
                answer = await dribbler.answer()
            finally:
                stop.set()
                await dribbling
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert sent < len(head), "cut before its head was complete"
            await wait_until(lambda: connections.open == 1, what="the cut connections uncounted")
            text = await scrape(session, hub)
            assert metric(text, "connvo_open_connections") == 1  # the kept-alive scrape
            assert refused(text, Refusal.HEAD_TIMEOUT) == 2
            async with session.get(hub.base_url + "/healthz") as resp:
                assert resp.status == 200
    finally:
        await hub.aclose()


async def test_a_head_in_pieces_within_the_deadline_is_served_and_counted_until_closed() -> None:
    """The deadline is for the whole head, not per read: a head in pieces that completes in
    time is served. A connection is counted while a websocket or aiohttp holds it, and its
    place is given back when it ends."""
    hub = await start_hub(test_settings(limits={"request_head_timeout_s": 5}))
    connections = hub.app[CONNECTIONS_KEY]
    try:
        async with raws() as opened:
            opened.append(raw := await Raw.open(hub))
            head = upgrade(port_of(hub))
            for i in range(0, len(head), 16):
                raw.writer.write(head[i:i + 16])
                await raw.writer.drain()
                await asyncio.sleep(0.01)
            assert (await raw.reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
            client = await WsClient.connect(hub.ws_url)
            try:
                assert connections.open == 2 and connections.pending == 0
                async with aiohttp.ClientSession() as session:
                    async with session.get(hub.base_url + "/healthz") as resp:
                        assert resp.status == 200
                    assert connections.open == 3  # kept alive by aiohttp: still counted
                await wait_until(lambda: connections.open == 2, what="the HTTP one uncounted")
            finally:
                await client.aclose()
        await wait_until(lambda: connections.open == 0, what="both websockets uncounted")
    finally:
        await hub.aclose()


async def test_connections_waiting_for_their_head_are_closed_at_shutdown() -> None:
    """Shutdown stops listening and closes the websockets (1001) and aiohttp's connections; a
    connection still waiting for its request head has nothing to finish and is closed too,
    instead of outliving the server until its deadline."""
    hub = await start_hub(test_settings(limits={"request_head_timeout_s": 60}))
    connections = hub.app[CONNECTIONS_KEY]
    async with raws() as opened:
        opened.append(silent := await Raw.open(hub))
        await wait_until(lambda: connections.pending == 1, what="the silent one counted")
        await hub.aclose()
        assert await silent.answer() == b""
        assert connections.open == 0


async def test_a_request_head_over_the_limit_is_431() -> None:
    """An endless head was buffered without bound; past 32 KiB it is answered 431."""
    hub = await start_hub(test_settings())
    try:
        async with raws() as opened:
            opened.append(raw := await Raw.open(hub))
            raw.writer.write(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * (40 * 1024))
            assert (await raw.answer()).startswith(b"HTTP/1.1 431 ")
        session = await hub.session()
        text = await scrape(session, hub)
        assert refused(text, Refusal.HEAD_TOO_LARGE) == 1
    finally:
        await hub.aclose()


# ------------------------------------------------------------------ caps


async def test_one_address_over_its_cap_is_refused_while_others_are_served(
        caplog: pytest.LogCaptureFixture) -> None:
    """One address could hold every websocket slot (`max_connections`) and re-open sockets,
    so real users got `server-full`. An address holds at most
    `limits.max_connections_per_address` connections now; more are answered 429 at accept,
    while everyone else, `/healthz` included, is served. The refusals are counted
    (`per-address`) and logged once per reason per 10 s with the count, not once each."""
    caplog.set_level(logging.WARNING, logger="signaling.connections")
    hub = await start_hub(test_settings(limits={
        "max_connections_per_address": 3, "per_address_exempt": [],
        "request_head_timeout_s": 30}))
    connections = hub.app[CONNECTIONS_KEY]
    try:
        async with raws() as attacker, session_from(OTHER) as user:
            for _ in range(3):
                attacker.append(await Raw.open(hub))
            await wait_until(lambda: connections.held_by("127.0.0.1") == 3,
                             what="the attacker's three connections counted")
            for _ in range(5):
                extra = await Raw.open(hub)
                attacker.append(extra)
                assert (await extra.answer()).startswith(b"HTTP/1.1 429 ")
            async with user.get(hub.base_url + "/healthz") as resp:
                assert resp.status == 200
            async with session_from(OTHER) as other:  # and so are its websockets
                ws = await other.ws_connect(hub.ws_url)
                await ws.close()
            text = await scrape(user, hub)
            assert refused(text, Refusal.PER_ADDRESS) == 5
            assert metric(text, "connvo_open_connections") == 4  # 3 attackers + this scrape
            lines = [r.getMessage() for r in caplog.records if "per-address" in r.getMessage()]
            assert len(lines) == 1, lines  # the first at once; the other five wait their turn
            # A place given back can be taken again.
            attacker.pop(0).close()
            await wait_until(lambda: connections.held_by("127.0.0.1") == 2,
                             what="the closed connection uncounted")
            attacker.append(await Raw.open(hub))
            await wait_until(lambda: connections.held_by("127.0.0.1") == 3,
                             what="a new connection in the freed place")
    finally:
        await hub.aclose()


async def test_at_the_total_cap_silent_connections_make_room_then_new_ones_get_503() -> None:
    """With the worker's connections all taken by sockets that never send a request head, a
    real client could not reach `/healthz`. At `max_connections + connection_headroom` the
    oldest connection still waiting for its head is cut for a new one (`evicted`): the
    flood loses its own sockets first, and a real client, whose head comes within a round
    trip, gets in. Only when every connection is being served is a new one refused (503,
    `server-full`)."""
    hub = await start_hub(test_settings(limits={
        "max_connections": 1, "connection_headroom": 2, "request_head_timeout_s": 30}))
    connections = hub.app[CONNECTIONS_KEY]
    try:
        async with raws() as silent, aiohttp.ClientSession() as a, \
                aiohttp.ClientSession() as b, aiohttp.ClientSession() as c:
            for _ in range(3):
                silent.append(await Raw.open(hub))
            await wait_until(lambda: connections.pending == 3, what="three silent connections")
            for session, oldest in zip((a, b, c), silent, strict=True):
                async with session.get(hub.base_url + "/healthz") as resp:
                    assert resp.status == 200
                assert await oldest.answer() == b"", "the oldest silent one was cut"
            assert connections.open == 3 and connections.pending == 0
            late = await Raw.open(hub)
            silent.append(late)
            assert (await late.answer()).startswith(b"HTTP/1.1 503 ")
            text = await scrape(a, hub)  # over a's kept-alive connection
            assert refused(text, Refusal.EVICTED) == 3
            assert refused(text, Refusal.SERVER_FULL) == 1
            assert metric(text, "connvo_open_connections") == 3
    finally:
        await hub.aclose()


async def test_websockets_over_max_connections_are_counted_as_refusals() -> None:
    """The websocket cap (`server-full`, 1013) logged a warning per refused socket; it is a
    `websockets-full` refusal now, counted and logged at a bounded rate like the others."""
    hub = await start_hub(test_settings(limits={"max_connections": 1}))
    try:
        first = await WsClient.connect(hub.ws_url)
        second = await WsClient.connect(hub.ws_url)
        assert (await second.expect(p.Error)).code == "server-full"
        await second.aclose()
        await first.aclose()
        text = await scrape(await hub.session(), hub)
        assert refused(text, Refusal.WEBSOCKETS_FULL) == 1
    finally:
        await hub.aclose()


async def test_refusals_are_logged_at_most_once_per_reason_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    """Under attack the hub wrote one log line per refused connection. A reason's first
    refusal is logged at once, the rest of the interval's in one line with their count."""
    caplog.set_level(logging.WARNING, logger="signaling.connections")
    from prometheus_client import CollectorRegistry

    counter = Counter("refused", "test", ["reason"], registry=CollectorRegistry())
    log = RefusalLog(counter, every_s=0.2)
    for i in range(100):
        log.refuse(Refusal.PER_ADDRESS, f"192.0.2.{i}", "over the cap")
    log.refuse(Refusal.HEAD_TIMEOUT, "192.0.2.1", "slow")
    await wait_until(lambda: len(caplog.records) == 3, what="the interval's second line")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "refused a connection from 192.0.2.0 (per-address): over the cap"
    assert lines[1].startswith("refused a connection from 192.0.2.1 (head-timeout)")
    assert lines[2].startswith("refused 99 connections (per-address) in the last 0.2 s, "
                               "the latest from 192.0.2.99")
    assert counter.labels(reason="per-address")._value.get() == 100
    log.close()
    log.close()


def test_ipv6_clients_are_counted_by_their_64() -> None:
    """One IPv6 subscriber has a /64 (or more): a cap per single address would be none."""
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("2001:db8:1:3::5") != address_key("2001:db8:1:2::5")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") == "192.0.2.7"
    gate = Connections(cap=10, per_address=1, exempt=["10.0.0.0/8"])

    class Conn:
        def evict(self) -> None:
            raise AssertionError("no eviction below the cap")

    assert gate.admit(Conn(), "10.1.2.3") is None
    assert gate.admit(Conn(), "10.1.2.3") is None  # exempt: a proxy
    assert gate.admit(Conn(), "2001:db8::1") is None
    assert gate.admit(Conn(), "2001:db8::2") is Refusal.PER_ADDRESS


# ------------------------------------------------------------------ the Origin allow-list


async def test_websocket_upgrades_from_origins_not_allowed_are_403_on_both_paths() -> None:
    """Any web page could open a websocket to the hub in its visitor's browser (the hub never
    looked at `Origin`). With `server.allowed_origins` set, an upgrade from another origin is
    HTTP 403, as the first request of a connection and on a kept-alive one (a proxy's
    upstream); a listed origin, or none at all (not a browser), is let through."""
    hub = await start_hub(test_settings(server={
        "allowed_origins": ["https://app.example.com", "http://localhost:3000"]}))
    port = port_of(hub)
    try:
        for origin, status in (("https://evil.example", 403), ("null", 403),
                               ("https://app.example.com", 101),
                               ("HTTPS://APP.EXAMPLE.COM:443", 101), (None, 101),
                               ("http://localhost:3000", 101)):
            first = await Raw.open(hub)
            first.writer.write(upgrade(port, origin))
            answer = await asyncio.wait_for(first.reader.readuntil(b"\r\n\r\n"), 5)
            assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (origin, answer)
            first.close()

            kept = await Raw.open(hub)
            kept.writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                              .encode())
            head = await asyncio.wait_for(kept.reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE)
            assert length is not None
            await kept.reader.readexactly(int(length[1]))
            kept.writer.write(upgrade(port, origin))
            answer = await asyncio.wait_for(kept.reader.readuntil(b"\r\n\r\n"), 5)
            assert answer.startswith(f"HTTP/1.1 {status} ".encode()), ("kept", origin, answer)
            kept.close()
        async with aiohttp.ClientSession() as session:  # a real client library, both ways
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(hub.ws_url, origin="https://evil.example")
            assert info.value.status == 403
            ws = await session.ws_connect(hub.ws_url, origin="https://app.example.com")
            await ws.close()
    finally:
        await hub.aclose()


async def test_a_websocket_gives_its_place_back_when_it_ends_on_either_upgrade_path() -> None:
    """A websocket holds its connection's place from accept until it ends, whether the upgrade
    was the connection's first request (the socket gives the place back itself) or came on a
    kept-alive HTTP connection (aiohttp's protocol, which counted it, gives it back)."""
    from tests.signaling.test_rfc6455 import RawWs, client_frame

    hub = await start_hub()
    try:
        connections = hub.app[CONNECTIONS_KEY]
        _, room_id = await hub.create_room(invite=("ada",))
        before = connections.open  # the API session's kept-alive connection
        for after_http in (0, 1):
            sock = await RawWs.connect(port_of(hub), after_http=after_http)
            sock.send_json({"type": "join", "token": hub.mint_token(room_id, "ada")})
            assert isinstance(await sock.message(), p.Joined)
            assert connections.open == before + 1
            sock.send(client_frame(0x8, (1000).to_bytes(2, "big")))
            assert await sock.close_code() == 1000
            assert await sock.eof()
            sock.close()
            await wait_until(lambda: connections.open == before,
                             what=f"the place given back (after {after_http} HTTP requests)")
    finally:
        await hub.aclose()
