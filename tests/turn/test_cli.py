"""``connvo-rtc turn``: option merging, --print-config, bad config exit 2, a real supervised run."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.turnserver import free_port, free_port_range, require_turnserver
from tests.waiting import wait_until
from turn.cli import ENV_SECRET, add_parser, run
from turn.credentials import issue_credential
from turn.probe import probe_turn

REPO = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="connvo-rtc")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["turn", *argv])


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    args = parse(*argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_SECRET, raising=False)


def test_subcommand_dispatches_to_run() -> None:
    assert parse("--print-config").func is run


def test_print_config_with_repeated_and_comma_separated_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "--print-config", "--secret", "s1,s2", "--secret", "s3")
    assert code == 0, err
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("static-auth-secret=")] == [
        "static-auth-secret=s1",
        "static-auth-secret=s2",
        "static-auth-secret=s3",
    ]
    assert "listening-ip=127.0.0.1" in lines
    assert "listening-port=3478" in lines
    assert "realm=connvo-rtc" in lines
    assert "allow-loopback-peers" not in lines


def test_redacted_print(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--print-config", "--redact", "--secret", "hidden-value")
    assert code == 0
    assert "hidden-value" not in out and "static-auth-secret=***" in out


def test_env_secret_and_flag_precedence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SECRET, "env-a, env-b")
    _, out, _ = run_cli(capsys, "--print-config")
    assert "static-auth-secret=env-a\nstatic-auth-secret=env-b\n" in out
    _, out, _ = run_cli(capsys, "--print-config", "--secret", "flag")
    assert "static-auth-secret=flag" in out and "env-a" not in out


def test_config_file_then_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "connvo-rtc.toml"
    config.write_text(
        "[server]\nport = 8080\n\n"  # other tables are the hub's business
        "[turn]\n"
        'realm = "turn.example.com"\n'
        'secrets = ["file-1", "file-2"]\n'
        'listen_ips = ["10.0.0.2"]\n'
        "port = 3479\n"
        'relay_ips = "10.0.0.2"\n'
        "min_port = 50000\n"
        "max_port = 50100\n"
        "allow_private_peers = true\n"
        "user_quota = 12\n"
    )
    code, out, err = run_cli(capsys, "--config", str(config), "--print-config", "--port", "3480")
    assert code == 0, err
    lines = out.splitlines()
    for expected in (
        "realm=turn.example.com",
        "static-auth-secret=file-1",
        "static-auth-secret=file-2",
        "listening-ip=10.0.0.2",
        "listening-port=3480",
        "relay-ip=10.0.0.2",
        "min-port=50000",
        "max-port=50100",
        "user-quota=12",
    ):
        assert expected in lines
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" not in lines


def test_allow_loopback_flag(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "--print-config", "--secret", "x", "--allow-loopback-peers")
    assert "allow-loopback-peers" in out.splitlines()
    assert "denied-peer-ip=127.0.0.0-127.255.255.255" not in out


@pytest.mark.parametrize(
    ("toml", "argv", "message"),
    [
        (None, (), "no TURN secret"),
        (None, ("--secret", "x", "--listen-ip", "localhost"), "listen_ips"),
        (None, ("--secret", "x", "--min-port", "60000", "--max-port", "50000"), "min_port"),
        (None, ("--secret", "x", "--tls-port", "5349"), "cert"),
        (None, ("--secret", "x", "--cert", "/c.pem"), "together"),
        ("[turn]\nrelam = 'typo'\n", ("--secret", "x"), "unknown key turn.relam"),
        ("[turn]\nport = 'abc'\n", ("--secret", "x"), "turn.port must be an integer"),
        ("[turn]\nsecrets = 42\n", (), "turn.secrets must be a list"),
        ("[turn\n", ("--secret", "x"), "invalid TOML"),
    ],
)
def test_bad_config_exits_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    toml: str | None,
    argv: tuple[str, ...],
    message: str,
) -> None:
    args = list(argv)
    if toml is not None:
        path = tmp_path / "bad.toml"
        path.write_text(toml)
        args += ["--config", str(path)]
    code, out, err = run_cli(capsys, "--print-config", *args)
    assert code == 2
    assert out == ""
    assert err.startswith("connvo-rtc turn: error:") and message in err
    assert len(err.strip().splitlines()) == 1


def test_missing_config_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "--config", str(tmp_path / "nope.toml"), "--secret", "x")
    assert code == 2 and "cannot read config file" in err


def test_secret_value_never_echoed_in_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--print-config", "--secret", "bad secret with spaces")
    assert code == 2
    assert "bad secret" not in err and "secrets[0]" in err


async def test_runs_turnserver_until_sigterm() -> None:
    """`turn` runs a supervised turnserver, serves allocations, and exits 0 on SIGTERM."""
    require_turnserver()
    port = free_port()
    low, high = free_port_range(10)
    env = {**os.environ, ENV_SECRET: "cli-secret-1,cli-secret-2", "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "turn.cli",
        "turn",
        "--port",
        str(port),
        "--relay-ip",
        "127.0.0.1",
        "--min-port",
        str(low),
        "--max-port",
        str(high),
        "--allow-loopback-peers",
        env=env,
        cwd=str(REPO),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    # Drain stderr all along so the child never blocks on a full pipe.
    stderr_task = asyncio.create_task(proc.stderr.read())
    try:
        cred = issue_credential("cli", ["cli-secret-2"], ttl_s=60)
        url = f"turn:127.0.0.1:{port}?transport=udp"

        async def relay_allocated() -> bool:
            assert proc.returncode is None, "turn CLI exited early"
            return (await probe_turn(url, cred.username, cred.credential, timeout=0.3)).ok

        await wait_until(relay_allocated, timeout=15, interval=0.05,
                         what="the CLI's turnserver allocating a relay")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            stderr = (await stderr_task).decode()
            assert await proc.wait() == 0, stderr
        assert "stopping turnserver" in stderr
        assert "cli-secret" not in stderr
        result = await probe_turn(url, cred.username, cred.credential, timeout=0.3)
        assert result.code == "turn-unreachable"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await stderr_task
