"""The headless peer client: one websocket to the hub, one ``RTCPeerConnection`` per peer.

Bots and the transcription tap are thin roles on top of :class:`PeerClient`::

    config = PeerClientConfig(ws_url=hub.ws_url, token=token, audio=OpusSpec(path="a.flac"))
    async with PeerClient(config) as client:          # connect() + join
        await client.wait_connected(timeout=10)
        await client.wait_audio_from(timeout=10)
        async for message in client.messages():       # transcripts, chat, peer events ...
            ...
        report = (await client.snapshot()).to_dict()

What it does (DESIGN "Websocket protocol"): joins with ``join {token}``; as the newcomer offers
to every peer in ``joined.peers``; answers the offers of later peers; closes a peer's connection
on ``peer-left``; consumes every incoming track; records timings and RTP stats per remote peer
(:mod:`media.stats`). If the socket drops unexpectedly (hub restart, network) it rejoins with
``join {token, resume}`` -- bounded attempts with backoff -- and keeps its peer connections,
which do not depend on the socket. Deliberate verdicts (bad token, room full, room ended,
kicked) end the client with a typed error (:mod:`media.errors`).

Negotiation details live in :mod:`media.connection`, the socket in :mod:`media.hublink`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Self

import aiohttp

from signaling import protocol

from .config import PeerClientConfig
from .connection import AudioFrameCallback, ConnectionOptions, RemotePeer
from .errors import (
    RESUMABLE_CLOSE_CODES,
    ClientClosedError,
    HubUnreachableError,
    KickedError,
    MediaTimeoutError,
    PeerClientError,
    RoomEndedError,
    SendQueueFullError,
    error_for_close,
)
from .events import Subscription
from .hublink import HubLink, LinkEnd, LinkOptions
from .local import LocalMedia
from .plan import SENDING_ROLES
from .sources import open_audio_source
from .stats import ClientSnapshot, ClientStats

logger = logging.getLogger(__name__)

_LIVE_STATES = ("joined", "resuming")


class PeerClient:
    """A headless WebRTC peer speaking the hub's protocol. Single use: ``connect()`` once,
    ``aclose()`` (idempotent) when done; ``async with`` does both.

    ``on_audio_frame(peer_id, frame)`` receives every decoded audio frame (the tap's input); it
    runs on the event loop and must return quickly (hand frames to a bounded queue).

    States: ``new`` -> ``connecting`` -> ``joined`` (<-> ``resuming``) -> ``leaving`` -> ``left``;
    ``failed`` after a fatal error (see :attr:`error`); ``closed`` after :meth:`aclose`.
    """

    def __init__(
        self, config: PeerClientConfig, *, on_audio_frame: AudioFrameCallback | None = None
    ) -> None:
        self.config = config
        #: Timings, errors and per-remote-peer records (:meth:`snapshot` for a frozen copy).
        self.stats = ClientStats()
        self._on_audio_frame = on_audio_frame
        self._state = "new"
        self._error: PeerClientError | None = None
        self._terminal: PeerClientError | None = None
        self._joined: protocol.Joined | None = None
        self._http: aiohttp.ClientSession | None = None
        self._link: HubLink | None = None
        self._local: LocalMedia | None = None
        self._conn_options: ConnectionOptions | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._remotes: dict[str, RemotePeer] = {}
        self._known: dict[str, protocol.PeerInfo] = {}
        self._earlier: set[str] = set()  # joined before us: we offer to them, we are impolite
        self._failures: deque[PeerClientError] = deque(maxlen=32)  # for wait_connected
        self._held: deque[protocol._Msg] = deque(maxlen=64)  # frames sent while resuming
        self._subscribers: set[Subscription] = set()
        self._changed = asyncio.Event()
        self._log = f"room=? peer=? {config.name}".strip()

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> str:
        return self._state

    @property
    def error(self) -> PeerClientError | None:
        """The fatal error that ended the client, if any."""
        return self._error

    @property
    def joined(self) -> protocol.Joined | None:
        """The latest ``joined`` frame (replaced on resume)."""
        return self._joined

    @property
    def peer_id(self) -> str | None:
        return self._joined.peer_id if self._joined else None

    @property
    def room_id(self) -> str | None:
        return self._joined.room_id if self._joined else None

    @property
    def role(self) -> str | None:
        return self._joined.role if self._joined else None

    @property
    def remote_peers(self) -> Mapping[str, RemotePeer]:
        """Open connections by remote peer id (read-only view)."""
        return types.MappingProxyType(self._remotes)

    @property
    def room_peers(self) -> Mapping[str, protocol.PeerInfo]:
        """Other peers in the room as last announced by the hub (read-only view)."""
        return types.MappingProxyType(self._known)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        try:
            await self.connect()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> protocol.Joined:
        """Connect to the hub, join, and start negotiating with the peers already there.

        Raises :class:`~media.errors.HubUnreachableError`, ``TokenError``, ``RoomFullError``,
        ``RoomEndedError``, ``NotFoundError``, ``JoinTimeoutError`` ... (all
        :class:`~media.errors.PeerClientError`).
        """
        if self._state != "new":
            raise RuntimeError(f"connect() on a client in state {self._state!r}")
        self._state = "connecting"
        try:
            audio_source = await open_audio_source(self.config.audio)
            self._local = LocalMedia(audio_source, video=self.config.send_video)
            self._http = aiohttp.ClientSession()
            link, joined = await HubLink.open(
                self._http, self._link_options(), protocol.Join(token=self.config.token),
                log_prefix=self._log,
            )
        except PeerClientError as exc:
            self.stats.error(exc.code)
            self._error, self._state = exc, "failed"
            logger.info("%s join failed (%s): %s", self._log, exc.code, exc.message)
            await self._close_http()
            raise
        except BaseException:
            self._state = "failed"
            await self._close_http()
            raise
        self._adopt(link, joined)
        logger.info("%s joined as %s with %d peers (ws %.3f s, join %.3f s)", self._log,
                    joined.role, len(joined.peers), link.connect_s, link.join_s)
        self._session_task = asyncio.get_running_loop().create_task(
            self._run_session(), name=f"hub-session {self._log}"
        )
        self._greet_peers(joined)
        self._announce_media()
        return joined

    async def leave(self) -> None:
        """Say ``leave``, close the socket and every peer connection (state ``left``)."""
        if self._state not in _LIVE_STATES:
            return
        resuming = self._state == "resuming"
        self._state = "leaving"
        if resuming and self._session_task is not None:
            self._session_task.cancel()  # stop reconnecting; there is nothing to say goodbye on
        link = self._link
        if link is not None:
            try:
                link.send(protocol.Leave())
                await link.flush(1.0)
            except PeerClientError:
                pass
            await link.aclose()
        if self._session_task is not None:
            await asyncio.gather(self._session_task, return_exceptions=True)
        await self._close_remotes()
        self._state = "left"
        self._end_subscriptions()
        logger.info("%s left", self._log)
        self._notify()

    async def aclose(self) -> None:
        """Leave if joined, stop every task, close every connection (idempotent)."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(
                self._aclose(), name=f"peer-close {self._log}"
            )
        await asyncio.shield(self._close_task)

    async def _aclose(self) -> None:
        if self._state in _LIVE_STATES:
            try:
                async with asyncio.timeout(3.0):
                    await self.leave()
            except TimeoutError:
                logger.warning("%s leave timed out", self._log)
        self._state = "closing" if self._state != "failed" else self._state
        tasks = [t for t in (self._session_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_remotes()
        if self._link is not None:
            await self._link.aclose()
        await self._close_http()
        self._end_subscriptions()
        self._state = "closed"
        self._notify()

    # ------------------------------------------------------------------ app API

    def messages(self, maxsize: int = 256) -> Subscription:
        """Server messages from now on (``peer-joined``, ``chat``, ``transcript``, ``error``,
        ``room-ended`` ...; not offers/answers/candidates). Iterate with ``async for``; use as
        ``with client.messages() as sub:`` to unsubscribe. Drops the oldest when full."""
        subscription = Subscription(maxsize, self._subscribers.discard)
        if self._state in ("left", "failed", "closed"):
            subscription.end()
        else:
            self._subscribers.add(subscription)
        return subscription

    def send(self, message: protocol._Msg) -> None:
        """Send any client frame (``kick``, ``end``, ``ping`` ...). Held briefly while a
        dropped socket is being resumed."""
        if self._state == "resuming":
            self._held.append(message)
            return
        if self._state != "joined" or self._link is None:
            raise ClientClosedError(f"cannot send in state {self._state!r}")
        self._link.send(message)

    def send_chat(self, text: str) -> None:
        """Post a chat message to the room."""
        self.send(protocol.Chat(text=text))

    async def ping(self, timeout: float = 5.0) -> float:
        """Round-trip time to the hub in seconds (``ping`` -> ``pong``)."""
        with self.messages() as sub:
            sent = time.monotonic()
            self.send(protocol.Ping(ts=sent))
            await sub.wait_for(protocol.Pong, timeout, lambda m: m.ts in (None, sent))
        return time.monotonic() - sent

    def set_media(self, *, audio: bool | None = None, video: bool | None = None) -> None:
        """Turn sending audio/video on or off (mute = silence/black frames, as a browser's
        ``track.enabled``; no renegotiation) and tell the room with a ``media`` frame. Only
        kinds the client was configured with can be turned on (``audio``, ``send_video``)."""
        if self._local is None or self.role not in SENDING_ROLES:
            raise ClientClosedError(f"a {self.role or 'unjoined'} client sends no media")
        if video and not self._local.video_capable:
            raise ValueError("video was not negotiated: configure send_video=True to toggle it")
        if audio and self._local.audio_source is None:
            raise ValueError("no audio source configured")
        self._local.set_enabled(audio=audio, video=video)
        for remote in self._remotes.values():
            remote.apply_media()
        self._announce_media()

    async def wait_connected(self, peer_count: int | None = None, timeout: float = 15.0) -> None:
        """Wait until ``peer_count`` remote peers (default: every current one) are connected.

        Raises the connection's error (e.g. :class:`~media.errors.IceFailedError`) once too
        many have failed to reach the count, the client's error if it died, or
        :class:`MediaTimeoutError`.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._raise_if_dead()
                    want = len(self._remotes) if peer_count is None else peer_count
                    states = [r.state for r in self._remotes.values()]
                    if states.count("connected") >= want:
                        return
                    hopeful = sum(s in ("new", "connecting", "connected") for s in states)
                    if self._failures and hopeful < want:
                        raise self._failures[-1]
                    await self._wait_change(None)
        except TimeoutError:
            raise MediaTimeoutError(
                f"{self._log}: remote peers {({p: r.state for p, r in self._remotes.items()})} "
                f"after {timeout} s "
                f"(wanted {peer_count if peer_count is not None else 'all'} connected)"
            ) from None

    async def wait_audio_from(
        self, peer_ids: Iterable[str] | None = None, timeout: float = 15.0
    ) -> None:
        """Wait until at least one audio frame arrived from each of ``peer_ids`` (default:
        every connected-or-connecting peer that sends us audio)."""
        wanted = None if peer_ids is None else set(peer_ids)
        missing: set[str] = set()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._raise_if_dead()
                    ids = wanted if wanted is not None else {
                        pid for pid, r in self._remotes.items() if r.plan.audio in
                        ("sendrecv", "recvonly")
                    }
                    missing = set()
                    for pid in ids:
                        remote = self._remotes.get(pid)
                        if remote is not None and remote.error is not None:
                            raise remote.error
                        record = self.stats.remote_peers.get(pid)
                        if record is None or record.first_audio_at_s is None:
                            missing.add(pid)
                    if not missing:
                        return
                    # Frames do not signal; poll at a frame's pace.
                    await self._wait_change(0.02)
        except TimeoutError:
            raise MediaTimeoutError(
                f"{self._log}: no audio from {sorted(missing)} within {timeout} s"
            ) from None

    async def snapshot(self) -> ClientSnapshot:
        """Pull ``getStats()`` from every open connection and return a frozen snapshot."""
        await asyncio.gather(*(r.collect_stats() for r in list(self._remotes.values())))
        return self.stats.snapshot(self._state)

    # ------------------------------------------------------------------ session

    def _link_options(self) -> LinkOptions:
        c = self.config
        return LinkOptions(
            ws_url=c.ws_url, connect_timeout_s=c.connect_timeout_s,
            join_timeout_s=c.join_timeout_s, heartbeat_s=c.heartbeat_s,
            send_queue_size=c.send_queue_size,
        )

    def _adopt(self, link: HubLink, joined: protocol.Joined) -> None:
        self._link, self._joined, self._state = link, joined, "joined"
        self._log = f"room={joined.room_id} peer={joined.peer_id} {self.config.name}".strip()
        link.log_prefix = self._log
        self.stats.joined(peer_id=joined.peer_id, room_id=joined.room_id, role=joined.role,
                          ws_connect_s=link.connect_s, join_s=link.join_s)
        c = self.config
        servers = c.ice_servers if c.ice_servers is not None else tuple(joined.ice_servers)
        self._conn_options = ConnectionOptions(
            ice_servers=servers, ice_transport_policy=c.ice_transport_policy,
            ice_timeout_s=c.ice_timeout_s, pin_host_addresses=c.pin_host_addresses,
            decode_audio=c.decode_audio, decode_video=c.decode_video,
        )
        self._notify()

    def _greet_peers(self, joined: protocol.Joined) -> None:
        """As the newcomer: offer to everyone already in the room."""
        for info in joined.peers:
            if info.peer_id == joined.peer_id:
                continue
            self._known[info.peer_id] = info
            self._earlier.add(info.peer_id)
            self._open_remote(info.peer_id, info.role, offerer=True)

    def _announce_media(self) -> None:
        if self._local is None or self.role not in SENDING_ROLES or self._state != "joined":
            return
        try:
            self.send(protocol.Media(audio=self._local.audio_enabled,
                                     video=self._local.video_enabled))
        except PeerClientError as exc:
            logger.info("%s media frame not sent: %s", self._log, exc.message)

    async def _run_session(self) -> None:
        while True:
            link = self._link
            if link is None:
                return
            end = await link.run(self._on_message)
            if self._state not in _LIVE_STATES:
                return  # leave() or aclose() closed the link
            if self._terminal is not None:
                await self._fail(self._terminal)
                return
            if self._resumable(end):
                logger.warning("%s socket dropped (code %s %s); resuming", self._log,
                               end.close_code, end.reason)
                if await self._resume():
                    continue
                return
            await self._fail(end.error or error_for_close(end.close_code, end.reason))
            return

    def _resumable(self, end: LinkEnd) -> bool:
        if self.config.resume_attempts == 0:
            return False
        if end.error is not None:
            return isinstance(end.error, SendQueueFullError)
        return end.close_code in RESUMABLE_CLOSE_CODES

    async def _resume(self) -> bool:
        if self._http is None or self._joined is None:
            return False
        self._state, self._link = "resuming", None
        self._notify()
        delay = self.config.resume_backoff_s
        last: PeerClientError = HubUnreachableError("socket dropped")
        for attempt in range(1, self.config.resume_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            join = protocol.Join(token=self.config.token, resume=self._joined.resume_token or None)
            try:
                link, joined = await HubLink.open(self._http, self._link_options(), join,
                                                  log_prefix=self._log)
            except PeerClientError as exc:
                self.stats.error(exc.code)
                last = exc
                logger.info("%s resume attempt %d failed (%s)", self._log, attempt, exc.code)
                if not exc.retryable:
                    break
                continue
            self._on_resumed(link, joined)
            return True
        await self._fail(last)
        return False

    def _on_resumed(self, link: HubLink, joined: protocol.Joined) -> None:
        same = joined.resumed and joined.peer_id == self.peer_id
        self._adopt(link, joined)
        while self._held:
            link.send(self._held.popleft())
        listed = {p.peer_id: p for p in joined.peers if p.peer_id != joined.peer_id}
        if same:
            self.stats.resumes += 1
            logger.info("%s resumed", self._log)
            for peer_id in [p for p in self._remotes if p not in listed]:
                self._drop_remote(peer_id)  # left while we were away
            self._known = dict(listed)  # newcomers since will offer to us
            return
        logger.warning("%s hub started a new session; renegotiating everything", self._log)
        for peer_id in list(self._remotes):
            self._drop_remote(peer_id)
        self._known.clear()
        self._earlier.clear()
        self._greet_peers(joined)

    async def _fail(self, error: PeerClientError) -> None:
        if self._state in ("failed", "closing", "closed", "left"):
            return
        self._error, self._state = error, "failed"
        self.stats.error(error.code)
        logger.warning("%s client failed (%s): %s", self._log, error.code, error.message)
        await self._close_remotes()
        self._end_subscriptions()
        self._notify()

    # ------------------------------------------------------------------ messages

    def _on_message(self, message: protocol.ServerMessage) -> None:
        if isinstance(message, (protocol.OfferFrom, protocol.AnswerFrom, protocol.CandidateFrom)):
            self._route_signal(message)
            return
        if isinstance(message, (protocol.PeerJoined, protocol.PeerUpdated)):
            info = message.peer
            if info.peer_id != self.peer_id:
                self._known[info.peer_id] = info
        elif isinstance(message, protocol.PeerLeft):
            self._known.pop(message.peer_id, None)
            self._drop_remote(message.peer_id)
        elif isinstance(message, (protocol.Kicked, protocol.RoomEndedMsg)):
            kind = KickedError if isinstance(message, protocol.Kicked) else RoomEndedError
            self._terminal = kind(message.reason)
            if self._link is not None:  # do not wait for the hub to close: we are done
                self._spawn(self._link.aclose(), "close-link")
        elif isinstance(message, protocol.Error):
            self.stats.error(message.code)
            logger.info("%s hub error %s: %s", self._log, message.code, message.message)
        for subscription in list(self._subscribers):
            subscription.publish(message)

    def _route_signal(self, message: protocol.OfferFrom | protocol.AnswerFrom |
                      protocol.CandidateFrom) -> None:
        remote = self._remotes.get(message.from_)
        if isinstance(message, protocol.OfferFrom) and (
            remote is None or remote.state in ("failed", "closed")
        ):
            if remote is not None:
                self._drop_remote(message.from_)
            info = self._known.get(message.from_)
            remote = self._open_remote(message.from_, info.role if info else "participant",
                                       offerer=False)
        if remote is None:
            logger.debug("%s %s from unknown peer %s dropped", self._log,
                         type(message).__name__, message.from_)
            return
        remote.post(message)

    # ------------------------------------------------------------------ remote peers

    def _open_remote(self, peer_id: str, role: str, *, offerer: bool) -> RemotePeer:
        if self._local is None or self._conn_options is None or self.role is None:
            raise ClientClosedError("not joined")
        remote = RemotePeer(
            peer_id=peer_id, remote_role=role, local_role=self.role, offerer=offerer,
            polite=peer_id not in self._earlier, options=self._conn_options,
            local_media=self._local,
            stats=self.stats.remote(peer_id, role, offerer=offerer),
            send=self.send, on_change=self._on_remote_change,
            on_audio_frame=self._on_audio_frame, log_prefix=self._log,
        )
        self._remotes[peer_id] = remote
        remote.start()
        self._notify()
        return remote

    def _on_remote_change(self, remote: RemotePeer) -> None:
        if remote.state == "failed" and remote.error is not None:
            self._failures.append(remote.error)
            self.stats.error(remote.error.code)
            if self._remotes.get(remote.peer_id) is remote:
                self._drop_remote(remote.peer_id)
        self._notify()

    def _drop_remote(self, peer_id: str) -> None:
        remote = self._remotes.pop(peer_id, None)
        if remote is not None:
            self._spawn(remote.aclose(), f"drop {peer_id}")
            self._notify()

    async def _close_remotes(self) -> None:
        remotes = list(self._remotes.values())
        self._remotes.clear()
        await asyncio.gather(*(r.aclose() for r in remotes), return_exceptions=True)
        # Connections dropped earlier may still be closing in their own tasks.
        pending = list(self._tasks)
        await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------ plumbing

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{what} {self._log}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float | None) -> None:
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            pass

    def _raise_if_dead(self) -> None:
        if self._error is not None:
            raise self._error
        if self._state in ("leaving", "left", "closing", "closed"):
            raise ClientClosedError(f"client is {self._state}")
        if self._state == "new":
            raise ClientClosedError("connect() first")

    def _end_subscriptions(self) -> None:
        for subscription in list(self._subscribers):
            subscription.end()
        self._subscribers.clear()

    async def _close_http(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
