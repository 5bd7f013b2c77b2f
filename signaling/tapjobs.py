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

from typing import Any, Protocol

import msgspec

from .jobqueue import MemoryJobs, RedisStreamJobs
from .protocol import AgentSpec
from .redis_store import tag_of


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
    #: Stream entry id (Redis) or job id (memory); set when claimed.
    entry: str = ""
    #: How many times the job has been handed out, this claim included; set when claimed.
    deliveries: int = 0


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


STREAM = "cr:tapjobs"
GROUP = "taps"


def _open_key(room_id: str) -> str:
    return f"cr:{{{tag_of(room_id)}}}:tapjob"


class MemoryTapJobs(MemoryJobs[TapJob]):
    """Tap jobs inside one process (one open job per room)."""

    def __init__(self, *, reclaim_after_s: float = 10.0) -> None:
        super().__init__(lambda job: job.room_id, reclaim_after_s=reclaim_after_s)


class RedisTapJobs(RedisStreamJobs[TapJob]):
    """Tap jobs in a Redis stream with a consumer group (works on a Cluster: the stream is one
    key; the per-room open-job marker lives in the room's slot)."""

    def __init__(self, client: Any, *, reclaim_after_s: float = 10.0,
                 key_ttl_s: int = 172_800) -> None:
        super().__init__(client, job_type=TapJob, stream=STREAM, group=GROUP,
                         open_key=lambda job: _open_key(job.room_id),
                         reclaim_after_s=reclaim_after_s, key_ttl_s=key_ttl_s)
