"""Claimable jobs: the queue both the tap jobs (:mod:`signaling.tapjobs`) and the mix jobs
(:mod:`signaling.mixjobs`) are.

A job is queued at most once per *subject* (its room, its meeting: ``key(job)``) while it is
open. A worker claims it, renews its claim while it works, and completes it. A claim that is
not renewed for ``reclaim_after_s`` (its worker died) is handed to the next worker that asks;
``release`` hands it on at once (the worker is known to be gone). Every claim counts a
delivery (``job.deliveries``), so a job that keeps killing its workers can be given up.

:class:`MemoryJobs` serves one process; :class:`RedisStreamJobs` is a Redis stream with a
consumer group, so workers on any machine share the jobs and a dead worker's jobs are
reclaimed with ``XAUTOCLAIM``. The per-subject open-job marker is a key of its own
(``open_key(job)``), so a job kind can keep it in its subject's Cluster slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from redis.exceptions import ResponseError

from .redis_store import unavailable_on_redis_errors


class Claimable(Protocol):
    """What a job struct has: its id, and the claim's stream entry and delivery count (set
    when claimed)."""

    job_id: str
    entry: str
    deliveries: int


J = TypeVar("J", bound=msgspec.Struct)


def _claimed(job: J, entry: str, deliveries: int) -> J:
    return msgspec.structs.replace(job, entry=entry, deliveries=deliveries)  # type: ignore[call-arg]


class MemoryJobs(Generic[J]):
    """Jobs inside one process; ``key(job)`` names the job's subject (one open job each)."""

    def __init__(self, key: Callable[[J], str], *, reclaim_after_s: float = 10.0) -> None:
        self.key = key
        self.reclaim_after_s = reclaim_after_s
        self._open: dict[str, J] = {}  # subject -> job
        self._owner: dict[str, tuple[str, float]] = {}  # job_id -> (worker, last renew)
        self._deliveries: dict[str, int] = {}
        self._changed = asyncio.Condition()

    @staticmethod
    def _id(job: J) -> str:
        return job.job_id  # type: ignore[attr-defined, no-any-return]

    def _is_open(self, job: J) -> bool:
        current = self._open.get(self.key(job))
        return current is not None and self._id(current) == self._id(job)

    async def enqueue(self, job: J) -> bool:
        if self.key(job) in self._open:
            return False
        self._open[self.key(job)] = job
        async with self._changed:
            self._changed.notify_all()
        return True

    def _next(self, worker_id: str) -> J | None:
        now = time.monotonic()
        for job in self._open.values():
            job_id = self._id(job)
            owner = self._owner.get(job_id)
            if owner is None or now - owner[1] > self.reclaim_after_s:
                self._owner[job_id] = (worker_id, now)
                count = self._deliveries[job_id] = self._deliveries.get(job_id, 0) + 1
                return _claimed(job, job_id, count)
        return None

    async def claim(self, worker_id: str, *, timeout_s: float) -> J | None:
        deadline = time.monotonic() + timeout_s
        async with self._changed:
            while True:
                job = self._next(worker_id)
                left = deadline - time.monotonic()
                if job is not None or left <= 0:
                    return job
                try:
                    await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
                except TimeoutError:
                    pass

    async def renew(self, worker_id: str, job: J) -> bool:
        owner = self._owner.get(self._id(job))
        if owner is None or owner[0] != worker_id or not self._is_open(job):
            return False
        self._owner[self._id(job)] = (worker_id, time.monotonic())
        return True

    async def complete(self, job: J) -> None:
        if self._is_open(job):
            del self._open[self.key(job)]
        self._owner.pop(self._id(job), None)
        self._deliveries.pop(self._id(job), None)

    async def release(self, worker_id: str, job: J) -> None:
        owner = self._owner.get(self._id(job))
        if owner is not None and owner[0] == worker_id:
            del self._owner[self._id(job)]
            async with self._changed:
                self._changed.notify_all()

    async def aclose(self) -> None:
        return None


