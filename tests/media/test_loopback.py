"""Pinning ICE host candidates: scoped, reference-counted, per task, undone afterwards."""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from media.loopback import is_pin_installed, pin_host_addresses


def _host_candidates(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines()
            if line.startswith("a=candidate:") and " typ host" in line]


async def test_pinned_peer_connection_gathers_a_loopback_host_candidate() -> None:
    original = aioice.ice.get_host_addresses
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio")
        with pin_host_addresses(["127.0.0.1"]):
            assert is_pin_installed()
            await pc.setLocalDescription(await pc.createOffer())
        assert _host_candidates(pc.localDescription.sdp) == ["127.0.0.1"]
    finally:
        await pc.close()
    assert aioice.ice.get_host_addresses is original
    assert not is_pin_installed()


async def test_unpinned_gathering_never_sees_loopback() -> None:
    # Why the pin exists: aioice skips 127.0.0.1 on its own.
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, True)


async def test_pins_nest_and_the_last_exit_restores_aioice() -> None:
    original = aioice.ice.get_host_addresses
    with pin_host_addresses(["127.0.0.1"]):
        with pin_host_addresses(["::1"]):
            assert aioice.ice.get_host_addresses(True, True) == ["::1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
        assert is_pin_installed()
    assert aioice.ice.get_host_addresses is original


async def test_pin_filters_by_address_family() -> None:
    with pin_host_addresses(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(False, True) == ["::1"]


async def test_a_pin_is_visible_only_to_its_own_task() -> None:
    original = aioice.ice.get_host_addresses
    entered, done = asyncio.Event(), asyncio.Event()

    async def pinned() -> None:
        with pin_host_addresses(["127.0.0.1"]):
            entered.set()
            await done.wait()

    task = asyncio.create_task(pinned())
    await entered.wait()
    try:
        # Another task (this one) still gets aioice's own discovery through the dispatcher.
        assert is_pin_installed()
        assert aioice.ice.get_host_addresses(True, True) == original(True, True)
    finally:
        done.set()
        await task
    assert aioice.ice.get_host_addresses is original


async def test_none_is_a_no_op_and_garbage_is_refused() -> None:
    with pin_host_addresses(None):
        assert not is_pin_installed()
    with pytest.raises(ValueError), pin_host_addresses(["localhost"]):
        pass
    with pytest.raises(TypeError), pin_host_addresses("127.0.0.1"):
        pass
    with pytest.raises(ValueError), pin_host_addresses([]):
        pass
    assert not is_pin_installed()
