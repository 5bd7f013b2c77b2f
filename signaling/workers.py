"""Worker presence: heartbeats, and reaping the seats of workers that died.

Each worker writes its heartbeat into the sorted set ``cr:workers`` (member: worker id, score:
unix ms) every ``heartbeat_s`` and remembers the rooms it holds seats in (``cr:wrooms:{<id>}``).
Every worker also runs the reaper: a worker whose heartbeat is older than ``dead_after_s`` is
dead; one reaper claims it (``SET NX``), removes the seats it still held (only seats still bound
to it, so a peer that already resumed elsewhere keeps its seat) and hands them to the hub, which
tells the rooms ``peer-left``. A worker that shuts down cleanly marks itself dead at once; its
peers' seats are then reaped when their resume grace runs out. Worst case from ``kill -9`` to
``peer-left`` is ``dead_after_s + reap_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from .errors import HubError, Unavailable
from .store import Seat
from .tasks import cancel_all

logger = logging.getLogger(__name__)

WORKERS_KEY = "cr:workers"

Reaped = Callable[[str, list[Seat]], Awaitable[None]]


def _rooms_key(worker_id: str) -> str:
    return f"cr:wrooms:{{{worker_id}}}"


@dataclass(frozen=True)
class PresenceConfig:
    heartbeat_s: float = 2.0
    """Seconds between heartbeats."""
    dead_after_s: float = 10.0
    """A worker silent this long is dead and its peers are removed."""
    reap_interval_s: float = 2.5
    """Seconds between reaper passes (each worker runs one)."""
    resume_grace_s: float = 20.0
    """A dropped peer's seat survives its dead worker until this grace has passed."""
    reconcile_interval_s: float = 5.0
    """Seconds between reconcile passes (repairing what a Redis outage left half-done)."""


class WorkerRegistry:
    """Heartbeats of this worker and the reaper of dead ones."""

    def __init__(self, client: Any, store: Any, worker_id: str, config: PresenceConfig) -> None:
        self.client = client
        self.store = store
        self.worker_id = worker_id
        self.config = config
        self.on_reaped: Reaped | None = None
        #: Knocks (waiting-room entries) of a dead worker, removed by this worker's reaper.
        self.on_knocks_reaped: Reaped | None = None
        self.on_tick: Callable[[], Awaitable[None]] | None = None
        self._noted: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        #: Set when a heartbeat failed (Redis unreachable); the hub's tick clears it.
        self.beat_failed = False

    async def start(self, on_reaped: Reaped,
                    on_tick: Callable[[], Awaitable[None]] | None = None) -> None:
        """Start heartbeats, the reaper (reaped seats go to ``on_reaped``) and the periodic
        ``on_tick`` (the hub's upkeep)."""
        self.on_reaped = on_reaped
        self.on_tick = on_tick
        with contextlib.suppress(RedisError, OSError):
            await self._beat()
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                       asyncio.create_task(self._reaper_loop(), name="reaper"),
                       asyncio.create_task(self._tick_loop(), name="reconcile")]

    async def note_room(self, room_id: str) -> None:
        """Remember that this worker holds seats in ``room_id`` (for the reaper)."""
        if room_id in self._noted:
            return
        key = _rooms_key(self.worker_id)
        try:
            await self.client.sadd(key, room_id)
            await self.client.expire(key, int(self.config.dead_after_s * 10 + 3600))
        except (RedisError, OSError) as exc:
            raise Unavailable(f"state store unreachable: {type(exc).__name__}") from None
        self._noted.add(room_id)

    def forget_room(self, room_id: str) -> None:
        self._noted.discard(room_id)

    @property
    def rooms(self) -> set[str]:
        return set(self._noted)

    async def _beat(self) -> None:
        await self.client.zadd(WORKERS_KEY, {self.worker_id: int(time.time() * 1000)})

    async def _heartbeat_loop(self) -> None:
        # Nothing else runs in this loop, so a slow reconcile never delays a beat (a late beat
        # could get a live worker reaped).
        while True:
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                self.beat_failed = True
                logger.warning("worker=%s heartbeat failed: %s", self.worker_id, exc)
            await asyncio.sleep(self.config.heartbeat_s)

    async def _tick_loop(self) -> None:
        while self.on_tick is not None:
            await asyncio.sleep(self.config.reconcile_interval_s)
            try:
                await self.on_tick()
            except (RedisError, OSError, HubError) as exc:
                logger.warning("worker=%s reconcile failed: %s", self.worker_id, exc)

    async def _reaper_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            try:
                await self.reap_once()
            except (RedisError, OSError, HubError) as exc:
                logger.warning("worker=%s reaper pass failed: %s", self.worker_id, exc)

    async def reap_once(self) -> int:
        """One reaper pass; returns how many seats were removed."""
        cutoff = int((time.time() - self.config.dead_after_s) * 1000)
        dead = [w.decode() for w in await self.client.zrangebyscore(WORKERS_KEY, 0, cutoff)]
        removed = 0
        for worker in dead:
            if worker == self.worker_id:
                continue
            claimed = await self.client.set(f"cr:reap:{{{worker}}}", self.worker_id, nx=True,
                                            ex=max(1, int(self.config.reap_interval_s * 2)))
            if claimed:
                removed += await self._reap_worker(worker)
        return removed

    async def _reap_worker(self, worker: str) -> int:
        now_ms = int(time.time() * 1000)
        grace_ms = int(self.config.resume_grace_s * 1000)
        rooms = [r.decode() for r in await self.client.smembers(_rooms_key(worker))]
        removed = 0
        waiting = False
        for room_id in rooms:
            gone: list[Seat] = []
            for seat in await self.store.seats(room_id):
                if seat.worker_id != worker:
                    continue
                if not seat.connected and seat.detached_at is not None \
                        and seat.detached_at + grace_ms > now_ms:
                    waiting = True  # still within its resume grace: look again later
                    continue
                taken = await self.store.remove_seat(room_id, seat.peer_id, only_if_worker=worker)
                if taken is not None:
                    gone.append(taken)
            if gone:
                removed += len(gone)
                logger.info("room=%s reaped %d peers of dead worker %s", room_id, len(gone),
                            worker)
                if self.on_reaped is not None:
                    await self.on_reaped(room_id, gone)
            knocks = [entry for entry in await self.store.knocking(room_id)
                      if entry.worker_id == worker]
            taken = [entry for entry in [await self.store.unknock(room_id, k.peer_id)
                                         for k in knocks] if entry is not None]
            if taken:
                logger.info("room=%s reaped %d knocks of dead worker %s", room_id, len(taken),
                            worker)
                if self.on_knocks_reaped is not None:
                    await self.on_knocks_reaped(room_id, taken)
        if not waiting:
            await self.client.zrem(WORKERS_KEY, worker)
            await self.client.delete(_rooms_key(worker))
        return removed

    async def aclose(self) -> None:
        """Stop beating and mark this worker dead so its seats are reaped after their grace."""
        await cancel_all(self._tasks)
        self._tasks = []
        with contextlib.suppress(RedisError, OSError):
            await self.client.zadd(WORKERS_KEY, {self.worker_id: 0})
