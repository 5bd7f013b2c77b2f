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

This module is the app-facing object: its lifecycle, sending, waiting and the messages feed.
The parts it is made of: the seat at the hub and the resume loop in :mod:`media.session` (over
the socket in :mod:`media.hublink`), the connections to the other peers in :mod:`media.mesh`,
one connection's negotiation in :mod:`media.connection`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Self

from signaling import protocol

from .config import PeerClientConfig
from .connection import AudioFrameCallback, EncodedAudioCallback, RemotePeer
from .errors import (
    ClientClosedError,
    MediaTimeoutError,
    PeerClientError,
)
from .events import Subscription
from .local import LocalMedia
from .mesh import Mesh
from .plan import SENDING_ROLES
from .session import HubSession
from .sources import open_audio_source
from .stats import ClientSnapshot, ClientStats

__all__ = ["PeerClient", "PeerClientConfig"]  # PeerClientConfig lives in media.config

logger = logging.getLogger(__name__)

_LIVE_STATES = ("joined", "resuming")


class PeerClient:
    """A headless WebRTC peer speaking the hub's protocol. Single use: ``connect()`` once,
    ``aclose()`` (idempotent) when done; ``async with`` does both.

    ``on_audio_frame(peer_id, frame)`` receives every decoded audio frame (the tap's input); it
    runs on the event loop and must return quickly (hand frames to a bounded queue).
    ``on_encoded_audio(peer_id, frame)`` receives every *encoded* audio frame before decoding
    (the recorder's input, :func:`~media.receive.tee_encoded`); with ``decode_audio=False``
    nothing is decoded at all. ``on_encoded_video(peer_id, frame)`` the same for video (VP8
    frames, each with a ``request_keyframe``); with ``decode_video=False`` none is decoded.

    States: ``new`` -> ``connecting`` -> ``joined`` (<-> ``resuming``) -> ``leaving`` -> ``left``;
    ``failed`` after a fatal error (see :attr:`error`); ``closed`` after :meth:`aclose`.
    """

    def __init__(
        self, config: PeerClientConfig, *, on_audio_frame: AudioFrameCallback | None = None,
        on_encoded_audio: EncodedAudioCallback | None = None,
        on_encoded_video: EncodedAudioCallback | None = None,
    ) -> None:
        self.config = config
        #: Timings, errors and per-remote-peer records (:meth:`snapshot` for a frozen copy).
        self.stats = ClientStats()
        self._state = "new"
        self._error: PeerClientError | None = None
        self._local: LocalMedia | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        # Every background task but the session's runs here, whoever started it (the session
        # closing a link after a verdict, the mesh closing a dropped connection): one owner
        # cancels and awaits them all.
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscribers: set[Subscription] = set()
        self._changed = asyncio.Event()
        self._session = HubSession(
            config, self.stats, on_message=self._on_message, on_resuming=self._on_resuming,
            on_resumed=self._on_resumed, spawn=self._spawn,
        )
        self._mesh = Mesh(
            config, self.stats, send=self.send, on_change=self._notify, spawn=self._spawn,
            on_audio_frame=on_audio_frame, on_encoded_audio=on_encoded_audio,
            on_encoded_video=on_encoded_video,
        )

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
        return self._session.joined

    @property
    def peer_id(self) -> str | None:
        joined = self._session.joined
        return joined.peer_id if joined else None

    @property
    def room_id(self) -> str | None:
        joined = self._session.joined
        return joined.room_id if joined else None

    @property
    def role(self) -> str | None:
        joined = self._session.joined
        return joined.role if joined else None

    @property
    def remote_peers(self) -> Mapping[str, RemotePeer]:
        """Open connections by remote peer id (read-only view)."""
        return self._mesh.remotes

    @property
    def room_peers(self) -> Mapping[str, protocol.PeerInfo]:
        """Other peers in the room as last announced by the hub (read-only view)."""
        return self._mesh.room_peers

    @property
    def _log(self) -> str:
        return self._session.log_prefix

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
            link, joined = await self._session.open()
        except PeerClientError as exc:
            self.stats.error(exc.code)
            self._error, self._state = exc, "failed"
            logger.info("%s join failed (%s): %s", self._log, exc.code, exc.message)
            await self._session.aclose()
            raise
        except BaseException:
            self._state = "failed"
            await self._session.aclose()
            raise
        self._seat(joined)
        logger.info("%s joined as %s with %d peers (ws %.3f s, join %.3f s)", self._log,
                    joined.role, len(joined.peers), link.connect_s, link.join_s)
        self._session_task = asyncio.get_running_loop().create_task(
            self._run_session(), name=f"hub-session {self._log}"
        )
        self._mesh.greet(joined)
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
        await self._session.leave()
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
        await self._session.aclose()
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
            self._session.hold(message)
            return
        link = self._session.link
        if self._state != "joined" or link is None:
            raise ClientClosedError(f"cannot send in state {self._state!r}")
        link.send(message)

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
        self._mesh.apply_media()
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
                    if self._mesh.connected(peer_count):
                        return
                    await self._wait_change(None)
        except TimeoutError:
            raise MediaTimeoutError(
                f"{self._log}: remote peers {self._mesh.states()} "
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
                    missing = self._mesh.missing_audio(wanted)
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
        await self._mesh.collect_stats()
        return self.stats.snapshot(self._state)

    # ------------------------------------------------------------------ session events

    def _seat(self, joined: protocol.Joined) -> None:
        """Joined (or rejoined) as ``joined``: the mesh opens connections under this seat."""
        self._state = "joined"
        self._mesh.seat(joined, self._local, self._log)
        self._notify()

    def _announce_media(self) -> None:
        if self._local is None or self.role not in SENDING_ROLES or self._state != "joined":
            return
        try:
            self.send(protocol.Media(audio=self._local.audio_enabled,
                                     video=self._local.video_enabled))
        except PeerClientError as exc:
            logger.info("%s media frame not sent: %s", self._log, exc.message)

    async def _run_session(self) -> None:
        error = await self._session.run()
        if error is not None:
            await self._fail(error)

    def _on_resuming(self) -> None:
        self._state = "resuming"
        self._notify()

    def _on_resumed(self, joined: protocol.Joined, same_seat: bool) -> None:
        self._seat(joined)
        if same_seat:
            self._mesh.resumed(joined)
        else:
            self._mesh.restart(joined)

    async def _fail(self, error: PeerClientError) -> None:
        if self._state in ("failed", "closing", "closed", "left"):
            return
        self._error, self._state = error, "failed"
        self.stats.error(error.code)
        logger.warning("%s client failed (%s): %s", self._log, error.code, error.message)
        await self._close_remotes()
        self._end_subscriptions()
        self._notify()

    def _on_message(self, message: protocol.ServerMessage) -> None:
        if isinstance(message, (protocol.OfferFrom, protocol.AnswerFrom, protocol.CandidateFrom)):
            self._mesh.route(message)
            return
        if isinstance(message, (protocol.PeerJoined, protocol.PeerUpdated)):
            self._mesh.peer_seen(message.peer)
        elif isinstance(message, protocol.PeerLeft):
            self._mesh.peer_left(message.peer_id)
        elif isinstance(message, protocol.Error):
            self.stats.error(message.code)
            logger.info("%s hub error %s: %s", self._log, message.code, message.message)
        # kicked and room-ended reach us too, after the session noted them (it will not resume)
        for subscription in list(self._subscribers):
            subscription.publish(message)

    # ------------------------------------------------------------------ plumbing

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{what} {self._log}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_remotes(self) -> None:
        await self._mesh.close_all()
        # Connections dropped earlier may still be closing in their own tasks.
        pending = list(self._tasks)
        await asyncio.gather(*pending, return_exceptions=True)

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
