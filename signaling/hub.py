"""The hub of one worker: its sockets, and the parts that handle what they send.

Each concept has its own module, and the hub wires them together and dispatches messages:

- :mod:`~signaling.admission` — ``join``: token, room, capacity, the ``joined`` frame;
- :mod:`~signaling.routing` — the routing view and relay, same worker and across workers;
- :mod:`~signaling.resume` — grace timers of dropped seats, ``join {resume}``;
- :mod:`~signaling.lifecycle` — leave, kick, end, empty rooms, reconcile;
- :mod:`~signaling.media_state`, :mod:`~signaling.chat`, :mod:`~signaling.transcripts`.

State that other workers must see lives in the :class:`~signaling.store.Store`; frames for peers
on other workers go through the :class:`~signaling.bus.Bus`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import protocol as p
from .admission import Admission, IceServersFor
from .bus import Bus
from .chat import Chat
from .codes import Close, ErrorCode
from .deadlines import Deadlines
from .errors import BadRequest, Forbidden, HubError
from .lifecycle import RoomLifecycle
from .media_state import MediaFlags
from .metrics import Metrics
from .resume import Resume
from .routing import Router
from .settings import Settings
from .store import Store
from .tapjobs import TapJobs
from .tasks import TaskSet, Timers
from .tokens import TokenService
from .transcripts import Transcripts
from .waiting import WaitingRoom
from .webhooks import NO_WEBHOOKS, Webhooks
from .workers import WorkerRegistry

if TYPE_CHECKING:
    from .client_socket import ClientSocket

logger = logging.getLogger(__name__)


class Hub:
    """Everything one worker does for its websocket peers."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        bus: Bus,
        tokens: TokenService,
        ice_servers_for: IceServersFor,
        metrics: Metrics,
        worker_id: str,
        tap_jobs: TapJobs | None = None,
        registry: WorkerRegistry | None = None,
        webhooks: Webhooks = NO_WEBHOOKS,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.tokens = tokens
        self.metrics = metrics
        self.worker_id = worker_id
        #: Heartbeats and the dead-worker reaper (None: state is not shared).
        self.registry = registry
        self.router = Router(worker_id=worker_id, store=store, bus=bus, metrics=metrics)
        self.transcripts = Transcripts(store=store, router=self.router, tokens=tokens,
                                       tap_jobs=tap_jobs,
                                       token_ttl_s=settings.auth.max_token_ttl_s)
        grace = Timers("resume-grace", logger=logger)
        self.lifecycle = RoomLifecycle(rooms=settings.rooms, store=store, router=self.router,
                                       grace=grace, transcripts=self.transcripts,
                                       registry=registry, webhooks=webhooks)
        self.resume = Resume(rooms=settings.rooms, store=store, router=self.router, grace=grace,
                             lifecycle=self.lifecycle)
        self.waiting = WaitingRoom(rooms=settings.rooms, store=store, router=self.router,
                                   registry=registry)
        if registry is not None:
            registry.on_knocks_reaped = self.waiting.reaped
        self.deadlines = Deadlines(rooms=settings.rooms, store=store, router=self.router,
                                   end_room=self.lifecycle.end_room)
        self.lifecycle.deadlines = self.deadlines
        self.admission = Admission(store=store, router=self.router, tokens=tokens,
                                   ice_servers_for=ice_servers_for, metrics=metrics,
                                   resume=self.resume, lifecycle=self.lifecycle,
                                   transcripts=self.transcripts, registry=registry,
                                   waiting=self.waiting, deadlines=self.deadlines,
                                   webhooks=webhooks)
        self.waiting.give_seat = self.admission.seat
        self.router.on_admit = self.waiting.admitted
        self.media = MediaFlags(store=store, router=self.router)
        self.chat = Chat(router=self.router, max_chars=settings.rooms.chat_max_chars)
        self._sockets: set[ClientSocket] = set()  # every open socket, joined or not
        self._cleanups = TaskSet(f"hub {worker_id}", logger=logger)  # closed sockets detaching
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.bus.start(self.worker_id, self.router.on_envelope)

    @property
    def closing(self) -> bool:
        """True once shutdown started."""
        return self._closed

    @property
    def socket_count(self) -> int:
        return len(self._sockets)

    @property
    def peer_count(self) -> int:
        return self.router.peer_count

    @property
    def room_count(self) -> int:
        return self.router.room_count

    def track(self, conn: ClientSocket) -> None:
        self._sockets.add(conn)

    def sockets(self) -> list[ClientSocket]:
        return list(self._sockets)

    def spawn_cleanup(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a closed socket's cleanup (leave or detach); shutdown waits for these."""
        self._cleanups.spawn(coro, "socket cleanup")

    async def disconnected(self, conn: ClientSocket) -> None:
        """A socket closed: forget it, and keep its seat for resume (unless it left); a
        knocker's knock ends."""
        self._sockets.discard(conn)
        if conn.waiting:
            await self.waiting.gone(conn)
            return
        await self.resume.disconnected(conn)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Staged shutdown: tell every client we are going away (1001), wait for the writers
        with a timeout, then cancel timers. Peers keep their seats for the resume grace period
        so they can resume on another worker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.resume.grace.close()
        self.lifecycle.empty.close()
        self.waiting.timers.close()
        sockets = list(self._sockets)
        logger.info("shutdown: closing %d websockets with 1001", len(sockets))
        for conn in sockets:
            conn.close_soon(Close.GOING_AWAY, "server shutting down")
        await asyncio.gather(*(c.drain(timeout) for c in sockets), return_exceptions=True)
        for conn in sockets:  # whoever did not answer the close in time
            conn.abort()
        await self._cleanups.wait(timeout)  # the closed sockets' seats are detached (kept)
        await self.resume.grace.aclose()
        await self.waiting.aclose()
        await self.deadlines.aclose()
        await self.lifecycle.aclose()
        await self._cleanups.aclose()
        logger.info("shutdown: hub closed")

    async def tick(self) -> None:
        """The periodic upkeep (see :meth:`RoomLifecycle.tick`)."""
        await self.lifecycle.tick(self.resume)

    # ------------------------------------------------------------------ messages

    async def dispatch(self, conn: ClientSocket, msg: p.ClientMessage) -> None:
        """Handle one message of a joined peer; :class:`HubError` becomes an ``error`` frame."""
        if conn.waiting:
            await self._dispatch_waiting(conn, msg)
        elif isinstance(msg, (p.Offer, p.Answer, p.Candidate)):
            self.router.relay(conn, msg)
        elif isinstance(msg, p.Ping):
            conn.send(p.encode(p.Pong(ts=msg.ts)))
        elif isinstance(msg, p.Media):
            await self.media.update(conn, msg)
        elif isinstance(msg, p.Chat):
            await self.chat.send(conn, msg)
        elif isinstance(msg, p.Kick):
            await self.lifecycle.kick(conn.room_id, msg.peer_id, by=conn)
        elif isinstance(msg, p.AskMute):
            if conn.role != "host":
                raise Forbidden("only the host can ask someone to mute")
            self.router.ask_mute(conn, msg.peer_id)
        elif isinstance(msg, p.End):
            if conn.role != "host":
                raise Forbidden("only the host can end the room")
            await self.lifecycle.end_room(conn.room_id, "ended by host")
        elif isinstance(msg, p.Leave):
            if msg.closing:
                # Closed or reloaded, the page cannot tell: when its socket goes (the browser
                # closes it as the page unloads) the seat is kept briefly, for a reload.
                conn.page_closing = True
            else:
                await self.lifecycle.leave(conn, "left")
        elif isinstance(msg, (p.Admit, p.Deny)):
            await self.waiting.answer(conn, msg)
        elif isinstance(msg, (p.TranscriptIn, p.TranscriptStatusIn)):
            await self.transcripts.accept(conn, msg)
        elif isinstance(msg, p.RecordingIn):
            await self.transcripts.recording(conn, msg)
        elif isinstance(msg, p.Join):
            raise BadRequest("already joined", code=ErrorCode.ALREADY_JOINED)

    async def _dispatch_waiting(self, conn: ClientSocket, msg: p.ClientMessage) -> None:
        """A knocker (waiting room) may only ``ping`` and ``leave``."""
        if isinstance(msg, p.Ping):
            conn.send(p.encode(p.Pong(ts=msg.ts)))
        elif isinstance(msg, p.Leave):
            await self.waiting.leave(conn)
        elif isinstance(msg, p.Join):
            raise BadRequest("already joined", code=ErrorCode.ALREADY_JOINED)
        else:
            raise BadRequest(f"{p.message_type(msg)}: wait until a host lets you in",
                             code=ErrorCode.WAITING)

    def send_error(self, conn: ClientSocket, exc: HubError) -> None:
        self.metrics.errors.labels(code=exc.code).inc()
        conn.send(p.encode(p.Error(code=exc.code, message=exc.message, retryable=exc.retryable)))
