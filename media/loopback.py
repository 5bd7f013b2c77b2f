"""Pinning ICE host candidates to given addresses (tests pin ``127.0.0.1``).

Why this exists: aioice gathers host candidates from ``aioice.ice.get_host_addresses``, which
deliberately skips ``127.0.0.1`` and ``::1``. On a host (or container) whose only interface is
``lo`` an aiortc peer therefore gathers *no* candidates and never connects; on a host with real
interfaces it gathers all of them, so test traffic would leave loopback. Pinning replaces the
gathered address list with an explicit one for the duration of a ``with`` block.

How, without a permanent global mutation: ``aioice.ice`` looks ``get_host_addresses`` up as a
module global at call time (in ``Connection.gather_candidates``), so the only hook is to replace
that global. :func:`pin_host_addresses` installs a small dispatcher while at least one pin is
active (reference-counted, restored when the last pin exits) and the dispatcher reads the
addresses from a :class:`contextvars.ContextVar`. Each pin is therefore visible only to code
running in the task that entered it and to tasks that task starts (``asyncio.gather`` inside
``RTCPeerConnection.setLocalDescription`` copies the context), so two clients in one process
with different pins -- or none -- do not see each other's. The refcount lives on the installed
dispatcher itself, not in a module global of ours.

Pin around the calls that gather: ``setLocalDescription`` (offer or answer)::

    with pin_host_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
from collections.abc import Callable, Iterator, Sequence

import aioice.ice

logger = logging.getLogger(__name__)

#: Addresses pinned for the current context, or ``None`` for aioice's own discovery. A
#: ContextVar is immutable per context (``set`` returns a token that restores it), which is what
#: makes per-client pins safe in one process.
_PINNED: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "connvo_pinned_host_addresses", default=None
)

HostAddressFn = Callable[[bool, bool], list[str]]


class _HostAddressDispatcher:
    """Stands in for ``aioice.ice.get_host_addresses`` while at least one pin is active."""

    def __init__(self, original: HostAddressFn) -> None:
        self.original = original
        self.users = 0

    def __call__(self, use_ipv4: bool, use_ipv6: bool) -> list[str]:
        pinned = _PINNED.get()
        if pinned is None:
            return self.original(use_ipv4, use_ipv6)
        chosen = []
        for address in pinned:
            version = ipaddress.ip_address(address).version
            if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
                chosen.append(address)
        return chosen


def _validate(addresses: Sequence[str]) -> tuple[str, ...]:
    if isinstance(addresses, str):
        raise TypeError("pin_host_addresses takes a sequence of addresses, not one string")
    out = []
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"not an IP address: {address!r}") from None
        out.append(address)
    if not out:
        raise ValueError("pin_host_addresses needs at least one address")
    return tuple(out)


@contextlib.contextmanager
def pin_host_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Make aioice gather host candidates only on ``addresses`` inside the block.

    ``None`` is a no-op (aioice's normal discovery), so callers can pass an optional config
    value straight through. Must be entered and exited in the same task (a ``with`` around
    ``await``s in one coroutine does that).
    """
    if addresses is None:
        yield
        return
    pinned = _validate(addresses)
    current = aioice.ice.get_host_addresses
    if isinstance(current, _HostAddressDispatcher):
        dispatcher = current
    else:
        dispatcher = _HostAddressDispatcher(current)
        aioice.ice.get_host_addresses = dispatcher  # type: ignore[assignment]
        logger.debug("host-address pin installed")
    dispatcher.users += 1
    token = _PINNED.set(pinned)
    try:
        yield
    finally:
        _PINNED.reset(token)
        dispatcher.users -= 1
        if dispatcher.users == 0 and aioice.ice.get_host_addresses is dispatcher:
            aioice.ice.get_host_addresses = dispatcher.original  # type: ignore[assignment]
            logger.debug("host-address pin removed")


def is_pin_installed() -> bool:
    """Whether a pin currently replaces ``aioice.ice.get_host_addresses`` (for tests)."""
    return isinstance(aioice.ice.get_host_addresses, _HostAddressDispatcher)