class RedisStreamJobs(Generic[J]):
    """Jobs in the Redis stream ``stream`` with the consumer group ``group``; the open-job
    marker of a job's subject is the key ``open_key(job)`` (kept ``key_ttl_s`` at most)."""

    def __init__(self, client: Any, *, job_type: type[J], stream: str, group: str,
                 open_key: Callable[[J], str], reclaim_after_s: float = 10.0,
                 key_ttl_s: int = 172_800) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.open_key = open_key
        self.reclaim_after_s = reclaim_after_s
        self.key_ttl_s = key_ttl_s
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(job_type)
        self._group_ready = False

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    @staticmethod
    def _id(job: J) -> str:
        return job.job_id  # type: ignore[attr-defined, no-any-return]

    @staticmethod
    def _entry(job: J) -> str:
        return job.entry  # type: ignore[attr-defined, no-any-return]

    @unavailable_on_redis_errors
    async def enqueue(self, job: J) -> bool:
        await self._ensure_group()
        if not await self.client.set(self.open_key(job), self._id(job), nx=True,
                                     ex=self.key_ttl_s):
            return False
        await self.client.xadd(self.stream, {"job": self._enc.encode(job)}, maxlen=100_000,
                               approximate=True)
        return True

    @unavailable_on_redis_errors
    async def claim(self, worker_id: str, *, timeout_s: float) -> J | None:
        await self._ensure_group()
        idle_ms = int(self.reclaim_after_s * 1000)
        # First a job whose worker went quiet (XAUTOCLAIM counts the delivery), then a new one.
        _, entries, _ = await self.client.xautoclaim(self.stream, self.group, worker_id,
                                                     idle_ms, "0-0", count=1)
        if not entries:
            reply = await self.client.xreadgroup(self.group, worker_id, {self.stream: ">"},
                                                 count=1, block=max(1, int(timeout_s * 1000)))
            entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            if not fields:  # deleted entry
                await self.client.xack(self.stream, self.group, entry_id)
                continue
            job = self._dec.decode(fields[b"job"])
            if await self.client.get(self.open_key(job)) != self._id(job).encode():
                await self.client.xack(self.stream, self.group, entry_id)  # completed meanwhile
                continue
            pending = await self.client.xpending_range(self.stream, self.group, entry_id,
                                                       entry_id, 1)
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            return _claimed(job, entry_id.decode(), deliveries)
        return None

    @unavailable_on_redis_errors
    async def renew(self, worker_id: str, job: J) -> bool:
        entry = self._entry(job)
        pending = await self.client.xpending_range(self.stream, self.group, entry, entry, 1)
        if not pending or pending[0]["consumer"].decode() != worker_id:
            return False  # reclaimed by another worker, or completed
        # Re-claiming our own entry (JUSTID) resets its idle time without counting a delivery.
        await self.client.xclaim(self.stream, self.group, worker_id, 0, [entry], justid=True)
        return True

    @unavailable_on_redis_errors
    async def release(self, worker_id: str, job: J) -> None:
        entry = self._entry(job)
        pending = await self.client.xpending_range(self.stream, self.group, entry, entry, 1)
        if pending and pending[0]["consumer"].decode() == worker_id:
            # Idle as if unrenewed for longer than reclaim_after_s: XAUTOCLAIM takes it next.
            await self.client.xclaim(self.stream, self.group, worker_id, 0, [entry],
                                     justid=True, idle=int(self.reclaim_after_s * 1000) + 1000)

    @unavailable_on_redis_errors
    async def complete(self, job: J) -> None:
        if self._entry(job):
            await self.client.xack(self.stream, self.group, self._entry(job))
            await self.client.xdel(self.stream, self._entry(job))
        if await self.client.get(self.open_key(job)) == self._id(job).encode():
            await self.client.delete(self.open_key(job))

    async def aclose(self) -> None:
        return None
