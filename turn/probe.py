"""Check a TURN server and a credential by making (and deleting) one real allocation.

A browser or aiortc peer given a bad TURN credential fails silently: with
``iceTransportPolicy="relay"`` it gathers no candidate and the call never connects, and coturn
only logs ``401 Unauthorized``. :func:`probe_turn` turns that into a clear answer:

- ``ok``: the allocation succeeded (``relayed_address`` says where);
- ``turn-auth-failed``: coturn answered 401 (expired credential, unknown or rotated-out secret,
  wrong realm...);
- ``turn-unreachable``: no answer within ``timeout`` (wrong host/port, firewall, coturn down) or
  the TCP/TLS connection was refused;
- ``turn-error``: any other STUN error (quota reached 486, forbidden 403, ...) or TLS failure.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass

from aioice import stun
from aioice.turn import create_turn_endpoint

from .credentials import parse_username
from .errors import CredentialError, TurnConfigError
from .ice import parse_ice_url

logger = logging.getLogger(__name__)

OK = "ok"
AUTH_FAILED = "turn-auth-failed"
UNREACHABLE = "turn-unreachable"
ERROR = "turn-error"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of :func:`probe_turn`."""

    ok: bool
    """Whether an allocation was made."""
    code: str
    """``ok``, ``turn-auth-failed``, ``turn-unreachable`` or ``turn-error``."""
    message: str
    """Human-readable detail (never contains the credential)."""
    relayed_address: tuple[str, int] | None = None
    """The relayed transport address coturn allocated, when ``ok``."""
    elapsed_s: float = 0.0
    """Seconds the probe took."""


class _Receiver(asyncio.DatagramProtocol):
    """Stands in for an ICE agent; only learns when the allocation is gone."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def probe_turn(
    url: str,
    username: str,
    credential: str,
    timeout: float = 5.0,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> ProbeResult:
    """Try one TURN allocation at ``url`` with ``username``/``credential``.

    ``url`` is a ``turn:``/``turns:`` URL (``?transport=udp|tcp``). ``ssl_context`` is used for
    ``turns:`` (default: the system's verifying context). Returns within about ``timeout``
    seconds; the allocation is deleted again before returning. Raises
    :class:`~turn.errors.TurnConfigError` only for a URL that is not a TURN URL.
    """
    parsed = parse_ice_url(url)
    if not parsed.scheme.startswith("turn"):
        raise TurnConfigError(f"{url!r} is not a turn:/turns: URL")
    tls: bool | ssl.SSLContext | None = None
    if parsed.secure:
        tls = ssl_context if ssl_context is not None else ssl.create_default_context()
    start = time.monotonic()

    def result(
        ok: bool, code: str, message: str, addr: tuple[str, int] | None = None
    ) -> ProbeResult:
        elapsed = time.monotonic() - start
        logger.info("TURN probe %s: %s (%s) in %.2f s", url, code, message, elapsed)
        return ProbeResult(ok, code, message, addr, elapsed)

    try:
        async with asyncio.timeout(timeout):
            transport, receiver = await create_turn_endpoint(
                _Receiver,
                server_addr=(parsed.host, parsed.port),
                username=username,
                password=credential,
                ssl=tls,
                transport=parsed.transport or "udp",
            )
    except TimeoutError:
        return result(False, UNREACHABLE, f"no answer from {url} within {timeout:g} s")
    except stun.TransactionFailed as exc:
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, ""))
        if code == 401:
            return result(False, AUTH_FAILED, _explain_401(username))
        return result(False, ERROR, f"TURN error {code} {reason}".strip())
    except stun.TransactionTimeout:
        return result(False, UNREACHABLE, f"no answer from {url}")
    except ssl.SSLError as exc:
        return result(False, ERROR, f"TLS failed: {exc.reason or exc}")
    except (ConnectionRefusedError, ConnectionResetError) as exc:
        return result(False, UNREACHABLE, f"cannot reach {url}: {exc}")
    except ConnectionError as exc:  # aioice: a malformed allocation response
        return result(False, ERROR, str(exc))
    except OSError as exc:  # name resolution, no route, ...
        return result(False, UNREACHABLE, f"cannot reach {url}: {exc}")

    relayed = transport.get_extra_info("sockname")
    # Delete the allocation and wait until its socket is closed, so nothing outlives the probe.
    transport.close()
    try:
        async with asyncio.timeout(max(1.0, timeout)):
            await receiver.closed
    except TimeoutError:
        logger.warning("TURN probe %s: allocation deletion did not finish", url)
    return result(True, OK, f"allocated relay {relayed[0]}:{relayed[1]}", tuple(relayed))


def _explain_401(username: str) -> str:
    """Say why coturn most likely refused the credential; the username carries its expiry."""
    try:
        expires_at, _ = parse_username(username)
    except (CredentialError, UnicodeDecodeError):
        return "401 Unauthorized: the username is not a TURN REST username ('<expiry>:<user>')"
    age = time.time() - expires_at
    if age > 0:
        return f"401 Unauthorized: the credential expired {age:.0f} s ago"
    return (
        "401 Unauthorized: coturn does not know the secret that signed this credential "
        "(rotated out, or hub and coturn configured with different secrets)"
    )
