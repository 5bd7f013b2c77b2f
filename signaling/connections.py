"""Every TCP connection a worker accepted, from accept to close: counted, capped in total and
per address, refused with a reason that is counted and logged at a bounded rate.

A connection costs the hub a file descriptor and some memory from the moment it is accepted,
long before it sends anything a limit could look at. Before this, connections that never sent
a request head (or sent it one byte at a time) were counted nowhere and stayed forever: 2,000
of them showed ``connvo_open_websockets 0``, and at the file-descriptor limit nobody, not even
``/healthz``, could connect. Now:

- :class:`Connections` counts every connection from accept (``connvo_open_connections``), at
  most ``limits.max_connections + limits.connection_headroom`` per worker and
  ``limits.max_connections_per_address`` per address. :class:`signaling.server.FrontProtocol`
  asks it at accept and gives the place back when the connection ends, whoever (websocket or
  aiohttp) held it by then. A connection still waiting for its request head (it must come
  within ``limits.request_head_timeout_s``) is the cheapest to lose: at the total cap the
  oldest of those is cut to make room, so a flood of silent sockets loses its own sockets
  first, and a real client, whose head arrives within a round trip, still gets in.
- :class:`RefusalLog` counts each refusal by :class:`Refusal` reason
  (``connvo_refused_connections_total``) and logs the first of a reason at once, then at most
  one line per reason every :data:`LOG_EVERY_S` with the count: an attack is a few lines, not
  one per connection.
- :func:`ensure_fd_limit` checks at start that the process may open the file descriptors its
  connection caps need, raising the soft limit towards the hard one if it must.

Accept-time work only: nothing here runs per frame.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import sys
import time
from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol

from prometheus_client import Counter

from .settings import ConfigError, LimitSettings

logger = logging.getLogger(__name__)

#: At most one log line per refusal reason this often (the first of a reason goes out at once).
LOG_EVERY_S = 10.0

#: File descriptors a worker needs besides its client connections: the listening sockets, the
#: Redis connection pool (128 connections), the tap's recogniser processes, logs, stdio.
FD_RESERVE = 512


class Refusal(StrEnum):
    """Why a connection was refused or cut: the ``reason`` label of
    ``connvo_refused_connections_total``."""

    #: No complete request head within ``limits.request_head_timeout_s``.
    HEAD_TIMEOUT = "head-timeout"
    #: A request head longer than the hub reads (:data:`signaling.server.MAX_HEAD`): 431.
    HEAD_TOO_LARGE = "head-too-large"
    #: The address already holds ``limits.max_connections_per_address`` connections: 429.
    PER_ADDRESS = "per-address"
    #: The worker holds ``max_connections + connection_headroom`` connections and none of them
    #: is still waiting for its head: 503.
    SERVER_FULL = "server-full"
    #: Cut while still waiting for its request head, to make room at the total cap.
    EVICTED = "evicted"
    #: A websocket upgrade beyond ``limits.max_connections`` websockets (``server-full``, 1013).
    WEBSOCKETS_FULL = "websockets-full"


class RefusalLog:
    """Refused connections by reason: counted, and logged at most once per reason every
    ``every_s`` seconds with how many there were since the last line."""

    def __init__(self, counter: Counter | None = None, every_s: float = LOG_EVERY_S) -> None:
        self._counters = ({reason: counter.labels(reason=reason) for reason in Refusal}
                          if counter is not None else {})
        self._every_s = every_s
        self._last: dict[Refusal, float] = {}  # when the reason's last line was logged
        self._unlogged: dict[Refusal, tuple[int, str, str]] = {}  # count, latest address, why
        self._flushes: dict[Refusal, asyncio.TimerHandle] = {}

    def refuse(self, reason: Refusal, address: str, why: str) -> None:
        """Count one refusal; log it now, or with the next line of its reason."""
        counter = self._counters.get(reason)
        if counter is not None:
            counter.inc()
        now = time.monotonic()
        last = self._last.get(reason)
        if last is None or now - last >= self._every_s:
            self._last[reason] = now
            self._log(reason, 1, address, why)
            return
        count = self._unlogged[reason][0] if reason in self._unlogged else 0
        self._unlogged[reason] = (count + 1, address, why)
        if reason not in self._flushes:  # the tail of a burst is logged too, when it is due
            self._flushes[reason] = asyncio.get_running_loop().call_later(
                last + self._every_s - now, self._flush, reason)

    def _flush(self, reason: Refusal) -> None:
        self._flushes.pop(reason, None)
        count, address, why = self._unlogged.pop(reason)
        self._last[reason] = time.monotonic()
        self._log(reason, count, address, why)

    def _log(self, reason: Refusal, count: int, address: str, why: str) -> None:
        if count == 1:
            logger.warning("refused a connection from %s (%s): %s", address, reason, why)
        else:
            logger.warning("refused %d connections (%s) in the last %g s, the latest from %s: "
                           "%s", count, reason, self._every_s, address, why)

    def close(self) -> None:
        """Log what is still unlogged and stop the timers. Idempotent."""
        for reason in list(self._flushes):
            self._flushes.pop(reason).cancel()
            self._flush(reason)


class Evictable(Protocol):
    """A connection still waiting for its request head (:class:`signaling.server.FrontProtocol`)."""

    def evict(self) -> None:
        """Cut it now to make room (its place is given back before this returns)."""

    def close(self) -> None:
        """Close it now: the server is shutting down."""


def address_key(address: str) -> str:
    """What the per-address cap counts by: the IPv4 address, or the /64 of an IPv6 address (one
    subscriber's prefix: counting single IPv6 addresses would be no cap at all)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"


class Connections:
    """This worker's TCP connections: how many are open, how many per address, and which are
    still waiting for their request head. :meth:`admit` at accept, :meth:`settled` when it no
    longer waits (head read, cut or gone), :meth:`release` when the connection ends (exactly
    once per admitted one)."""

    def __init__(self, *, cap: int = sys.maxsize, per_address: int = 0,
                 exempt: Iterable[str] = (), head_timeout_s: float = 5.0,
                 refusals: RefusalLog | None = None) -> None:
        #: Connections this worker holds at most.
        self.cap = cap
        #: Connections one address (key) holds at most; 0: no cap.
        self.per_address = per_address
        self.head_timeout_s = head_timeout_s
        self.refusals = refusals if refusals is not None else RefusalLog()
        self._exempt = tuple(ipaddress.ip_network(net, strict=False) for net in exempt)
        #: Open connections.
        self.open = 0
        self._by_key: dict[str, int] = {}
        #: Connections still waiting for their head, oldest first (a dict keeps the order).
        self._pending: dict[Evictable, None] = {}

    @classmethod
    def from_limits(cls, limits: LimitSettings, refusals: RefusalLog) -> Connections:
        return cls(cap=limits.max_connections + limits.connection_headroom,
                   per_address=limits.max_connections_per_address,
                   exempt=limits.per_address_exempt, head_timeout_s=limits.request_head_timeout_s,
                   refusals=refusals)

    @property
    def pending(self) -> int:
        """Connections still waiting for their request head."""
        return len(self._pending)

    def held_by(self, address: str) -> int:
        """Open connections of ``address`` (of its /64 for IPv6)."""
        return self._by_key.get(address_key(address), 0)

    def admit(self, conn: Evictable, address: str) -> Refusal | None:
        """Count a new connection from ``address`` (then it is pending), or say why not (the
        refusal is counted and logged; the caller answers and closes)."""
        key = address_key(address)
        held = self._by_key.get(key, 0)
        if self.per_address and held >= self.per_address and not self._is_exempt(address):
            self.refuse(Refusal.PER_ADDRESS, address, f"{held} connections open from this address "
                        f"(limits.max_connections_per_address {self.per_address})")
            return Refusal.PER_ADDRESS
        if self.open >= self.cap:
            if not self._pending:
                self.refuse(Refusal.SERVER_FULL, address, f"{self.open} connections open (limits."
                            f"max_connections + limits.connection_headroom = {self.cap})")
                return Refusal.SERVER_FULL
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.evict()
        self.open += 1
        self._by_key[key] = self._by_key.get(key, 0) + 1
        self._pending[conn] = None
        return None

    def settled(self, conn: Evictable) -> None:
        """``conn`` no longer waits for its request head: it is not the first to go at the cap."""
        self._pending.pop(conn, None)

    def close_pending(self) -> None:
        """Close every connection still waiting for its request head (shutdown: once the site
        stops listening there is nothing to wait for)."""
        while self._pending:
            conn = next(iter(self._pending))
            del self._pending[conn]
            conn.close()

    def release(self, address: str) -> None:
        """A connection admitted from ``address`` has ended, or is being cut (settled first)."""
        self.open -= 1
        key = address_key(address)
        left = self._by_key.get(key, 1) - 1
        if left > 0:
            self._by_key[key] = left
        else:
            self._by_key.pop(key, None)

    def refuse(self, reason: Refusal, address: str, why: str) -> None:
        """Count and log (rate-limited) one refused or cut connection."""
        self.refusals.refuse(reason, address, why)

    def _is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return True  # not an IP address: a unix socket, whose clients are on this machine
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._exempt)


