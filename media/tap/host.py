"""The hub's own tap, in a process of its own: started, served, restarted and stopped by the hub.

``connvo-rtc serve`` runs a tap worker by default; its audio pipeline (Opus decode, resample,
VAD, one task per speaker) must never run on the hub's event loop, where a busy machine made
signalling wait for audio and audio wait for signalling. :class:`TapHost` runs that worker in a
child process (:mod:`media.tap.hosted`) and stays on the hub's side:

- **Jobs.** The child's job queue is the hub's (in memory or Redis, whichever the hub has): it
  calls the hub over a socket pair (:mod:`media.tap.hostmsg`) and :class:`TapHost` makes each
  call on the hub's :class:`~signaling.tapjobs.TapJobs`. A socket pair rather than a loopback
  HTTP endpoint: nothing to authenticate (only the child holds its end), nothing listening,
  no port, and either side sees the other exit as the socket closing. With Redis the child
  could reach the queue itself, but then it would need the hub's Redis credentials and a
  second code path; through the hub it costs a claim a second and a renewal per room every
  2 s on the hub's loop.
- **Media** goes straight from the participants to the child (its own aiortc peer), on
  loopback when the hub listens there (``TapConfig.pin_host_addresses``); the child joins rooms
  at the hub's bound URL, which each claim's reply carries.
- **Warm.** The child starts its recogniser processes and has each decode a short burst before
  it claims any job; it reports them (:attr:`TapHost.recognisers`).
- **Supervision.** A child that exits (crash, ``kill -9``, OOM) is started again: at once if it
  had run a minute, else after 1, 2, 4 ... 30 s. The jobs it held are released at once
  (:meth:`~signaling.tapjobs.TapJobs.release`), so its successor -- or another worker --
  takes its rooms without waiting out ``reclaim_after_s``. Nothing it does can raise into the
  hub.
- **Shutdown** (:meth:`TapHost.aclose`, staged): SIGTERM (the child leaves its rooms, sending
  the finals in flight, and stops its recognisers), wait up to ``stop_timeout_s``, then
  SIGKILL by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

import msgspec

from signaling.tapjobs import TapJob, TapJobs
from signaling.tasks import TaskSet

from . import hostmsg, procmsg
from .config import TapConfig
from .hostmsg import Claim, Complete, Enqueue, Release, Renew, Reply, Setup, Warm

logger = logging.getLogger(__name__)

STEADY_S = 60.0
"""A child that ran this long is restarted at once when it dies; one that died younger waits
1, 2, 4 ... :data:`MAX_BACKOFF_S` seconds (a broken install must not spin the CPU)."""
MAX_BACKOFF_S = 30.0
MAX_CALLS = 256
"""Requests from the child handled at once (its worker makes about one per room)."""


class TapHost:
    """Runs a :class:`~media.tap.worker.TapWorker` (``config``, ``worker_id``) in a child
    process on ``jobs``. ``hub_url()`` is the websocket URL it joins rooms at (read per claim:
    the hub knows its port once it listens)."""

    def __init__(self, jobs: TapJobs, *, config: TapConfig, worker_id: str,
                 hub_url: Callable[[], str], stop_timeout_s: float = 5.0) -> None:
        self.jobs = jobs
        self.config = config
        self.worker_id = worker_id
        self.stop_timeout_s = stop_timeout_s
        self._hub_url = hub_url
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._closing = False
        #: The running child's recogniser PIDs, once it said they are warm (else empty).
        self.recognisers: list[int] = []
        #: Times the child was started again after it exited on its own.
        self.restarts = 0
        #: Jobs the child claimed since the hub started.
        self.claimed = 0

    @property
    def pid(self) -> int | None:
        """The running child's PID."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def warm(self) -> bool:
        """The child runs and its recognisers are started and warm."""
        return self.pid is not None and bool(self.recognisers)

    async def start(self) -> None:
        """Start the child (returns at once; it warms up on its own)."""
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._supervise(),
                                                                name="tap host")

    async def aclose(self) -> None:
        """Stop the child in stages (idempotent; concurrent calls wait for the same stop)."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._aclose())
        await asyncio.shield(self._close_task)

    async def _aclose(self) -> None:
        self._closing = True
        task = self._task
        if task is None:
            return
        pid = self.pid
        if pid is not None:
            logger.info("tap process %d: stopping (SIGTERM, up to %.0f s)", pid,
                        self.stop_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        done, _ = await asyncio.wait({task}, timeout=self.stop_timeout_s)
        if not done and (pid := self.pid) is not None:
            logger.warning("tap process %d did not stop within %.0f s: killing it", pid,
                           self.stop_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await asyncio.wait({task}, timeout=5.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.info("tap process stopped")

    # ------------------------------------------------------------------ supervision

    async def _supervise(self) -> None:
        delay = 0.0
        while not self._closing:
            started = time.monotonic()
            code: int | None = None
            try:
                code = await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the hub stays up whatever happens to its tap
                logger.exception("tap process: supervision failed")
            if self._closing:
                return
            lived = time.monotonic() - started
            delay = 0.0 if lived >= STEADY_S else min(max(1.0, 2 * delay), MAX_BACKOFF_S)
            self.restarts += 1
            logger.error("tap process exited (code %s) after %.1f s; starting another in "
                         "%.0f s", code, lived, delay)
            await asyncio.sleep(delay)

    async def _run_once(self) -> int | None:
        """One child, from start to exit: its exit code."""
        ours, theirs = socket.socketpair()
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "media.tap.hosted", "--fd", str(theirs.fileno()),
                "--log-level", str(level), pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                # Its own session: a Ctrl-C at the hub's terminal reaches the hub only, which
                # stops the tap in stages.
                start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        proc = self._proc
        logger.info("tap process %d started (worker %s, recognizer %s, %d process(es))",
                    proc.pid, self.worker_id, self.config.recognizer, self.config.processes)
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours,
                                                                limit=procmsg.MAX_FRAME)
        except BaseException:
            ours.close()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        held: dict[str, tuple[str, TapJob]] = {}  # job id -> (worker, job) the child holds
        calls = TaskSet(f"tap process {proc.pid} calls", logger=logger)
        loop = asyncio.get_running_loop()
        serving = loop.create_task(self._serve(reader, writer, held, calls), name="tap link")
        exiting = loop.create_task(proc.wait(), name="tap process exit")
        try:
            writer.write(procmsg.frame(Setup(worker_id=self.worker_id,
                                             config=msgspec.json.encode(self.config))))
            await asyncio.wait({serving, exiting}, return_when=asyncio.FIRST_COMPLETED)
            if proc.returncode is None:  # it closed its end but lives on: give it a moment
                try:
                    async with asyncio.timeout(self.stop_timeout_s):
                        await proc.wait()
                except TimeoutError:
                    logger.warning("tap process %d closed the link and hangs: killing it",
                                   proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            return await proc.wait()
        finally:
            self.recognisers = []
            if proc.returncode is None:  # cancelled: never leave it behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
            for task in (serving, exiting):
                task.cancel()
            await asyncio.gather(serving, exiting, return_exceptions=True)
            await calls.aclose()
            writer.close()
            await self._release(held)

    async def _release(self, held: dict[str, tuple[str, TapJob]]) -> None:
        """The child is gone: its rooms' jobs are free for the next claim at once."""
        for worker_id, job in held.values():
            try:
                await self.jobs.release(worker_id, job)
                logger.info("room=%s job %s of the exited tap process released", job.room_id,
                            job.job_id)
            except Exception as exc:  # noqa: BLE001 - it is reclaimed after reclaim_after_s
                logger.warning("room=%s job %s not released: %r", job.room_id, job.job_id, exc)
        held.clear()

    # ------------------------------------------------------------------ the child's calls

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     held: dict[str, tuple[str, TapJob]], calls: TaskSet) -> None:
        running = 0
        try:
            while True:
                message = hostmsg.decode_to_hub(await procmsg.read_frame(reader))
                if isinstance(message, Warm):
                    self.recognisers = list(message.recognisers)
                    logger.info("tap process %d: recognisers warm (pids %s); claiming jobs",
                                message.pid, self.recognisers)
                    continue
                if running >= MAX_CALLS:
                    writer.write(procmsg.frame(Reply(call=message.call, error="too many calls")))
                    continue
                running += 1

                async def answer(request: hostmsg.Request = message) -> None:
                    nonlocal running
                    try:
                        reply = await self._answer(request, held)
                    finally:
                        running -= 1
                    if not writer.is_closing():
                        writer.write(procmsg.frame(reply))

                calls.spawn(answer(), type(message).__name__.lower())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the child exited (or closed its end)
        except hostmsg.TapLinkError:
            logger.exception("tap process: bad frame on the link")

    async def _answer(self, request: hostmsg.Request, held: dict[str, tuple[str, TapJob]]
                      ) -> Reply:
        jobs = self.jobs
        try:
            match request:
                case Claim():
                    job = await jobs.claim(request.worker_id,
                                           timeout_s=min(request.timeout_s, 10.0))
                    if job is not None:
                        held[job.job_id] = (request.worker_id, job)
                        self.claimed += 1
                    return Reply(call=request.call, job=job, hub_url=self._hub_url())
                case Renew():
                    ok = await jobs.renew(request.worker_id, request.job)
                    if not ok:
                        held.pop(request.job.job_id, None)
                    return Reply(call=request.call, ok=ok)
                case Complete():
                    await jobs.complete(request.job)
                    held.pop(request.job.job_id, None)
                    return Reply(call=request.call, ok=True)
                case Enqueue():
                    return Reply(call=request.call, ok=await jobs.enqueue(request.job))
                case Release():
                    await jobs.release(request.worker_id, request.job)
                    held.pop(request.job.job_id, None)
                    return Reply(call=request.call, ok=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the child's worker handles it (retries)
            return Reply(call=request.call, error=repr(exc)[:200])
        return Reply(call=request.call, error="unknown request")  # pragma: no cover
