"""TURN end to end: coturn started with our rendered config, credentials from our API, two
relay-only aiortc peers joined through the hub; refused credentials become clear errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from media import OpusSpec, PeerClient, PeerClientConfig, TurnAuthError
from signaling import protocol
from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.turnserver import TurnServerHandle, run_turnserver
from turn.credentials import issue_credential

pytestmark = pytest.mark.slow

OLD, NEW, RETIRED = ("old-secret-0123456789abcdef", "new-secret-0123456789abcdef",
                     "retired-secret-0123456789abcdef")


@asynccontextmanager
async def deployment(hub_secrets: tuple[str, ...]) -> AsyncIterator[tuple[HubHandle,
                                                                           TurnServerHandle]]:
    """coturn accepts NEW and OLD (rotation in progress); the hub signs with hub_secrets[0]."""
    async with run_turnserver([NEW, OLD]) as turn:
        hub = await start_hub(test_settings(ice={
            "turn_host": "127.0.0.1", "turn_port": turn.port, "turn_secrets": hub_secrets}))
        try:
            yield hub, turn
        finally:
            await hub.aclose()


async def api_ice_servers(hub: HubHandle, user: str) -> tuple[protocol.IceServer, ...]:
    status, body = await hub.call("webrtc/index/getIceServers", {}, user=user)
    assert status == 200, body
    return tuple(protocol.IceServer(**s) for s in body["value"]["iceServers"])


def relay_config(hub: HubHandle, token: str, ice: tuple[protocol.IceServer, ...]
                 ) -> PeerClientConfig:
    return PeerClientConfig(ws_url=hub.ws_url, token=token, ice_servers=ice,
                            ice_transport_policy="relay", audio=OpusSpec(tone_duration_s=1.0),
                            pin_host_addresses=("127.0.0.1",), ice_timeout_s=10.0)


@asynccontextmanager
async def peers(*configs: PeerClientConfig) -> AsyncIterator[list[PeerClient]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(PeerClient(c)) for c in configs]


async def room(hub: HubHandle) -> tuple[str, str]:
    _, room_id = await hub.create_room(host="alice", invite=("bob",))
    return hub.mint_token(room_id, "alice", "host"), hub.mint_token(room_id, "bob")


@pytest.mark.parametrize("signing", [NEW, OLD], ids=["first-secret", "second-secret"])
async def test_relay_only_peers_exchange_audio_through_coturn(signing: str) -> None:
    async with deployment((signing,)) as (hub, turn):
        alice_token, bob_token = await room(hub)
        ice_a, ice_b = await api_ice_servers(hub, "alice"), await api_ice_servers(hub, "bob")
        assert all(s.username for s in ice_a) and str(turn.port) in str(ice_a[0].urls)
        async with peers(relay_config(hub, alice_token, ice_a),
                         relay_config(hub, bob_token, ice_b)) as (alice, bob):
            await asyncio.gather(alice.wait_connected(1, timeout=15),
                                 bob.wait_connected(1, timeout=15))
            await asyncio.gather(alice.wait_audio_from([bob.peer_id], timeout=10),
                                 bob.wait_audio_from([alice.peer_id], timeout=10))
            for me, other in ((alice, bob), (bob, alice)):
                pc = me.remote_peers[other.peer_id].pc  # type: ignore[index]
                for description in (pc.localDescription, pc.remoteDescription):
                    candidates = [line for line in description.sdp.splitlines()
                                  if line.startswith("a=candidate")]
                    assert candidates and all(" typ relay" in c for c in candidates)
        # coturn allocated relays for both users' credentials.
        assert turn.allocation_lines(ice_a[0].username)
        assert turn.allocation_lines(ice_b[0].username)


async def relay_refused(hub: HubHandle, ice: tuple[protocol.IceServer, ...]) -> TurnAuthError:
    alice_token, bob_token = await room(hub)
    async with peers(PeerClientConfig(ws_url=hub.ws_url, token=alice_token,
                                      audio=OpusSpec(tone_duration_s=1.0),
                                      pin_host_addresses=("127.0.0.1",)),
                     relay_config(hub, bob_token, ice)) as (_, bob):
        # A clear error, not a hang: TurnAuthError, not wait_connected's MediaTimeoutError.
        with pytest.raises(TurnAuthError) as caught:
            await bob.wait_connected(1, timeout=10)
    assert caught.value.code == "turn-auth-failed"
    return caught.value


async def test_expired_credential_is_refused_and_reported() -> None:
    async with deployment((NEW,)) as (hub, turn):
        cred = issue_credential("bob", (NEW,), ttl_s=60, now=time.time() - 3600)
        ice = (protocol.IceServer(urls=[turn.url()], username=cred.username,
                                  credential=cred.credential),)
        await relay_refused(hub, ice)
        await turn.wait_for_log(lambda line: "401" in line or "expired" in line.lower())


async def test_rotated_out_secret_is_refused_and_reported() -> None:
    async with deployment((RETIRED,)) as (hub, turn):
        await relay_refused(hub, await api_ice_servers(hub, "bob"))
        assert turn.auth_failure_lines()


def test_secrets_never_reach_the_hub_log(caplog: Any) -> None:
    settings = test_settings(ice={"turn_host": "127.0.0.1", "turn_secrets": (NEW, OLD)})
    text = repr(settings) + repr(settings.ice) + repr(settings.ice_config())
    assert NEW not in text and OLD not in text
