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

from typing import Any, Protocol

import msgspec

from .jobqueue import MemoryJobs, RedisStreamJobs


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


STREAM = "cr:mixjobs"
GROUP = "mixers"


def _open_key(meeting_id: str) -> str:
    return f"cr:mixjob:{meeting_id}"


class MemoryMixJobs(MemoryJobs[MixJob]):
    """Mix jobs inside one process (one open job per meeting)."""

    def __init__(self, *, reclaim_after_s: float = 10.0) -> None:
        super().__init__(lambda job: job.meeting_id, reclaim_after_s=reclaim_after_s)


class RedisMixJobs(RedisStreamJobs[MixJob]):
    """Mix jobs in a Redis stream with a consumer group (one key for the stream; the
    per-meeting open-job marker is a key of its own, so it works on a Cluster too)."""

    def __init__(self, client: Any, *, reclaim_after_s: float = 10.0,
                 key_ttl_s: int = 172_800) -> None:
        super().__init__(client, job_type=MixJob, stream=STREAM, group=GROUP,
                         open_key=lambda job: _open_key(job.meeting_id),
                         reclaim_after_s=reclaim_after_s, key_ttl_s=key_ttl_s)
