"""The cross-worker message bus.

A hub worker delivers frames to its own peers directly; a frame for a peer held by another worker
is wrapped in an :class:`Envelope` and sent to that worker's inbox on the bus. Envelopes from one
sender to one worker arrive in the order they were sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal, Protocol

import msgspec

from .tasks import TaskSet

logger = logging.getLogger(__name__)


class Envelope(msgspec.Struct, frozen=True, array_like=True):
    """What travels between workers: an action on some of the receiving worker's peers.

    ``deliver`` sends ``frame`` (an encoded protocol message) to ``to``; ``close`` closes those
    peers' sockets with ``code``/``frame`` as the reason; ``roster`` tells the worker that the
    room's membership changed (``frame`` is unused) so it refreshes its routing view; ``admit``
    tells the worker that a host let ``to`` (knockers in its waiting room) in.
    """

    kind: Literal["deliver", "close", "roster", "admit"]
    room_id: str
    to: tuple[str, ...]
    frame: bytes = b""
    code: int = 0
    reason: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Envelope])


def pack(envelopes: list[Envelope]) -> bytes:
    """One bus message: the envelopes for one worker, in order (a batch keeps the per-message
    cost of Redis and of the receiving worker down under load)."""
    return _encoder.encode(envelopes)


def unpack(data: bytes) -> list[Envelope]:
    return _decoder.decode(data)


Handler = Callable[[Envelope], Coroutine[Any, Any, None]]


class Bus(Protocol):
    """Point-to-point delivery between hub workers."""

    async def start(self, worker_id: str, handler: Handler) -> None:
        """Begin receiving envelopes addressed to ``worker_id``."""

    def send(self, worker_id: str, envelope: Envelope) -> None:
        """Queue one envelope for a worker's inbox (never waits; fire and forget: a dead worker
        drops it). Raises :class:`~signaling.errors.Unavailable` when the bus is backed up."""

    async def aclose(self) -> None: ...


class MemoryBus:
    """A bus between hub instances in one process (tests, the embedded default)."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._tasks = TaskSet("memory bus", logger=logger)

    async def start(self, worker_id: str, handler: Handler) -> None:
        self._handlers[worker_id] = handler

    def send(self, worker_id: str, envelope: Envelope) -> None:
        handler = self._handlers.get(worker_id)
        if handler is None:
            logger.debug("bus: no worker %s, dropped %s", worker_id, envelope.kind)
            return
        # Round-trip through the wire format so memory and Redis behave alike. Tasks start in
        # the order they are made, so envelopes to one worker are handled in order.
        (copy,) = unpack(pack([envelope]))
        self._tasks.spawn(handler(copy), f"deliver to {worker_id}")

    async def aclose(self) -> None:
        self._handlers.clear()
