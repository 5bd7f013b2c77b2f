"""Fan-out of server messages to the application: bounded, drop-oldest subscriptions.

A :class:`~media.peer.PeerClient` publishes every non-negotiation server frame (``peer-joined``,
``chat``, ``transcript``, ``error``, ``room-ended`` ...) to each open :class:`Subscription`. A
subscriber that falls behind loses its oldest messages (counted in :attr:`Subscription.dropped`)
rather than making the client buffer without limit. When the client closes, iteration ends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Self, TypeVar

from signaling import protocol

from .errors import MediaTimeoutError

M = TypeVar("M", bound=protocol.ServerMessage)


class Subscription:
    """An async iterator of server messages; also a context manager that unsubscribes."""

    def __init__(self, maxsize: int, on_close: Callable[[Subscription], None]) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: deque[protocol.ServerMessage] = deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._ended = False
        self._on_close = on_close
        #: Messages discarded because this subscriber was too slow.
        self.dropped = 0

    def publish(self, message: protocol.ServerMessage) -> None:
        """Called by the client (never blocks)."""
        if self._ended:
            return
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(message)
        self._ready.set()

    def end(self) -> None:
        """No more messages will come (the client closed)."""
        self._ended = True
        self._ready.set()

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        self.end()
        self._on_close(self)

    async def get(self, timeout: float | None = None) -> protocol.ServerMessage:
        """The next message; raises :class:`StopAsyncIteration` once the client has closed,
        :class:`MediaTimeoutError` after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not self._items:
                    if self._ended:
                        raise StopAsyncIteration
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            raise MediaTimeoutError(f"no server message within {timeout} s") from None
        return self._items.popleft()

    async def wait_for(
        self, kind: type[M], timeout: float, predicate: Callable[[M], bool] | None = None,
    ) -> M:
        """Skip messages until one of type ``kind`` (matching ``predicate``) arrives."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self.get()
                    if isinstance(message, kind) and (predicate is None or predicate(message)):
                        return message
        except TimeoutError:
            raise MediaTimeoutError(
                f"no {kind.__name__} message within {timeout} s"
            ) from None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> protocol.ServerMessage:
        return await self.get()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