def fds_needed(limits: LimitSettings) -> int:
    """File descriptors one worker may need: every connection it accepts, plus a reserve."""
    return limits.max_connections + limits.connection_headroom + FD_RESERVE


def ensure_fd_limit(limits: LimitSettings) -> int:
    """Make sure this process may open :func:`fds_needed` file descriptors, raising the soft
    ``RLIMIT_NOFILE`` towards the hard limit if it must; return the soft limit in force.

    A worker that runs out of descriptors before its connection caps cannot accept anyone, not
    even ``/healthz``, which is the lock-out the caps exist to prevent; so a limit too low even
    at the hard limit is a configuration error (:class:`ConfigError`), not a warning.
    """
    need = fds_needed(limits)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    target = need if hard == infinite else min(need, hard)
    if soft != infinite and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, target,
                           exc)
        else:
            logger.info("open-file limit raised from %d to %d for the connection limits", soft,
                        target)
            soft = target
    if soft != infinite and soft < need:
        shown = "unlimited" if hard == infinite else str(hard)
        raise ConfigError(
            f"limits.max_connections + limits.connection_headroom need {need} open files "
            f"({FD_RESERVE} more for Redis, the tap and logs), but this process may open "
            f"{soft} (hard limit {shown}): lower limits.max_connections or raise the limit "
            "(ulimit -n, LimitNOFILE= in a systemd unit, --ulimit nofile= for Docker)")
    return int(soft)
