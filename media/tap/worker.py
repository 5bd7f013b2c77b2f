"""The tap worker: claims tap jobs and serves each room with a :class:`TapSession`.

One :class:`TapWorker` runs in a child process of every hub by default
(:mod:`media.tap.host`; ``serve --no-tap`` turns it off) and any number run standalone
(``connvo-rtc tap``) against the same job queue (:mod:`signaling.tapjobs`). It starts and warms
its recogniser processes first and claims no job before they are ready, so the first speech of
a meeting never waits for them. Per job it joins the room, renews its claim every
``renew_every_s`` and completes the job when the room ends or empties.

A worker that dies stops renewing; after ``reclaim_after_s`` the queue hands the job to another
worker, which joins (replacing the dead tap's seat) and carries on. Finals already sent are
stored by the hub, so nothing emitted is lost. A worker that shuts down cleanly leaves its
rooms without completing their jobs, so they are reclaimed the same way.

Every task has an owner: the claim loop and one serving task per room live in the worker's
task set and are cancelled and awaited by :meth:`TapWorker.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from media.agent.session import AgentFactory, agent_factory_for
from media.errors import PeerClientError
from signaling.recording_storage import open_storage
from signaling.tapjobs import TapJob, TapJobs
from signaling.tasks import TaskSet

from .config import TapConfig
from .session import TapSession
from .transcriber import Transcriber, create_transcriber

logger = logging.getLogger(__name__)


class TapWorker:
    """Claims tap jobs from ``jobs`` and transcribes their rooms.

    ``hub_url()`` returns the hub's websocket URL (called per room: an in-process hub knows
    its port only once bound). ``transcriber`` overrides the one ``config.recognizer`` names
    (tests, benchmarks). ``agent_factory`` makes the brain and voice of a job's agent (default:
    ``media.agent.factory``).
    """

    def __init__(
        self,
        jobs: TapJobs,
        *,
        hub_url: Callable[[], str],
        config: TapConfig | None = None,
        worker_id: str | None = None,
        transcriber: Transcriber | None = None,
        agent_factory: AgentFactory | None = None,
    ) -> None:
        self.jobs = jobs
        self.config = config or TapConfig()
        # One per worker: the scenarios are loaded once, at the first room with an agent.
        self._agent_factory = agent_factory or agent_factory_for(self.config.agent)
        self.worker_id = worker_id or f"tap-{secrets.token_hex(4)}"
        self._hub_url = hub_url
        self._transcriber = transcriber
        self._own_transcriber = transcriber is None
        self._transcriber_ready = transcriber is not None
        self._transcriber_lock = asyncio.Lock()
        self._sessions: dict[str, TapSession] = {}
        self._serving: dict[str, asyncio.Task[None]] = {}  # room -> its serving task
        self._slot = asyncio.Event()
        self._tasks = TaskSet(f"tap worker {self.worker_id}", logger=logger)
        self._claim_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._closing = False
        self._warm = asyncio.Event()
        #: Where rooms that record keep their files (one per worker: S3 uploads from its spool).
        self.storage = open_storage(self.config.recording_dir, self.config.recording_s3)
        #: Jobs claimed / completed since start.
        self.claimed = 0
        self.completed = 0

    @property
    def sessions(self) -> Mapping[str, TapSession]:
        """Rooms being transcribed now, by room id (read-only view)."""
        return MappingProxyType(self._sessions)

    @property
    def transcriber(self) -> Transcriber | None:
        """The recogniser, once started."""
        return self._transcriber if self._transcriber_ready else None

    @property
    def warm(self) -> bool:
        """The recognisers are started and warm: the worker claims jobs."""
        return self._warm.is_set()

    async def wait_warm(self) -> None:
        """Return once :attr:`warm` (it stays so: a recogniser process that dies is replaced
        by the transcriber itself)."""
        await self._warm.wait()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start claiming jobs (returns at once)."""
        if self._claim_task is not None or self._closing:
            return
        self._claim_task = self._spawn(self._claim_loop(), "claim-loop")
        await self.storage.start()
        logger.info("tap worker %s started (recognizer %s, %d process(es), up to %d rooms)",
                    self.worker_id, self.config.recognizer, self.config.processes,
                    self.config.max_rooms)

    async def aclose(self) -> None:
        """Leave every room, stop the recogniser (idempotent)."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(
                self._aclose(), name=f"close {self.worker_id}")
        await asyncio.shield(self._close_task)

    async def _aclose(self) -> None:
        self._closing = True
        if self._claim_task is not None:
            self._claim_task.cancel()
            await asyncio.gather(self._claim_task, return_exceptions=True)
        logger.info("tap worker %s stopping: leaving %d room(s)", self.worker_id,
                    len(self._sessions))
        # Each serving task leaves its room (sending the finals in flight) as it is cancelled,
        # and does not complete its job: another worker reclaims it.
        serving = list(self._serving.values())
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
        await self._tasks.aclose()
        if self._own_transcriber and self._transcriber is not None:
            await self._transcriber.aclose()
        await self.storage.aclose()  # uploads get a last chance; the rest stays in the spool
        logger.info("tap worker %s stopped", self.worker_id)

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, what)

    # ------------------------------------------------------------------ claiming

    async def _warm_up(self) -> None:
        """Start the recognisers, retrying with back-off until they are up: a job claimed
        before would only wait for them (or fail)."""
        delay = 1.0
        while True:
            try:
                await self._ensure_transcriber()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a recogniser that cannot start yet
                logger.error("tap worker %s: recognisers did not start (%r); retrying in "
                             "%.0f s", self.worker_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._warm.set()
        logger.info("tap worker %s: recognisers warm; claiming jobs", self.worker_id)

    async def _claim_loop(self) -> None:
        await self._warm_up()
        backoff = 0.5
        while not self._closing:
            if len(self._serving) >= self.config.max_rooms:
                self._slot.clear()
                await self._slot.wait()
                continue
            try:
                job = await self.jobs.claim(self.worker_id, timeout_s=self.config.claim_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the queue (Redis) may be down for a while
                logger.warning("tap worker %s: claim failed (%r); retrying in %.1f s",
                               self.worker_id, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            if job is None:
                continue
            self.claimed += 1
            current = self._serving.get(job.room_id)
            if current is not None:
                # A fresh job for a room we serve: the hub saw no tap there (ours was dropped).
                logger.info("room=%s tap=%s new job %s replaces the current one",
                            job.room_id, self.worker_id, job.job_id)
                current.cancel()
                await asyncio.gather(current, return_exceptions=True)
            self._serving[job.room_id] = self._spawn(self._serve(job), f"room {job.room_id}")

    async def _ensure_transcriber(self) -> Transcriber:
        async with self._transcriber_lock:
            if self._transcriber is None:
                self._transcriber = create_transcriber(self.config)
            if not self._transcriber_ready:
                try:
                    await self._transcriber.start()
                except BaseException:
                    transcriber, self._transcriber = self._transcriber, None
                    await transcriber.aclose()
                    raise
                self._transcriber_ready = True
            return self._transcriber

    # ------------------------------------------------------------------ serving one room

    async def _serve(self, job: TapJob) -> None:
        log = f"room={job.room_id} tap={self.worker_id} job={job.job_id}"
        logger.info("%s claimed", log)
        renewing = self._spawn(self._renew(job, log), f"renew {job.room_id}")
        session: TapSession | None = None
        try:
            transcriber = await self._ensure_transcriber()
            session = TapSession(job, ws_url=self._hub_url(), config=self.config,
                                 transcriber=transcriber, worker_id=self.worker_id,
                                 storage=self.storage,
                                 agent_factory=self._agent_factory)
            self._sessions[job.room_id] = session
            running = asyncio.ensure_future(session.run())
            try:
                await asyncio.wait({running, renewing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not running.done():
                    running.cancel()
                await asyncio.gather(running, return_exceptions=True)
            if not running.cancelled() and running.exception() is None:
                outcome = running.result()
                if outcome != "closed":
                    await self._complete(job, log, outcome, session)
                await session.aclose()
            elif renewing.done():
                logger.warning("%s claim lost: leaving", log)
            else:
                exc = running.exception()
                logger.warning("%s session failed (%s); the job will be reclaimed",
                               log, exc.code if isinstance(exc, PeerClientError) else repr(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s serving failed; the job will be reclaimed", log)
        finally:
            renewing.cancel()
            if session is not None:
                await session.aclose()
                if self._sessions.get(job.room_id) is session:
                    del self._sessions[job.room_id]
            if self._serving.get(job.room_id) is asyncio.current_task():
                del self._serving[job.room_id]
            self._slot.set()

    async def _complete(self, job: TapJob, log: str, outcome: str, session: TapSession) -> None:
        try:
            await self.jobs.complete(job)
        except Exception as exc:  # noqa: BLE001
            logger.warning("%s could not complete the job: %r", log, exc)
            return
        self.completed += 1
        logger.info("%s done (%s)", log, outcome)
        if outcome == "empty" and session.has_participants():
            # Someone joined after we decided to leave: the hub saw our seat and queued
            # nothing, and the job is now complete. Queue it again (the token still holds).
            with contextlib.suppress(Exception):
                again = msgspec.structs.replace(job, job_id="tap_" + secrets.token_hex(6),
                                                entry="")
                if await self.jobs.enqueue(again):
                    logger.info("%s a participant arrived as we left: job %s re-queued", log,
                                again.job_id)

    async def _renew(self, job: TapJob, log: str) -> None:
        """Returns when the claim is lost (the serving task then leaves)."""
        while True:
            await asyncio.sleep(self.config.renew_every_s)
            try:
                if not await self.jobs.renew(self.worker_id, job):
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: nobody else can claim either
                logger.warning("%s renew failed: %r", log, exc)
