"""Mix jobs: the recordings to mix after their meeting, and which hub worker mixes each.

The hub worker that ends a recorded room queues one job per meeting. Every hub worker runs a
:class:`~signaling.mixer.Mixer` that claims jobs (``recording.mix_concurrency`` at a time, 1 by
default: the mix is CPU work), renews its claim while the mix runs and completes the job once
the mix is stored (or its failure recorded). A claim not renewed for ``reclaim_after_s`` (its
worker died, or was killed with its mix child) goes to the next worker that asks; a job
delivered ``max_attempts`` times without completing is given up as ``failed``.

Same model as the tap jobs (:mod:`signaling.tapjobs`): ``MemoryMixJobs`` for one process,
``RedisMixJobs`` a Redis stream (``cr:mixjobs``) with a consumer group and ``XAUTOCLAIM``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import msgspec
from redis.exceptions import ResponseError

from .redis_store import unavailable_on_redis_errors


class MixJob(msgspec.Struct, frozen=True, kw_only=True):
    """One meeting to mix: its files' zero (``started_at_ms``, the meeting's start) and the
    end of the room (the mix's length is ``ended_at_ms - started_at_ms``)."""

    job_id: str
    meeting_id: str
    room_id: str
    started_at_ms: int
    ended_at_ms: int
    #: Stream entry id (Redis) or job id (memory); set when claimed.
    entry: str = ""
    #: How many times the job has been handed out, this claim included; set when claimed.
    deliveries: int = 0


class MixJobs(Protocol):
    async def enqueue(self, job: MixJob) -> bool:
        """Queue ``job`` unless its meeting already has an open job; True when queued."""

    async def claim(self, worker_id: str, *, timeout_s: float) -> MixJob | None:
        """A new job, or one whose worker stopped renewing it; ``None`` after ``timeout_s``."""

    async def renew(self, worker_id: str, job: MixJob) -> bool:
        """Keep the claim alive; False when it was lost (reclaimed by another worker)."""

    async def complete(self, job: MixJob) -> None:
        """The mix is stored (or failed for good): the job is done."""

    async def release(self, worker_id: str, job: MixJob) -> None:
        """``worker_id`` stops (shutdown): the next claim may take ``job`` at once."""

    async def aclose(self) -> None: ...


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(MixJob)


class MemoryMixJobs:
    """Mix jobs inside one process."""

    def __init__(self, *, reclaim_after_s: float = 10.0) -> None:
        self.reclaim_after_s = reclaim_after_s
        self._open: dict[str, MixJob] = {}  # meeting_id -> job
        self._owner: dict[str, tuple[str, float]] = {}  # job_id -> (worker, last renew)
        self._deliveries: dict[str, int] = {}
        self._changed = asyncio.Condition()

    async def enqueue(self, job: MixJob) -> bool:
        if job.meeting_id in self._open:
            return False
        self._open[job.meeting_id] = job
        async with self._changed:
            self._changed.notify_all()
        return True

    def _next(self, worker_id: str) -> MixJob | None:
        now = time.monotonic()
        for job in self._open.values():
            owner = self._owner.get(job.job_id)
            if owner is None or now - owner[1] > self.reclaim_after_s:
                self._owner[job.job_id] = (worker_id, now)
                count = self._deliveries[job.job_id] = self._deliveries.get(job.job_id, 0) + 1
                return msgspec.structs.replace(job, entry=job.job_id, deliveries=count)
        return None

    async def claim(self, worker_id: str, *, timeout_s: float) -> MixJob | None:
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

    async def renew(self, worker_id: str, job: MixJob) -> bool:
        owner = self._owner.get(job.job_id)
        open_job = self._open.get(job.meeting_id)
        if owner is None or owner[0] != worker_id or open_job is None \
                or open_job.job_id != job.job_id:
            return False
        self._owner[job.job_id] = (worker_id, time.monotonic())
        return True

    async def complete(self, job: MixJob) -> None:
        open_job = self._open.get(job.meeting_id)
        if open_job is not None and open_job.job_id == job.job_id:
            del self._open[job.meeting_id]
        self._owner.pop(job.job_id, None)
        self._deliveries.pop(job.job_id, None)

    async def release(self, worker_id: str, job: MixJob) -> None:
        owner = self._owner.get(job.job_id)
        if owner is not None and owner[0] == worker_id:
            del self._owner[job.job_id]
            async with self._changed:
                self._changed.notify_all()

    async def aclose(self) -> None:
        return None


STREAM = "cr:mixjobs"
GROUP = "mixers"


def _open_key(meeting_id: str) -> str:
    return f"cr:mixjob:{meeting_id}"


class RedisMixJobs:
    """Mix jobs in a Redis stream with a consumer group (one key for the stream; the
    per-meeting open-job marker is a key of its own, so it works on a Cluster too)."""

    def __init__(self, client: Any, *, reclaim_after_s: float = 10.0,
                 key_ttl_s: int = 172_800) -> None:
        self.client = client
        self.reclaim_after_s = reclaim_after_s
        self.key_ttl_s = key_ttl_s
        self._group_ready = False

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    @unavailable_on_redis_errors
    async def enqueue(self, job: MixJob) -> bool:
        await self._ensure_group()
        if not await self.client.set(_open_key(job.meeting_id), job.job_id, nx=True,
                                     ex=self.key_ttl_s):
            return False
        await self.client.xadd(STREAM, {"job": _enc.encode(job)}, maxlen=100_000,
                               approximate=True)
        return True

    @unavailable_on_redis_errors
    async def claim(self, worker_id: str, *, timeout_s: float) -> MixJob | None:
        await self._ensure_group()
        idle_ms = int(self.reclaim_after_s * 1000)
        # First a job whose worker went quiet (XAUTOCLAIM counts the delivery), then a new one.
        _, entries, _ = await self.client.xautoclaim(STREAM, GROUP, worker_id, idle_ms, "0-0",
                                                     count=1)
        if not entries:
            reply = await self.client.xreadgroup(GROUP, worker_id, {STREAM: ">"}, count=1,
                                                 block=max(1, int(timeout_s * 1000)))
            entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            if not fields:  # deleted entry
                await self.client.xack(STREAM, GROUP, entry_id)
                continue
            job = _dec.decode(fields[b"job"])
            if await self.client.get(_open_key(job.meeting_id)) != job.job_id.encode():
                await self.client.xack(STREAM, GROUP, entry_id)  # completed meanwhile
                continue
            pending = await self.client.xpending_range(STREAM, GROUP, entry_id, entry_id, 1)
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            return msgspec.structs.replace(job, entry=entry_id.decode(), deliveries=deliveries)
        return None

    @unavailable_on_redis_errors
    async def renew(self, worker_id: str, job: MixJob) -> bool:
        pending = await self.client.xpending_range(STREAM, GROUP, job.entry, job.entry, 1)
        if not pending or pending[0]["consumer"].decode() != worker_id:
            return False
        # JUSTID: resets the idle time without counting a delivery.
        await self.client.xclaim(STREAM, GROUP, worker_id, 0, [job.entry], justid=True)
        return True

    @unavailable_on_redis_errors
    async def release(self, worker_id: str, job: MixJob) -> None:
        pending = await self.client.xpending_range(STREAM, GROUP, job.entry, job.entry, 1)
        if pending and pending[0]["consumer"].decode() == worker_id:
            await self.client.xclaim(STREAM, GROUP, worker_id, 0, [job.entry], justid=True,
                                     idle=int(self.reclaim_after_s * 1000) + 1000)

    @unavailable_on_redis_errors
    async def complete(self, job: MixJob) -> None:
        if job.entry:
            await self.client.xack(STREAM, GROUP, job.entry)
            await self.client.xdel(STREAM, job.entry)
        if await self.client.get(_open_key(job.meeting_id)) == job.job_id.encode():
            await self.client.delete(_open_key(job.meeting_id))

    async def aclose(self) -> None:
        return None
