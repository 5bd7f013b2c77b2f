"""A real coturn ``turnserver`` on free loopback ports, rendered by ``turn.coturn``, for tests.

``run_turnserver(secrets)`` starts ``turnserver`` listening on 127.0.0.1 (UDP and TCP) with relay
IP 127.0.0.1, a small relay port range of free ports, loopback peers allowed, verbose session
logs and no CLI; waits until it answers a STUN Binding request over UDP and accepts TCP; yields a
:class:`TurnServerHandle`; then stops it by PID (SIGTERM, wait, SIGKILL). Everything stays on
127.0.0.1.

When ``turnserver`` is missing the test is skipped, except under ``CI=true`` where it fails: CI
must not silently drop the TURN tests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import ipaddress
import os
import random
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aioice import stun

from tests.support.deps import missing
from turn.coturn import TurnServerConfig, render_turnserver_config
from turn.supervisor import write_private_file

HOST = "127.0.0.1"
#: Relay ports are taken below Linux's ephemeral range (32768+) to avoid racing other sockets.
RELAY_PORT_SPAN = (20_000, 32_000)
LOG_LINES = 5_000


def require_turnserver() -> str:
    """Return the ``turnserver`` path; skip the test (fail under ``CI=true``) if it is missing."""
    path = shutil.which("turnserver") or shutil.which("turnserver", path="/usr/bin:/usr/sbin")
    if path is None:
        missing("turnserver (coturn) is not installed: apt-get install coturn")
    return path


def free_port(host: str = HOST) -> int:
    """A port free for both TCP and UDP on ``host`` (turnserver listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free TCP+UDP port found")


def free_port_range(count: int, host: str = HOST) -> tuple[int, int]:
    """``(first, last)`` of ``count`` consecutive UDP ports free on ``host``."""
    low, high = RELAY_PORT_SPAN
    for _ in range(100):
        first = random.randrange(low, high - count) & ~1  # coturn likes an even start
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return first, first + count - 1
    raise RuntimeError(f"no {count} consecutive free UDP ports found")


def make_self_signed_cert(directory: Path, host: str = HOST) -> tuple[Path, Path]:
    """Write a self-signed certificate for ``host`` (an IP) and its key; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connvo-rtc test TURN")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "turn-cert.pem"
    key_path = directory / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class TurnServerHandle:
    """A running test ``turnserver``."""

    host: str
    """Address it listens on (always 127.0.0.1)."""
    port: int
    """Plain TURN port, UDP and TCP."""
    secrets: tuple[str, ...] = field(repr=False)
    """The configured ``static-auth-secret`` values, in order."""
    pid: int
    """The process id."""
    realm: str
    """The TURN realm."""
    relay_ports: tuple[int, int]
    """First and last relay port."""
    tls_port: int | None = None
    """TLS port when started with a certificate."""
    cert_path: Path | None = None
    """The certificate coturn presents on ``tls_port`` (self-signed, for ``127.0.0.1``)."""
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    """Lines printed so far (bounded)."""

    def url(self, transport: str = "udp") -> str:
        """``turn:127.0.0.1:PORT?transport=udp|tcp``."""
        return f"turn:{self.host}:{self.port}?transport={transport}"

    def tls_url(self) -> str:
        """``turns:127.0.0.1:TLS_PORT?transport=tcp``."""
        if self.tls_port is None:
            raise RuntimeError("this turnserver has no TLS listener")
        return f"turns:{self.host}:{self.tls_port}?transport=tcp"

    def allocation_lines(self, username: str | None = None) -> list[str]:
        """Log lines of successful allocations (for ``username`` if given)."""
        return [
            line
            for line in self.log
            if "ALLOCATE processed, success" in line
            and (username is None or f"<{username}>" in line)
        ]

    def auth_failure_lines(self, username: str | None = None) -> list[str]:
        """Log lines where coturn refused credentials (401) (for ``username`` if given).

        The first 401 of every allocation is the normal challenge sent before the client knows
        the realm and nonce (user ``<>``); only refusals of a named user count here.
        """
        return [
            line
            for line in self.log
            if ("error 401" in line or "check_stun_auth" in line)
            and "user <>" not in line
            and (username is None or f"<{username}>" in line)
        ]

    async def wait_for_log(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str:
        """Wait until a log line matches ``predicate``; return it (``TimeoutError`` otherwise)."""
        async with asyncio.timeout(timeout):
            while True:
                for line in list(self.log):
                    if predicate(line):
                        return line
                await asyncio.sleep(0.02)


async def _stun_binding_ok(host: str, port: int) -> bool:
    """Whether a STUN Binding request to ``host:port`` over UDP gets a response quickly."""
    loop = asyncio.get_running_loop()
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind((HOST, 0))
        await loop.sock_sendto(sock, bytes(request), (host, port))
        try:
            async with asyncio.timeout(0.2):
                data, _ = await loop.sock_recvfrom(sock, 2048)
        except (TimeoutError, OSError):
            return False
    try:
        return stun.parse_message(data).transaction_id == request.transaction_id
    except ValueError:
        return False


async def _tcp_ok(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _pump(stream: asyncio.StreamReader, log: collections.deque[str]) -> None:
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # an over-long line, dropped by the reader
            continue
        if not raw:
            return
        log.append(raw.decode("utf-8", errors="replace").rstrip())


async def _stop_pid(proc: asyncio.subprocess.Process, timeout: float = 5.0) -> None:
    """Stop the process by PID: SIGTERM, wait, SIGKILL."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()


@contextlib.asynccontextmanager
async def run_turnserver(
    secrets: Sequence[str],
    *,
    realm: str = "connvo.test",
    tls: bool = False,
    relay_port_count: int = 20,
    start_timeout: float = 10.0,
) -> AsyncIterator[TurnServerHandle]:
    """Run a real ``turnserver`` on free loopback ports; yield its handle; stop it by PID.

    ``tls=True`` adds a TLS listener with a fresh self-signed certificate for 127.0.0.1
    (``handle.cert_path``).
    """
    binary = require_turnserver()
    with tempfile.TemporaryDirectory(prefix="connvo-test-turn-") as tmp:
        directory = Path(tmp)
        cert = key = None
        tls_port = None
        if tls:
            cert, key = make_self_signed_cert(directory)
            tls_port = free_port()
        port = free_port()
        min_port, max_port = free_port_range(relay_port_count)
        config = TurnServerConfig(
            realm=realm,
            secrets=tuple(secrets),
            listen_ips=(HOST,),
            port=port,
            tls_port=tls_port,
            relay_ips=(HOST,),
            min_port=min_port,
            max_port=max_port,
            cert=str(cert) if cert else None,
            pkey=str(key) if key else None,
            allow_loopback_peers=True,
            verbose=True,
            userdb=str(directory / "turndb"),
        )
        path = write_private_file(directory, "turnserver.conf", render_turnserver_config(config))
        proc = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        handle = TurnServerHandle(
            host=HOST,
            port=port,
            secrets=config.secrets,
            pid=proc.pid,
            realm=realm,
            relay_ports=(min_port, max_port),
            tls_port=tls_port,
            cert_path=cert,
        )
        assert proc.stdout is not None
        pump = asyncio.create_task(_pump(proc.stdout, handle.log), name="test-turnserver-log")
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + start_timeout
            while not (await _stun_binding_ok(HOST, port) and await _tcp_ok(HOST, port)):
                if proc.returncode is not None or loop.time() > deadline:
                    tail = "\n".join(list(handle.log)[-20:])
                    raise RuntimeError(
                        f"turnserver did not start (status {proc.returncode}):\n{tail}"
                    )
                await asyncio.sleep(0.02)
            if tls_port is not None:
                while not await _tcp_ok(HOST, tls_port):
                    if loop.time() > deadline:
                        raise RuntimeError("turnserver TLS listener did not start")
                    await asyncio.sleep(0.02)
            yield handle
        finally:
            await _stop_pid(proc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.wait([pump])
            if not pump.done():
                pump.cancel()
                await asyncio.wait([pump])
