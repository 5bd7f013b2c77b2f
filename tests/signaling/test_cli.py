"""``connvo-rtc token`` and ``connvo-rtc serve``, run the way an operator runs them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from signaling import protocol as p
from signaling.cli import main
from signaling.codes import Close
from signaling.tokens import TokenService
from tests.support.wsclient import WsClient
from tests.waiting import wait_until

REPO = Path(__file__).parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
SECRET = "cli-test-secret-" + "c" * 32


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CONNVO_RTC_* variable of the machine running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNVO_RTC_")}
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str] | None = None,
                  timeout: float = 20) -> tuple[int, str, str]:
    """Run ``python -m signaling.cli ARGS``; return (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "signaling.cli", *args, cwd=REPO, env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- token


def test_token_prints_a_verifiable_jwt(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONNVO_RTC_AUTH_SECRET", raising=False)
    code = main(["token", "--secret", SECRET, "--room", "r", "--user", "u", "--role", "host",
                 "--ttl", "60"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    token = out.strip()
    assert token.count(".") == 2 and "\n" not in token
    claims = TokenService(secrets=(SECRET,)).verify_join(token)
    assert (claims.room_id, claims.user_id, claims.role) == ("r", "u", "host")
    assert 55 <= claims.expires_at - time.time() <= 61


def test_token_signs_with_the_first_of_several_secrets(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    other = "other-secret-" + "o" * 32
    monkeypatch.setenv("CONNVO_RTC_AUTH_SECRET", f"{SECRET},{other}")
    assert main(["token", "--room", "r", "--user", "u", "--name", "Uma"]) == 0
    token = capsys.readouterr().out.strip()
    claims = TokenService(secrets=(SECRET,)).verify_join(token)
    assert claims.role == "participant" and claims.name == "Uma"


def test_token_ttl_above_max_is_refused(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the service was built with ``max_ttl_s=max(--max-ttl, --ttl)``, so
    ``--max-ttl`` could never refuse anything."""
    monkeypatch.delenv("CONNVO_RTC_AUTH_SECRET", raising=False)
    code = main(["token", "--secret", SECRET, "--room", "r", "--user", "u", "--ttl", "7200",
                 "--max-ttl", "3600"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "ttl" in err and "3600" in err
    assert main(["token", "--secret", SECRET, "--room", "r", "--user", "u", "--ttl", "100000"]) == 1


async def test_token_subprocess_and_missing_secret() -> None:
    (ok_code, ok_out, ok_err), (code, out, err) = await asyncio.gather(
        run_cli("token", "--secret", SECRET, "--room", "r", "--user", "u", "--role", "host",
                "--ttl", "60"),
        run_cli("token", "--room", "r", "--user", "u"),
    )
    assert ok_code == 0, ok_err
    claims = TokenService(secrets=(SECRET,)).verify_join(ok_out.strip())
    assert (claims.room_id, claims.user_id, claims.role) == ("r", "u", "host")
    assert code == 1 and out == ""
    assert err.strip() == "connvo-rtc token: give --secret or set CONNVO_RTC_AUTH_SECRET"


# ---------------------------------------------------------------------- serve: bad configuration


async def test_serve_bad_config_exits_1_with_one_line(tmp_path: Path) -> None:
    files = {
        "unknown-key": ("[server]\nportt = 1\n", "unknown key server.portt"),
        "unknown-section": ("[sever]\nport = 1\n", "unknown section [sever]"),
        "bad-value": ('[server]\nport = "eighty"\n', "server.port"),
        "out-of-range": ("[rooms]\ncapacity = 5\n", "rooms.capacity must be 1..4"),
        "short-secret": ('[auth]\nsecrets = ["short"]\n', "auth secrets must be >= 32"),
        "invalid-toml": ("[server\n", "invalid TOML"),
        "jwks-missing": (f'[auth]\njwks = "{tmp_path / "nope.json"}"\n', "cannot load JWKS"),
    }
    runs = {}
    for name, (text, _) in files.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        runs[name] = path
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00\x9c")
    (tmp_path / "a-directory.toml").mkdir()
    runs["binary"] = tmp_path / "binary.toml"
    runs["directory"] = tmp_path / "a-directory.toml"
    runs["missing"] = tmp_path / "missing.toml"
    expect = {name: message for name, (_, message) in files.items()}
    expect.update(binary="not UTF-8", directory="cannot read config file",
                  missing="cannot read config file")

    port = str(free_port())  # never bound: every run must stop before listening
    results = await asyncio.gather(*(run_cli("serve", "--port", port, "--config", str(path))
                                     for path in runs.values()))
    for name, (code, out, err) in zip(runs, results, strict=True):
        lines = err.strip().splitlines()
        assert code == 1, (name, code, err)
        assert len(lines) == 1, (name, err)
        assert lines[0].startswith("connvo-rtc: configuration error: "), (name, err)
        assert expect[name] in lines[0], (name, err)
        assert "Traceback" not in err and out == ""


# ---------------------------------------------------------------------- serve: run and stop


@contextlib.asynccontextmanager
async def serving(port: int, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "signaling.cli", "serve", "--port", str(port), cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def wait_healthy(session: aiohttp.ClientSession, base: str,
                       proc: asyncio.subprocess.Process, timeout: float = 15) -> None:
    async def healthy() -> bool:
        assert proc.returncode is None, "the server exited while starting"
        try:
            async with session.get(base + "/healthz") as resp:
                return resp.status == 200 and (await resp.json()) == {"status": "ok"}
        except aiohttp.ClientConnectionError:
            return False

    await wait_until(healthy, timeout, interval=0.05, what="the server answering /healthz")


async def test_serve_answers_and_shuts_down_gracefully() -> None:
    """SIGTERM: a joined peer is told 1001 (going away), and the process exits 0 quickly."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(CONNVO_RTC_AUTH_SECRET=SECRET, CONNVO_RTC_SERVER_SHUTDOWN_TIMEOUT_S="3")
    tokens = TokenService(secrets=(SECRET,))
    async with serving(port, env) as proc, aiohttp.ClientSession() as session:
        await wait_healthy(session, base, proc)
        headers = {"Authorization": f"Bearer {tokens.mint_user('host', 'host@example.com')}"}
        api = base + "/api/run/meetings"
        async with session.post(f"{api}/lifecycle/createMeeting", headers=headers,
                                json={"args": {"title": "cli"}}) as resp:
            assert resp.status == 200
            meeting_id = (await resp.json())["value"]["meetingId"]
        async with session.post(f"{api}/lifecycle/startMeeting", headers=headers,
                                json={"args": {"meetingId": meeting_id}}) as resp:
            assert resp.status == 200
        async with session.post(f"{api}/webrtc/index/createJoinToken", headers=headers,
                                json={"args": {"meetingId": meeting_id}}) as resp:
            assert resp.status == 200
            join = (await resp.json())["value"]
        assert join["wsUrl"] == f"ws://127.0.0.1:{port}/ws"
        client = await WsClient.connect(join["wsUrl"])
        try:
            await client.join(join["token"])
            os.kill(proc.pid, signal.SIGTERM)
            assert await client.expect_close(timeout=5) == Close.GOING_AWAY
            assert await asyncio.wait_for(proc.wait(), 5) == 0
        finally:
            await client.aclose()
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert "shutdown" in log and "Traceback" not in log
        assert SECRET not in log and join["token"] not in log


# ---------------------------------------------------------------------- serve: hardening (issue 13)


@contextlib.asynccontextmanager
async def started(*args: str, env: dict[str, str],
                  shell: str = "") -> AsyncIterator[asyncio.subprocess.Process]:
    """``connvo-rtc serve ARGS`` with stderr piped (read it with :func:`read_until`); with
    ``shell``, that shell command runs first (``exec`` keeps the process id)."""
    command = [PYTHON, "-m", "signaling.cli", "serve", *args]
    if shell:
        command = ["/bin/sh", "-c", f'{shell} && exec "$0" "$@"', *command]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def read_until(proc: asyncio.subprocess.Process, pattern: str,
                     timeout: float = 20) -> re.Match[str]:
    """Read the process's log until a line matches ``pattern``; the match."""
    assert proc.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while line := (await proc.stderr.readline()).decode():
            seen.append(line)
            if match := re.search(pattern, line):
                return match
    raise AssertionError(f"no line matching {pattern!r}; the log:\n{''.join(seen)}")


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_serve_on_port_0_says_the_bound_port_and_its_tap_dials_it() -> None:
    """`serve --port 0` (documented as "any free port") said `http://127.0.0.1:0` at start and
    its in-process tap dialled `ws://127.0.0.1:0/ws` for ever, so no room was transcribed.
    The start-up line and the tap's URL use the port actually bound."""
    env = clean_env(CONNVO_RTC_AUTH_SECRET=SECRET)
    tokens = TokenService(secrets=(SECRET,))
    async with started("--port", "0", env=env) as proc, aiohttp.ClientSession() as session:
        port = int((await read_until(proc, r"connvo-rtc hub on http://127\.0\.0\.1:(\d+) "))[1])
        assert port != 0
        base = f"http://127.0.0.1:{port}"
        await wait_healthy(session, base, proc)
        headers = {"Authorization": f"Bearer {tokens.mint_user('host', 'host@example.com')}"}
        api = base + "/api/run/meetings"
        async with session.post(f"{api}/lifecycle/createMeeting", headers=headers, json={
                "args": {"title": "port 0", "transcriptionEnabled": True}}) as resp:
            meeting_id = (await resp.json())["value"]["meetingId"]
        async with session.post(f"{api}/lifecycle/startMeeting", headers=headers,
                                json={"args": {"meetingId": meeting_id}}) as resp:
            room_id = (await resp.json())["value"]["roomInfo"]["roomId"]
        host = await WsClient.connect(f"ws://127.0.0.1:{port}/ws")
        try:
            await host.join(tokens.mint_join(room_id, "host", "host")[0])
            joined = await host.expect(p.PeerJoined, timeout=60)
            assert joined.peer.role == "tap"
        finally:
            await host.aclose()


async def test_serve_raises_a_low_open_file_limit_to_what_its_connection_limits_need() -> None:
    """A worker whose open-file limit (often 1,024) was below its connection caps ran out of
    descriptors first, and then accepted nobody, not even `/healthz`. At start the soft limit
    is raised towards the hard one to `max_connections + connection_headroom + 512`."""
    need = 2_000 + 1_024 + 512  # below any hard limit a Linux machine ships with (4,096)
    port = free_port()
    env = clean_env(CONNVO_RTC_AUTH_SECRET=SECRET, CONNVO_RTC_LIMITS_MAX_CONNECTIONS="2000")
    async with started("--port", str(port), "--no-tap", env=env,
                       shell="ulimit -S -n 1024") as proc, aiohttp.ClientSession() as session:
        await wait_healthy(session, f"http://127.0.0.1:{port}", proc)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        soft = re.search(r"^Max open files\s+(\d+)", limits, re.MULTILINE)
        assert soft is not None and int(soft[1]) == need, limits


async def test_serve_refuses_an_open_file_limit_below_what_its_connection_limits_need() -> None:
    """Limits the process cannot honour stop the hub with one clear line (not a warning that
    scrolls by until the descriptors run out under load)."""
    hard = 2_048  # the process's own hard limit, set for it (a process may lower its own)
    env = clean_env(CONNVO_RTC_AUTH_SECRET=SECRET,
                    CONNVO_RTC_LIMITS_MAX_CONNECTIONS=str(hard))
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", f'ulimit -n {hard} && exec "$0" "$@"', PYTHON, "-m", "signaling.cli",
        "serve", "--port", str(free_port()), "--no-tap", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 20)
    code, out, err = proc.returncode, out_b.decode(), err_b.decode()
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("connvo-rtc: configuration error: limits.max_connections + "
                               "limits.connection_headroom need "), err
    assert f"hard limit {hard}" in lines[0]


async def test_an_idle_kept_alive_http_connection_is_closed_after_the_keepalive_timeout() -> None:
    """After one quick request a connection could stay idle, or dribble its next request
    head, for aiohttp's default hour, holding its place in the connection caps.
    `limits.keepalive_timeout_s` (75 s) bounds it."""
    port = free_port()
    env = clean_env(CONNVO_RTC_AUTH_SECRET=SECRET, CONNVO_RTC_LIMITS_KEEPALIVE_TIMEOUT_S="1")
    async with started("--port", str(port), "--no-tap", env=env) as proc, \
            aiohttp.ClientSession() as session:
        await wait_healthy(session, f"http://127.0.0.1:{port}", proc)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ") and b"close" not in head.lower()
            writer.write(b"GET /hea")  # the start of a next request that never ends
            rest = await asyncio.wait_for(reader.read(), 10)
            assert rest.endswith(b'{"status": "ok"}'), rest  # the first body, then the end
        finally:
            writer.close()


async def test_dev_mode_listens_on_loopback_only_unless_forced() -> None:
    """Dev mode (no auth secret: `POST /api/dev/login` gives anyone a token) started on
    `--host 0.0.0.0` without a word. It exits 1 with one line now, unless
    `--dev-on-network` says so; any loopback address (127.x.y.z, ::1, localhost) is fine."""
    env = clean_env()
    code, out, err = await run_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()),
                                   "--no-tap", env=env)
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("connvo-rtc: configuration error: dev mode "), err
    assert "--dev-on-network" in lines[0] and "0.0.0.0" in lines[0]
    port = free_port("127.0.0.3")
    async with started("--host", "127.0.0.3", "--port", str(port), "--no-tap",
                       env=env) as proc, aiohttp.ClientSession() as session:
        await wait_healthy(session, f"http://127.0.0.3:{port}", proc)


async def test_a_redis_password_on_the_command_line_is_warned_about() -> None:
    """`--redis redis://:PASSWORD@host` put the password in `ps` for every local user to read.
    The URL is accepted from `CONNVO_RTC_REDIS_URL` or the config file (documented), and a
    password given on the command line gets a one-line warning (never the password itself).
    (Each run stops right after, on a missing JWKS file, so no Redis is needed.)"""
    jwks = str(REPO / "no-such-jwks.json")
    url = "redis://:hunter2-secret@127.0.0.1:1/0"
    env = clean_env(CONNVO_RTC_AUTH_SECRET=SECRET)
    (code, _, err), (env_code, _, env_err) = await asyncio.gather(
        run_cli("serve", "--port", str(free_port()), "--no-tap", "--jwks", jwks,
                "--redis", url, env=env),
        run_cli("serve", "--port", str(free_port()), "--no-tap", "--jwks", jwks,
                env={**env, "CONNVO_RTC_REDIS_URL": url}))
    warnings = [line for line in err.splitlines() if "--redis carries a password" in line]
    assert code == 1 and len(warnings) == 1, err
    assert "CONNVO_RTC_REDIS_URL" in warnings[0]
    assert env_code == 1 and "password" not in env_err, env_err
    assert "hunter2" not in err + env_err
