"""TurnServerSupervisor with the real turnserver: start, crash and restart, clean stop."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import stat
import sys
from pathlib import Path

import pytest

from tests.support.turnserver import free_port, free_port_range, require_turnserver
from tests.waiting import wait_until
from turn.coturn import TurnServerConfig
from turn.credentials import issue_credential
from turn.errors import TurnServerNotFound
from turn.probe import probe_turn
from turn.supervisor import TurnServerSupervisor

from .conftest import FIRST_SECRET, SECOND_SECRET


def loopback_config() -> TurnServerConfig:
    low, high = free_port_range(10)
    return TurnServerConfig(
        realm="supervised.test",
        secrets=(FIRST_SECRET, SECOND_SECRET),
        listen_ips=("127.0.0.1",),
        port=free_port(),
        relay_ips=("127.0.0.1",),
        min_port=low,
        max_port=high,
        allow_loopback_peers=True,
    )


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def probe(config: TurnServerConfig) -> str:
    cred = issue_credential("sup", config.secrets, ttl_s=60)
    url = f"turn:127.0.0.1:{config.port}?transport=udp"
    return (await probe_turn(url, cred.username, cred.credential, timeout=3)).code


async def test_restarts_after_kill_and_stops_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    require_turnserver()
    caplog.set_level(logging.INFO, logger="turn.supervisor")
    config = loopback_config()
    supervisor = TurnServerSupervisor(config, min_backoff_s=0.1, max_backoff_s=1.0)
    async with supervisor:
        pid = await supervisor.wait_ready(timeout=10)
        path = supervisor.config_path
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert FIRST_SECRET in path.read_text()
        assert await probe(config) == "ok"

        os.kill(pid, signal.SIGKILL)
        # The dying process may still accept for a moment: wait for the restart first.
        await wait_until(lambda: supervisor.starts >= 2, timeout=10, interval=0.01,
                         what="the supervisor restarting turnserver")
        new_pid = await supervisor.wait_ready(timeout=10)
        assert new_pid != pid
        assert supervisor.starts == 2
        assert await probe(config) == "ok"
    assert supervisor.pid is None
    assert process_gone(new_pid)
    assert not path.exists() and not path.parent.exists()
    await supervisor.aclose()  # idempotent

    messages = [
        record.getMessage() for record in caplog.records if record.name == "turn.supervisor"
    ]
    assert any(
        f"turnserver[{pid}]:" in m and "Relay address to use: 127.0.0.1" in m for m in messages
    )
    assert any("exited with signal SIGKILL" in m for m in messages)
    assert any(f"turnserver (pid {new_pid}) stopped" in m for m in messages)
    for secret in config.secrets:
        assert secret not in caplog.text
        assert secret not in repr(supervisor)


async def test_back_off_grows_and_is_capped(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A child that dies at once is restarted with doubling delays, capped at max_backoff_s."""
    caplog.set_level(logging.INFO, logger="turn.supervisor")
    crashing = tmp_path / "crashing-turnserver"
    crashing.write_text("#!/bin/sh\nexit 3\n")
    crashing.chmod(0o755)
    supervisor = TurnServerSupervisor(
        loopback_config(), binary=str(crashing), min_backoff_s=0.02, max_backoff_s=0.08
    )
    async with supervisor:
        await wait_until(lambda: supervisor.starts >= 6, timeout=10, interval=0.01,
                         what="six starts of the crashing child")
    delays = [
        float(match.group(1))
        for record in caplog.records
        if (
            match := re.search(
                r"exited with status 3 .* restarting in ([0-9.]+) s", record.getMessage()
            )
        )
    ]
    assert delays[:5] == [0.02, 0.04, 0.08, 0.08, 0.08]


async def test_sigterm_ignored_means_sigkill(tmp_path: Path) -> None:
    stubborn = tmp_path / "stubborn-turnserver"
    stubborn.write_text(
        f"#!{sys.executable}\n"
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "time.sleep(60)\n"
    )
    stubborn.chmod(0o755)
    ready = asyncio.Event()
    supervisor = TurnServerSupervisor(
        loopback_config(),
        binary=str(stubborn),
        stop_timeout_s=0.3,
        on_log_line=lambda line: ready.set() if "ignoring" in line else None,
    )
    await supervisor.start()
    async with asyncio.timeout(10):
        await ready.wait()
    pid = supervisor.pid
    assert pid is not None
    async with asyncio.timeout(5):
        await supervisor.aclose()
    assert process_gone(pid)


async def test_missing_binary_is_a_clear_error() -> None:
    supervisor = TurnServerSupervisor(loopback_config(), binary="no-such-turnserver-binary")
    with pytest.raises(TurnServerNotFound, match="install coturn"):
        await supervisor.start()
    await supervisor.aclose()


async def test_aclose_without_start() -> None:
    supervisor = TurnServerSupervisor(loopback_config())
    await supervisor.aclose()
    await supervisor.aclose()
