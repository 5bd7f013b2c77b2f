"""The client's seat at the hub over time: joining, reading, and resuming a dropped socket.

A :class:`HubSession` holds the current :class:`~media.hublink.HubLink` and the latest ``joined``
frame. :meth:`HubSession.run` reads the link until it ends. A drop that is no verdict (hub
restart, network, a send queue overflow) is resumed with ``join {token, resume}`` -- bounded
attempts with doubling backoff -- while frames the app sends meanwhile are held; the peer
connections do not depend on the socket and are kept. A verdict (``kicked``, ``room-ended``, a
close code that is not resumable) or running out of attempts ends the session with a typed
error (:mod:`media.errors`), which :meth:`HubSession.run` returns for the client to fail with.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from signaling import protocol

from .config import PeerClientConfig
from .errors import (
    RESUMABLE_CLOSE_CODES,
    HubUnreachableError,
    KickedError,
    PeerClientError,
    RoomEndedError,
    SendQueueFullError,
    error_for_close,
)
from .hublink import HubLink, LinkEnd, LinkOptions
from .stats import ClientStats

logger = logging.getLogger(__name__)


class HubSession:
    """One client's standing with the hub: :meth:`open` once, :meth:`run` in a task the client
    owns, :meth:`leave` to say goodbye, :meth:`aclose` (idempotent) to drop the link and the HTTP
    session.

    ``on_message`` gets every server frame. While a drop is being resumed ``on_resuming`` has
    been called; a successful resume calls ``on_resumed(joined, same_seat)`` -- ``same_seat``
    False means the hub seated us afresh and everything must be renegotiated.
    """

    def __init__(
        self,
        config: PeerClientConfig,
        stats: ClientStats,
        *,
        on_message: Callable[[protocol.ServerMessage], None],
        on_resuming: Callable[[], None],
        on_resumed: Callable[[protocol.Joined, bool], None],
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
    ) -> None:
        self.config = config
        self.stats = stats
        #: ``room=... peer=... name``: starts every log line about this client; set on each join.
        self.log_prefix = f"room=? peer=? {config.name}".strip()
        #: The open link; ``None`` before joining and while resuming.
        self.link: HubLink | None = None
        #: The latest ``joined`` frame (replaced on resume).
        self.joined: protocol.Joined | None = None
        self._on_message = on_message
        self._on_resuming = on_resuming
        self._on_resumed = on_resumed
        self._spawn = spawn
        self._http: aiohttp.ClientSession | None = None
        self._held: deque[protocol._Msg] = deque(maxlen=64)  # frames sent while resuming
        self._terminal: PeerClientError | None = None  # a verdict arrived: do not resume
        self._leaving = False

    async def open(self) -> tuple[HubLink, protocol.Joined]:
        """Connect and join. Raises the :class:`~media.errors.PeerClientError` that stopped it."""
        self._http = aiohttp.ClientSession()
        link, joined = await HubLink.open(
            self._http, self._link_options(), protocol.Join(token=self.config.token),
            log_prefix=self.log_prefix,
        )
        self._adopt(link, joined)
        return link, joined

    def hold(self, message: protocol._Msg) -> None:
        """Send ``message`` once the dropped socket is resumed (beyond 64 held, the oldest is
        dropped)."""
        self._held.append(message)

    async def run(self) -> PeerClientError | None:
        """Read the link, resuming drops, until the session ends. Returns the error that ended
        it, or ``None`` when :meth:`leave` ended it (or there was nothing to resume with)."""
        while True:
            link = self.link
            if link is None:
                return None
            end = await link.run(self._dispatch)
            if self._leaving:
                return None  # leave() closed the link
            if self._terminal is not None:
                return self._terminal
            if not self._resumable(end):
                return end.error or error_for_close(end.close_code, end.reason)
            logger.warning("%s socket dropped (code %s %s); resuming", self.log_prefix,
                           end.close_code, end.reason)
            try:
                if not await self._resume():
                    return None
            except PeerClientError as exc:
                return exc

    async def leave(self) -> None:
        """Say ``leave`` and close the link; :meth:`run` then ends without resuming."""
        self._leaving = True
        link = self.link
        if link is not None:
            try:
                link.send(protocol.Leave())
                await link.flush(1.0)
            except PeerClientError:
                pass
            await link.aclose()

    async def aclose(self) -> None:
        """Close the link and the HTTP session (idempotent)."""
        if self.link is not None:
            await self.link.aclose()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ------------------------------------------------------------------ internals

    def _link_options(self) -> LinkOptions:
        c = self.config
        return LinkOptions(
            ws_url=c.ws_url, connect_timeout_s=c.connect_timeout_s,
            join_timeout_s=c.join_timeout_s, heartbeat_s=c.heartbeat_s,
            send_queue_size=c.send_queue_size,
        )

    def _adopt(self, link: HubLink, joined: protocol.Joined) -> None:
        self.link, self.joined = link, joined
        self.log_prefix = f"room={joined.room_id} peer={joined.peer_id} {self.config.name}".strip()
        link.log_prefix = self.log_prefix
        self.stats.joined(peer_id=joined.peer_id, room_id=joined.room_id, role=joined.role,
                          ws_connect_s=link.connect_s, join_s=link.join_s)

    def _dispatch(self, message: protocol.ServerMessage) -> None:
        if isinstance(message, (protocol.Kicked, protocol.RoomEndedMsg)):
            kind = KickedError if isinstance(message, protocol.Kicked) else RoomEndedError
            self._terminal = kind(message.reason)
            if self.link is not None:  # do not wait for the hub to close: we are done
                self._spawn(self.link.aclose(), "close-link")
        self._on_message(message)

    def _resumable(self, end: LinkEnd) -> bool:
        if self.config.resume_attempts == 0:
            return False
        if end.error is not None:
            return isinstance(end.error, SendQueueFullError)
        return end.close_code in RESUMABLE_CLOSE_CODES

    async def _resume(self) -> bool:
        """Rejoin with the resume token. False if there is nothing to rejoin with; raises the
        last attempt's error when every attempt failed (or one failed for good)."""
        if self._http is None or self.joined is None:
            return False
        self.link = None
        self._on_resuming()
        delay = self.config.resume_backoff_s
        last: PeerClientError = HubUnreachableError("socket dropped")
        for attempt in range(1, self.config.resume_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            join = protocol.Join(token=self.config.token, resume=self.joined.resume_token or None)
            try:
                link, joined = await HubLink.open(self._http, self._link_options(), join,
                                                  log_prefix=self.log_prefix)
            except PeerClientError as exc:
                self.stats.error(exc.code)
                last = exc
                logger.info("%s resume attempt %d failed (%s)", self.log_prefix, attempt,
                            exc.code)
                if not exc.retryable:
                    break
                continue
            self._resumed(link, joined)
            return True
        raise last

    def _resumed(self, link: HubLink, joined: protocol.Joined) -> None:
        previous = self.joined
        same_seat = joined.resumed and previous is not None and joined.peer_id == previous.peer_id
        self._adopt(link, joined)
        while self._held:
            link.send(self._held.popleft())
        if same_seat:
            self.stats.resumes += 1
            logger.info("%s resumed", self.log_prefix)
        else:
            logger.warning("%s hub started a new session; renegotiating everything",
                           self.log_prefix)
        self._on_resumed(joined, same_seat)
