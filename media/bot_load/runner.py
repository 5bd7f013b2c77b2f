"""One load-test run: provision rooms, start the bot processes, follow them, build the report.

::

    test = LoadTest(LoadTestConfig(ws_url="ws://127.0.0.1:8080/ws", secret=..., rooms=10))
    report = await test.run()          # the JSON-ready dict of media.bot_load.report

Stages: create the meetings and join tokens (:mod:`media.bot_load.provision`); spawn the bot
processes and wait until each has made its bots; send everyone the same start time; sample the
processes' counts into the timeline while they run (``on_progress`` sees every point); collect
each process' result; build the report. :meth:`LoadTest.stop` (the CLI's first Ctrl-C) makes
the bots leave at once and still produces a report, marked ``interrupted``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .config import LoadTestConfig
from .plan import Progress, build_worker_plans
from .pool import WorkerPool
from .provision import provision_rooms
from .report import TimelinePoint, build_report

logger = logging.getLogger(__name__)

#: After the window closes, how long the bots get to snapshot, leave and report, seconds.
REPORT_GRACE_S = 30.0
#: Delay between "everyone is ready" and the first join, so all processes get the start.
START_DELAY_S = 0.3

ProgressCallback = Callable[[str, "TimelinePoint | None"], None]


class LoadTestInterrupted(Exception):
    """Stopped before any bot started: there is nothing to report."""


class LoadTest:
    """One run of :class:`LoadTestConfig`. ``on_progress(phase, point)`` is called with
    ``phase`` in ``provisioning``, ``starting``, ``running``, ``collecting`` and, while
    running, a :class:`TimelinePoint` every ``progress_interval_s``."""

    def __init__(self, config: LoadTestConfig, *, on_progress: ProgressCallback | None = None,
                 echo_worker_logs: bool = False) -> None:
        self.config = config
        self._on_progress = on_progress or (lambda _phase, _point: None)
        self._echo = echo_worker_logs
        self._pool: WorkerPool | None = None
        self._latest: dict[int, Progress] = {}
        self._timeline: list[TimelinePoint] = []
        self._stopping = False
        self._ran = False

    @property
    def timeline(self) -> list[TimelinePoint]:
        return list(self._timeline)

    def stop(self) -> None:
        """Make every bot leave now; :meth:`run` still returns a (partial) report."""
        self._stopping = True
        if self._pool is not None:
            self._pool.stop()

    async def run(self) -> dict[str, Any]:
        """Run once and return the report. Raises
        :class:`~media.bot_load.provision.ProvisionError` when the hub refuses the meetings,
        :class:`~media.bot_load.pool.WorkerError` when bot processes cannot start."""
        if self._ran:
            raise RuntimeError("a LoadTest runs once")
        self._ran = True
        config = self.config
        started_at, load_start = time.time(), os.getloadavg()
        self._on_progress("provisioning", None)
        began = time.monotonic()
        rooms, retries = await provision_rooms(config)
        provision_s = time.monotonic() - began
        plans = build_worker_plans(config, rooms)
        if self._stopping:
            raise LoadTestInterrupted("stopped before the bots started")
        self._on_progress("starting", None)
        pool = self._pool = WorkerPool(plans, on_progress=self._on_worker_progress,
                                       echo_stderr=self._echo)
        sampler: asyncio.Task[None] | None = None
        try:
            await pool.spawn()
            if self._stopping:
                raise LoadTestInterrupted("stopped before the bots started")
            t0 = time.time() + START_DELAY_S
            await pool.start(t0)
            logger.info("load test started: %d bots in %d rooms over %d processes", config.bots,
                        config.rooms, len(plans))
            sampler = asyncio.get_running_loop().create_task(self._sample(t0), name="timeline")
            wait = t0 + config.window_end_s + REPORT_GRACE_S - time.time()
            results = await pool.results(timeout_s=max(wait, 1.0))
            self._on_progress("collecting", None)
        finally:
            if sampler is not None:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
            await pool.aclose()
        return build_report(
            config=config, rooms=rooms, plans=plans, results=results,
            exit_codes=[w.returncode for w in pool.workers], timeline=self._timeline,
            started_at=started_at, provision_s=provision_s, api_retries=retries,
            load_start=load_start, interrupted=self._stopping,
        )

    def _on_worker_progress(self, index: int, progress: Progress) -> None:
        self._latest[index] = progress

    async def _sample(self, t0: float) -> None:
        interval = self.config.progress_interval_s
        previous: dict[int, Progress] = {}
        rates: dict[int, float] = {}  # CPU % per worker between its last two reports
        await asyncio.sleep(max(0.0, t0 - time.time()))
        while True:
            latest = dict(self._latest)
            for index, now in latest.items():
                before = previous.get(index)
                if before is not None and now.at > before.at:
                    rates[index] = 100 * (now.cpu_s - before.cpu_s) / (now.at - before.at)
            previous = latest
            values = list(latest.values())
            point = TimelinePoint(
                t_s=round(time.time() - t0, 3),
                joined=sum(p.joined for p in values),
                connected=sum(p.connected for p in values),
                failed=sum(p.failed for p in values),
                connections=sum(p.connections for p in values) // 2,
                cpu_pct=round(sum(rates.values()), 1),
                loop_lag_ms=max((p.loop_lag_ms for p in values), default=0.0),
            )
            self._timeline.append(point)
            self._on_progress("running", point)
            await asyncio.sleep(interval)
