"""Against a real coturn: our credentials, rotation, expiry, the probe and aiortc relay gathering.

Every socket here talks to 127.0.0.1 only: the peers use ``iceTransportPolicy="relay"`` (no host
candidates) and coturn relays from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from tests.support.turnserver import TurnServerHandle, free_port
from turn.credentials import issue_credential
from turn.ice import IceConfig, ice_servers_for
from turn.probe import probe_turn

from .conftest import FIRST_SECRET, ROTATED_OUT_SECRET, SECOND_SECRET


def turn_entry(
    handle: TurnServerHandle,
    user: str,
    secrets: tuple[str, ...],
    now: float | None = None,
    transport: str = "udp",
) -> dict[str, Any]:
    """The TURN entry the hub would hand ``user``, signed with ``secrets[0]``."""
    config = IceConfig(turn_urls=(handle.url(transport),), secrets=secrets, ttl_s=600)
    (entry,) = ice_servers_for(user, config, now=now)
    return entry


def expired_now() -> float:
    """A ``now`` that makes a 600 s credential expired an hour ago."""
    return time.time() - 600 - 3600


async def relay_candidates(entry: dict[str, Any]) -> list[str]:
    """Gather with aiortc, relay-only, and return the SDP's relay candidate lines."""
    pc = RTCPeerConnection(
        RTCConfiguration(
            iceServers=[RTCIceServer(**entry)], iceTransportPolicy=RTCIceTransportPolicy.RELAY
        )
    )
    try:
        pc.createDataChannel("gather")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    return [
        line for line in sdp.splitlines() if line.startswith("a=candidate") and "typ relay" in line
    ]


# ------------------------------------------------------------------------------- probe


async def test_probe_ok_with_first_secret(turnserver: TurnServerHandle) -> None:
    entry = turn_entry(turnserver, "alice", (FIRST_SECRET, SECOND_SECRET))
    result = await probe_turn(entry["urls"][0], entry["username"], entry["credential"], timeout=5)
    assert result.ok and result.code == "ok", result
    assert result.relayed_address is not None
    host, port = result.relayed_address
    assert host == "127.0.0.1"
    assert turnserver.relay_ports[0] <= port <= turnserver.relay_ports[1]
    await turnserver.wait_for_log(lambda line: bool(turnserver.allocation_lines(entry["username"])))


async def test_probe_ok_with_second_secret(turnserver: TurnServerHandle) -> None:
    """Rotation: the hub already signs with the new secret that coturn lists second."""
    entry = turn_entry(turnserver, "bob", (SECOND_SECRET,))
    result = await probe_turn(entry["urls"][0], entry["username"], entry["credential"])
    assert result.ok, result


async def test_probe_ok_over_tcp(turnserver: TurnServerHandle) -> None:
    entry = turn_entry(turnserver, "carol", (FIRST_SECRET,), transport="tcp")
    assert entry["urls"][0].endswith("?transport=tcp")
    result = await probe_turn(entry["urls"][0], entry["username"], entry["credential"])
    assert result.ok, result


async def test_probe_expired_credential_is_auth_failure(turnserver: TurnServerHandle) -> None:
    entry = turn_entry(turnserver, "dave", (FIRST_SECRET,), now=expired_now())
    result = await probe_turn(entry["urls"][0], entry["username"], entry["credential"], timeout=5)
    assert not result.ok
    assert result.code == "turn-auth-failed"  # coturn answered: no timeout
    assert "expired" in result.message
    assert entry["credential"] not in result.message
    # The 401 outside the username: an expiry like 1796540148 holds "401" itself, and once
    # matched coturn's "Cannot find credentials" line instead of the 401 reply.
    line = await turnserver.wait_for_log(
        lambda line: entry["username"] in line and "401" in line.replace(entry["username"], ""))
    assert "Unauthorized" in line


async def test_probe_rotated_out_secret_is_auth_failure(turnserver: TurnServerHandle) -> None:
    entry = turn_entry(turnserver, "erin", (ROTATED_OUT_SECRET,))
    result = await probe_turn(entry["urls"][0], entry["username"], entry["credential"], timeout=5)
    assert result.code == "turn-auth-failed", result
    assert "does not know the secret" in result.message
    await turnserver.wait_for_log(
        lambda line: bool(turnserver.auth_failure_lines(entry["username"]))
    )
    assert not turnserver.allocation_lines(entry["username"])


async def test_probe_unreachable_within_timeout() -> None:
    cred = issue_credential("frank", [FIRST_SECRET], ttl_s=600)
    url = f"turn:127.0.0.1:{free_port()}?transport=udp"  # nobody listens there
    result = await probe_turn(url, cred.username, cred.credential, timeout=0.5)
    assert result.code == "turn-unreachable", result
    assert "within 0.5 s" in result.message  # the probe's own deadline ended it


async def test_probe_unreachable_tcp_refused() -> None:
    cred = issue_credential("frank", [FIRST_SECRET], ttl_s=600)
    url = f"turn:127.0.0.1:{free_port()}?transport=tcp"
    result = await probe_turn(url, cred.username, cred.credential, timeout=2)
    assert result.code == "turn-unreachable", result


