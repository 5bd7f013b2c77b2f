"""The after-meeting mix, as a durable job (:mod:`signaling.mixjobs`) any hub worker can do.

Every hub worker runs one :class:`Mixer`: ``concurrency`` loops (1 by default: bounded CPU)
that claim a job, renew the claim every third of ``reclaim_after_s`` while the mix runs, and
complete it once the mix is stored. For one meeting it:

1. waits until no track is being written (the server peer commits its tracks as it leaves
   the ended room), or the unfinished ones are stale (``stale_after_s``: their recorder died);
2. fetches the committed tracks and the dead recorders' files into a scratch folder (in place
   for a directory; downloaded from S3);
3. runs ``python -m media.tap.mixdown`` as a child: ``nice`` 10, one codec thread, an
   ``RLIMIT_CPU``, and killed with its parent (``PR_SET_PDEATHSIG``: a worker killed mid-mix
   leaves no orphan writing);
   When video was recorded the same child then makes the composite video
   (``--composite``, ``--video USER PATH``: :mod:`media.tap.composite`), its CPU limit grown by
   2 s per second of meeting;
4. stores the dead recorders' files with the extents the mix found (salvage), then the
   composite (``composite.webm``), then the mix (``mix.ogg``: its presence means ``ready``),
   and emits ``recording.ready``.

A mix that fails (the child exits non-zero or hits its CPU limit; a committed track of which
nothing decodes: the mix would leave a participant out) is recorded in the storage (:meth:`~signaling.recording_storage.RecordingStorage.mark_failed`), logged with the
child's last words, and the job completed: every worker's ``getRecording`` says ``failed``. A
worker that dies mid-mix stops renewing: another worker redoes the mix from the start (its
output goes to a scratch file of its own, so two attempts never write one file); a mix child
killed from outside (SIGKILL: an operator, the OOM killer) is tried again the same way. A job handed
out ``max_attempts`` times is given up and recorded as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from .mixjobs import MixJob, MixJobs
from .recording_storage import RecordingStorage, TrackMeta, age_s
from .tasks import TaskSet
from .webhooks import NO_WEBHOOKS, Webhooks

logger = logging.getLogger(__name__)

MIX_NAME = "mix.ogg"
MIX_MIME = "audio/ogg; codecs=opus"
COMPOSITE_NAME = "composite.webm"
COMPOSITE_MIME = "video/webm; codecs=vp8,opus"
#: Made after the meeting, not by a recorder: never a dead recorder's file to salvage.
AFTER_MEETING = (MIX_NAME, COMPOSITE_NAME)
_POLL_S = 1.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The mix child gets SIGKILL when the worker that started it dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class MixInterrupted(Exception):
    """The mix child was killed from outside: the mix is tried again, not failed."""


class Mixer:
    """Claims mix jobs from ``jobs`` and mixes them into ``storage``. :meth:`aclose` is
    idempotent; a mix cut short by it is released to another worker."""

    def __init__(self, storage: RecordingStorage, jobs: MixJobs, *, worker_id: str,
                 webhooks: Webhooks = NO_WEBHOOKS, concurrency: int = 1, cpu_s: int = 600,
                 stale_after_s: float = 60.0, reclaim_after_s: float = 10.0,
                 max_attempts: int = 5, claim_timeout_s: float = 1.0) -> None:
        self.storage = storage
        self.jobs = jobs
        self.worker_id = worker_id
        self.webhooks = webhooks
        self.concurrency = concurrency
        self.cpu_s = cpu_s
        self.stale_after_s = stale_after_s
        self.renew_every_s = reclaim_after_s / 3
        self.max_attempts = max_attempts
        self.claim_timeout_s = claim_timeout_s
        self._tasks = TaskSet(f"mixer {worker_id}", logger=logger)
        self._started = False
        #: Meetings being mixed here now; mixes done / failed since start.
        self.mixing: set[str] = set()
        self.done = 0
        self.failed = 0

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for n in range(self.concurrency):
            self._tasks.spawn(self._loop(), f"mix loop {n}")

    async def aclose(self) -> None:
        await self._tasks.aclose()

    async def _loop(self) -> None:
        backoff = 0.5
        while True:
            try:
                job = await self.jobs.claim(self.worker_id, timeout_s=self.claim_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the queue (Redis) may be down a while
                logger.warning("mixer %s: claim failed (%r); again in %.1f s", self.worker_id,
                               exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            if job is not None:
                await self._serve(job)

    async def _serve(self, job: MixJob) -> None:
        log = f"meeting={job.meeting_id} room={job.room_id} mix={job.job_id}"
        logger.info("%s claimed by %s (delivery %d)", log, self.worker_id, job.deliveries)
        mixing = asyncio.ensure_future(self.mix(job, log))
        renewing = asyncio.ensure_future(self._renew(job, log))
        self.mixing.add(job.meeting_id)
        try:
            await asyncio.wait({mixing, renewing}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # shutdown: another worker takes it at once
            for task in (mixing, renewing):
                task.cancel()
            await asyncio.gather(mixing, renewing, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.jobs.release(self.worker_id, job)
            logger.info("%s released (shutdown)", log)
            raise
        finally:
            self.mixing.discard(job.meeting_id)
        if not mixing.done():  # the claim was lost: someone else has it now
            mixing.cancel()
            await asyncio.gather(mixing, return_exceptions=True)
            logger.warning("%s claim lost: left to its new worker", log)
            return
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        exc = mixing.exception()
        if exc is not None:  # the child killed, storage unreachable, ...: try again later
            logger.error("%s mix attempt failed (%s); it is retried when its claim expires",
                         log, exc, exc_info=None if isinstance(exc, MixInterrupted) else exc)
            return
        with contextlib.suppress(Exception):
            await self.jobs.complete(job)

    async def _renew(self, job: MixJob, log: str) -> None:
        """Returns when the claim is lost."""
        while True:
            await asyncio.sleep(self.renew_every_s)
            try:
                if not await self.jobs.renew(self.worker_id, job):
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: nobody else can claim either
                logger.warning("%s renew failed: %r", log, exc)

    # ------------------------------------------------------------------ one mix

    async def mix(self, job: MixJob, log: str) -> None:
        """Make, store and announce one meeting's mix (or record why it failed)."""
        meeting_id = job.meeting_id
        if job.deliveries > self.max_attempts:
            await self._fail(job, log, f"mix given up after {job.deliveries - 1} attempts "
                                       "(its worker died or the storage failed each time)")
            return
        storage = self.storage
        if any(f.name == MIX_NAME for f in await storage.list_files(meeting_id)):
            logger.info("%s already stored (an earlier attempt finished it)", log)
            await self._announce(job, len(await storage.list_files(meeting_id)) - 1)
            return
        while any(p.name not in AFTER_MEETING and age_s(p) < self.stale_after_s
                  for p in await storage.list_pending(meeting_id)):
            await asyncio.sleep(_POLL_S)
        duration_ms = max(0, job.ended_at_ms - job.started_at_ms)
        with tempfile.TemporaryDirectory(prefix="connvo-mix-") as scratch:
            folder = Path(scratch)
            tracks = [f for f in await storage.list_files(meeting_id) if f.meta.kind == "track"]
            (folder / "tracks").mkdir()
            committed: dict[str, str] = {}  # local path -> name
            found: list[tuple[Path, TrackMeta | None]] = []
            for f in tracks:
                path = await storage.fetch(meeting_id, f.name, folder / "tracks")
                if path is not None:
                    committed[str(path)] = f.name
                    found.append((path, f.meta))
            # Files a dead recorder left: mixed as far as they decode, then kept (salvaged).
            (folder / "left").mkdir()
            left: dict[str, tuple[str, TrackMeta | None]] = {}
            for pending in await storage.list_pending(meeting_id):
                if pending.name in AFTER_MEETING:
                    continue
                path, note = await storage.fetch_abandoned(meeting_id, pending.name,
                                                           folder / "left")
                if path is not None:
                    left[str(path)] = (pending.name, note)
                    found.append((path, note))
            audio = [str(path) for path, meta in found if not _is_video(path, meta)]
            video = [(meta.user_id if meta else "", str(path))
                     for path, meta in found if _is_video(path, meta)]
            out = folder / MIX_NAME
            composite = folder / COMPOSITE_NAME if video else None
            started = time.monotonic()
            returncode, output, err = await self._run_mixdown(out, duration_ms, audio, video,
                                                              composite)
            last_words = err.decode(errors="replace").strip()[-500:]
            if returncode < 0 and -returncode != signal.SIGXCPU:
                # Killed (an operator, the OOM killer): not the input's fault; another try.
                raise MixInterrupted(f"mixdown killed by signal {-returncode}: {last_words}")
            if returncode != 0:
                await self._fail(job, log, f"mixdown exit {returncode}: {last_words}")
                return
            corrupt = self._corrupt(output, committed)
            if corrupt:
                await self._fail(job, log, corrupt)
                return
            await self._salvage(meeting_id, log, left, output)
            if composite is not None:  # before the mix: the mix's presence means "ready"
                await storage.put_file(meeting_id, COMPOSITE_NAME, composite, TrackMeta(
                    kind="composite", peer_id="", user_id="", mime_type=COMPOSITE_MIME,
                    start_ms=0, duration_ms=duration_ms, packets=0))
            stored = await storage.put_file(meeting_id, MIX_NAME, out, TrackMeta(
                kind="mix", peer_id="", user_id="", mime_type=MIX_MIME, start_ms=0,
                duration_ms=duration_ms, packets=0))
        self.done += 1
        logger.info("%s mix of %d track(s)%s ready: %.1f s, %d bytes, made in %.1f s by %s",
                    log, len(audio), f" and composite of {len(video)}" if video else "",
                    duration_ms / 1000, stored.size, time.monotonic() - started,
                    self.worker_id)
        await self._announce(job, len(tracks))

    @staticmethod
    def _corrupt(output: bytes, committed: dict[str, str]) -> str:
        """Why the mix is not the meeting's: a committed track of which nothing decoded."""
        for line in output.decode(errors="replace").splitlines():
            try:
                extent: dict[str, Any] = json.loads(line)
                name = committed.get(extent["path"])
                nothing = int(extent["durationMs"]) <= 0
            except (ValueError, KeyError, TypeError):
                continue
            if name is not None and nothing and extent.get("error"):
                return f"track {name} does not decode: {str(extent['error'])[:300]}"
        return ""

    async def _run_mixdown(self, out: Path, duration_ms: int, audio: list[str],
                           video: list[tuple[str, str]],
                           composite: Path | None) -> tuple[int, bytes, bytes]:
        # The composite decodes and encodes video: ~0.1 CPU s per second of a meeting with
        # four busy tiles (bench/recorder.py), so its limit grows with the length.
        cpu_s = self.cpu_s + (duration_ms // 1000 * 2 if video else 0)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "media.tap.mixdown", "--out", str(out),
            "--duration-ms", str(duration_ms), "--cpu-seconds", str(cpu_s),
            *(["--composite", str(composite)] if composite is not None else []),
            *(arg for user, path in video for arg in ("--video", user, path)), *audio,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            output, err = await proc.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, output, err

    async def _fail(self, job: MixJob, log: str, reason: str) -> None:
        self.failed += 1
        logger.error("%s mix failed: %s", log, reason)
        await self.storage.mark_failed(job.meeting_id, reason)

    async def _announce(self, job: MixJob, tracks: int) -> None:
        await self.webhooks.emit("recording.ready", job.meeting_id, {
            "roomId": job.room_id, "durationMs": max(0, job.ended_at_ms - job.started_at_ms),
            "tracks": tracks, "recordingPath": "/api/run/meetings/recordings/getRecording"})

    async def _salvage(self, meeting_id: str, log: str,
                       left: dict[str, tuple[str, TrackMeta | None]], output: bytes) -> None:
        """Store the unfinished files of dead recorders with the extents the mix found."""
        for line in output.decode(errors="replace").splitlines():
            try:
                extent: dict[str, Any] = json.loads(line)
                name, note = left[extent["path"]]
                start_ms, duration_ms = int(extent["startMs"]), int(extent["durationMs"])
            except (ValueError, KeyError, TypeError):
                continue  # a committed track's line, or not ours
            if note is None or duration_ms <= 0:
                logger.error("%s %s could not be salvaged (%s)", log, name,
                             extent.get("error") or "no note of whose it is")
                continue  # stays pending: the recording is failed
            stored = await self.storage.put_file(
                meeting_id, name, Path(extent["path"]),
                msgspec.structs.replace(note, start_ms=start_ms, duration_ms=duration_ms))
            logger.warning("%s %s salvaged (its recorder died): %.1f s from %.1f s, %d bytes",
                           log, name, duration_ms / 1000, start_ms / 1000, stored.size)


def _is_video(path: Path, meta: TrackMeta | None) -> bool:
    """Whether a track file is video (by its metadata, else its name)."""
    return meta.mime_type.startswith("video/") if meta else path.suffix == ".webm"
