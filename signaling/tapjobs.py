"""Tap jobs: which rooms need a transcription tap, and which tap worker has each.

The hub enqueues one job per room whose meeting has transcription on (at most one open job per
room). A tap worker claims it, renews its claim while it serves the room, and completes it when
the room ends or empties. A claim that is not renewed for ``reclaim_after_s`` (its worker died)
is handed to the next worker that asks, so transcription continues within that bound.

``MemoryTapJobs`` serves one process (the embedded default); ``RedisTapJobs`` is a Redis stream
(``cr:tapjobs``) with a consumer group, so any number of ``connvo-rtc tap`` workers on any
machine share the jobs and a dead worker's jobs are reclaimed with ``XAUTOCLAIM``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import msgspec
from redis.exceptions import ResponseError

from .protocol import AgentSpec
from .redis_store import tag_of, unavailable_on_redis_errors


class TapJob(msgspec.Struct, frozen=True, kw_only=True):
    """One room to transcribe and/or record. ``token`` is a join token with role ``tap`` minted by the hub;
    ``started_at_ms`` is the meeting's start, the zero of every segment's ``startMs``."""

    job_id: str
    room_id: str
    meeting_id: str
    token: str
    started_at_ms: int
    #: What the server peer does in the room: transcribe, record, or both. (Jobs queued
    #: before recording existed carry neither field: they transcribe.)
    transcription: bool = True
    recording: bool = False
    #: The meeting's AI persona: the server peer joins as this ``agent`` participant (role
    #: ``agent``: a seat, its name shown, an audio track to everyone) instead of the hidden
    #: ``tap``, and still transcribes/records as the fields above say.
    agent: AgentSpec | None = None
    #: Stream entry id (Redis) or claim counter (memory); set when claimed.
    entry: str = ""


class TapJobs(Protocol):
    async def enqueue(self, job: TapJob) -> bool:
        """Queue ``job`` unless its room already has an open job; True when queued."""

    async def claim(self, worker_id: str, *, timeout_s: float) -> TapJob | None:
        """A new job, or one whose worker stopped renewing it; ``None`` after ``timeout_s``."""

    async def renew(self, worker_id: str, job: TapJob) -> bool:
        """Keep the claim alive; False when it was lost (reclaimed by another worker)."""

    async def complete(self, job: TapJob) -> None:
        """The room ended or emptied: the job is done and the room may get a new one later."""

    async def release(self, worker_id: str, job: TapJob) -> None:
        """``worker_id`` is known to be gone (its process died): the next claim may take
        ``job`` at once rather than after ``reclaim_after_s``. Nothing if another worker holds
        it by now."""

    async def aclose(self) -> None: ...


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(TapJob)


class MemoryTapJobs:
    """Tap jobs inside one process."""

    def __init__(self, *, reclaim_after_s: float = 10.0) -> None:
        self.reclaim_after_s = reclaim_after_s
        self._open: dict[str, TapJob] = {}  # room_id -> job
        self._owner: dict[str, tuple[str, float]] = {}  # job_id -> (worker, last renew)
        self._changed = asyncio.Condition()

    async def enqueue(self, job: TapJob) -> bool:
        if job.room_id in self._open:
            return False
        self._open[job.room_id] = job
        async with self._changed:
            self._changed.notify_all()
        return True

    def _next(self, worker_id: str) -> TapJob | None:
        now = time.monotonic()
        for job in self._open.values():
            owner = self._owner.get(job.job_id)
            if owner is None or now - owner[1] > self.reclaim_after_s:
                self._owner[job.job_id] = (worker_id, now)
                return msgspec.structs.replace(job, entry=job.job_id)
        return None

    async def claim(self, worker_id: str, *, timeout_s: float) -> TapJob | None:
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

    async def renew(self, worker_id: str, job: TapJob) -> bool:
        owner = self._owner.get(job.job_id)
        if owner is None or owner[0] != worker_id or job.room_id not in self._open:
            return False
        self._owner[job.job_id] = (worker_id, time.monotonic())
        return True

    async def complete(self, job: TapJob) -> None:
        if self._open.get(job.room_id, None) is not None \
                and self._open[job.room_id].job_id == job.job_id:
            del self._open[job.room_id]
        self._owner.pop(job.job_id, None)

    async def release(self, worker_id: str, job: TapJob) -> None:
        owner = self._owner.get(job.job_id)
        if owner is not None and owner[0] == worker_id:
            del self._owner[job.job_id]
            async with self._changed:
                self._changed.notify_all()

    async def aclose(self) -> None:
        return None


STREAM = "cr:tapjobs"
GROUP = "taps"


def _open_key(room_id: str) -> str:
    return f"cr:{{{tag_of(room_id)}}}:tapjob"


class RedisTapJobs:
    """Tap jobs in a Redis stream with a consumer group (works on a Cluster: the stream is one
    key; the per-room open-job marker lives in the room's slot)."""

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
    async def enqueue(self, job: TapJob) -> bool:
        await self._ensure_group()
        if not await self.client.set(_open_key(job.room_id), job.job_id, nx=True,
                                     ex=self.key_ttl_s):
            return False
        await self.client.xadd(STREAM, {"job": _enc.encode(job)}, maxlen=100_000,
                               approximate=True)
        return True

    @unavailable_on_redis_errors
    async def claim(self, worker_id: str, *, timeout_s: float) -> TapJob | None:
        await self._ensure_group()
        idle_ms = int(self.reclaim_after_s * 1000)
        # First a job whose worker went quiet, then a new one.
        _, stale, _ = await self.client.xautoclaim(STREAM, GROUP, worker_id, idle_ms, "0-0",
                                                   count=1)
        entries = stale
        if not entries:
            block = max(1, int(timeout_s * 1000))
            reply = await self.client.xreadgroup(GROUP, worker_id, {STREAM: ">"}, count=1,
                                                 block=block)
            entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            if not fields:  # deleted entry
                await self.client.xack(STREAM, GROUP, entry_id)
                continue
            job = _dec.decode(fields[b"job"])
            if await self.client.get(_open_key(job.room_id)) != job.job_id.encode():
                await self.client.xack(STREAM, GROUP, entry_id)  # completed meanwhile
                continue
            return msgspec.structs.replace(job, entry=entry_id.decode())
        return None

    @unavailable_on_redis_errors
    async def renew(self, worker_id: str, job: TapJob) -> bool:
        pending = await self.client.xpending_range(STREAM, GROUP, job.entry, job.entry, 1)
        if not pending or pending[0]["consumer"].decode() != worker_id:
            return False  # reclaimed by another worker, or completed
        # Re-claiming our own entry resets its idle time: the claim stays ours.
        await self.client.xclaim(STREAM, GROUP, worker_id, 0, [job.entry], justid=True)
        return True

    @unavailable_on_redis_errors
    async def release(self, worker_id: str, job: TapJob) -> None:
        pending = await self.client.xpending_range(STREAM, GROUP, job.entry, job.entry, 1)
        if pending and pending[0]["consumer"].decode() == worker_id:
            # Idle as if unrenewed for longer than reclaim_after_s: XAUTOCLAIM takes it next.
            await self.client.xclaim(STREAM, GROUP, worker_id, 0, [job.entry], justid=True,
                                     idle=int(self.reclaim_after_s * 1000) + 1000)

    @unavailable_on_redis_errors
    async def complete(self, job: TapJob) -> None:
        if job.entry:
            await self.client.xack(STREAM, GROUP, job.entry)
            await self.client.xdel(STREAM, job.entry)
        if await self.client.get(_open_key(job.room_id)) == job.job_id.encode():
            await self.client.delete(_open_key(job.room_id))

    async def aclose(self) -> None:
        return None