async def test_probe_over_tls(turnserver_tls: TurnServerHandle) -> None:
    assert turnserver_tls.cert_path is not None
    context = ssl.create_default_context(cafile=str(turnserver_tls.cert_path))
    config = IceConfig(
        turn_host="127.0.0.1",
        turn_port=turnserver_tls.port,
        turns_port=turnserver_tls.tls_port,
        secrets=(FIRST_SECRET,),
    )
    (entry,) = ice_servers_for("grace", config)
    turns_url = entry["urls"][-1]
    assert turns_url == turnserver_tls.tls_url()
    result = await probe_turn(
        turns_url, entry["username"], entry["credential"], ssl_context=context
    )
    assert result.ok, result
    # Without trusting the self-signed certificate the TLS handshake fails, clearly.
    result = await probe_turn(turns_url, entry["username"], entry["credential"], timeout=3)
    assert result.code == "turn-error" and "TLS" in result.message, result


# ------------------------------------------------------------------------------- aiortc


async def test_aiortc_gathers_relay_candidate_with_first_secret(
    turnserver: TurnServerHandle,
) -> None:
    entry = turn_entry(turnserver, "alice", (FIRST_SECRET, SECOND_SECRET))
    candidates = await relay_candidates(entry)
    assert candidates, "no relay candidate gathered"
    assert all(" 127.0.0.1 " in line for line in candidates)
    assert turnserver.allocation_lines(entry["username"])


async def test_aiortc_gathers_relay_candidate_with_second_secret(
    turnserver: TurnServerHandle,
) -> None:
    entry = turn_entry(turnserver, "bob", (SECOND_SECRET, FIRST_SECRET))
    assert await relay_candidates(entry)


async def test_aiortc_expired_credential_gathers_nothing(turnserver: TurnServerHandle) -> None:
    """aiortc fails silently: no candidate, no error. Only coturn's log shows the 401."""
    entry = turn_entry(turnserver, "dave", (FIRST_SECRET,), now=expired_now())
    assert await relay_candidates(entry) == []
    await turnserver.wait_for_log(
        lambda line: bool(turnserver.auth_failure_lines(entry["username"]))
    )


async def test_aiortc_rotated_out_secret_gathers_nothing(turnserver: TurnServerHandle) -> None:
    entry = turn_entry(turnserver, "erin", (ROTATED_OUT_SECRET,))
    assert await relay_candidates(entry) == []
    await turnserver.wait_for_log(
        lambda line: bool(turnserver.auth_failure_lines(entry["username"]))
    )
    assert not turnserver.allocation_lines(entry["username"])


async def test_two_aiortc_peers_connect_through_the_relay(turnserver: TurnServerHandle) -> None:
    """End to end: relay-only peers exchange data via coturn with our credentials."""

    def make_pc(user: str) -> RTCPeerConnection:
        entry = turn_entry(turnserver, user, (FIRST_SECRET, SECOND_SECRET))
        return RTCPeerConnection(
            RTCConfiguration(
                iceServers=[RTCIceServer(**entry)], iceTransportPolicy=RTCIceTransportPolicy.RELAY
            )
        )

    caller, callee = make_pc("alice"), make_pc("bob")
    received: asyncio.Queue[str] = asyncio.Queue(maxsize=4)
    try:

        @callee.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            @channel.on("message")
            def on_message(message: str) -> None:
                received.put_nowait(message)

        channel = caller.createDataChannel("chat")
        opened = asyncio.Event()
        channel.on("open", opened.set)

        await caller.setLocalDescription(await caller.createOffer())
        offer = caller.localDescription
        await callee.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type=offer.type))
        await callee.setLocalDescription(await callee.createAnswer())
        answer = callee.localDescription
        await caller.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type=answer.type))

        async with asyncio.timeout(20):
            await opened.wait()
            channel.send("hello via coturn")
            assert await received.get() == "hello via coturn"
    finally:
        await caller.close()
        await callee.close()


# ------------------------------------------------------------------------------- peer policy


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.errors: asyncio.Queue[Exception] = asyncio.Queue(maxsize=8)
        self.closed = asyncio.get_running_loop().create_future()

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def test_private_peer_is_denied(turnserver: TurnServerHandle) -> None:
    """The rendered denied-peer-ip lines are enforced: no relaying into 10.0.0.0/8.

    coturn refuses the channel binding itself (403), so no packet is sent towards 10.0.0.1.
    """
    entry = turn_entry(turnserver, "mallory", (FIRST_SECRET,))
    transport, receiver = await create_turn_endpoint(
        _Receiver, ("127.0.0.1", turnserver.port), entry["username"], entry["credential"]
    )
    try:
        transport.sendto(b"ping", ("10.0.0.1", 9))
        async with asyncio.timeout(5):
            error = await receiver.errors.get()
        assert isinstance(error, stun.TransactionFailed)
        assert error.response.attributes["ERROR-CODE"][0] == 403
    finally:
        transport.close()
        async with asyncio.timeout(5):
            await receiver.closed
