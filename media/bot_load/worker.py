"""A bot process: ``python -m media.bot_load.worker``, started by the runner (not by hand).

It reads its :class:`~media.bot_load.plan.WorkerPlan` from stdin, makes its bots, says
:class:`~media.bot_load.plan.Ready`, waits for :class:`~media.bot_load.plan.Start`, runs every
bot on its schedule while reporting :class:`~media.bot_load.plan.Progress`, and ends with one
:class:`~media.bot_load.plan.Result` (see :mod:`media.bot_load.plan` for the protocol). stdin
closing at any point stops the bots early; SIGINT is ignored (a Ctrl-C in the terminal reaches
the whole process group; the runner decides and closes stdin).

CPU is measured with ``getrusage(RUSAGE_SELF)`` (all threads: aiortc encodes and decodes in
threads), resident memory from ``/proc/self/statm``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
import time
from typing import Any, BinaryIO

import msgspec

from ..bots import PACKETS_PER_S, Bot, BotResult, BotTimes, bot_client_config
from ..sources import OpusSpec, encode_opus_spec
from .plan import (
    BotPlan,
    ProcessUsage,
    Progress,
    Ready,
    Result,
    WorkerPlan,
    plan_decoder,
    start_decoder,
)

logger = logging.getLogger(__name__)

#: Longest line on the control pipe (a plan carries every bot's token), bytes.
MAX_LINE_BYTES = 64 * 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def cpu_seconds() -> float:
    """CPU time (user + system, every thread) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Resident memory of this process now (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class Worker:
    """Runs one :class:`WorkerPlan`'s bots and reports on ``out``."""

    def __init__(self, plan: WorkerPlan, out: BinaryIO) -> None:
        self.plan = plan
        self._out = out
        # Cheap bots: encode the audio once for the whole process, not once per bot.
        self._clip = (encode_opus_spec(OpusSpec(path=plan.audio_path))
                      if plan.profile == "cheap" else None)
        self._bots = [self._make_bot(b) for b in plan.bots]
        self._window_cpu: list[float] = []  # cpu at window start, at window end
        self._window_rss = 0
        self._window_s = 0.0
        self._in_window = False
        self._lag_since_report = 0.0
        self._lag_max = 0.0
        self._lag_window = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    def _make_bot(self, bot: BotPlan) -> Bot:
        p = self.plan
        config = bot_client_config(
            p.ws_url, bot.token, profile=p.profile, name=bot.name, video=p.video,
            audio_path=p.audio_path, pin_host_addresses=p.pin_host_addresses, relay=p.relay,
            ice_timeout_s=p.ice_timeout_s, opus_clip=self._clip,
        )
        return Bot(config, index=bot.index, room_id=bot.room_id,
                   expected_peers=bot.expected_peers)

    def emit(self, message: Ready | Progress | Result) -> None:
        self._out.write(msgspec.json.encode(message) + b"\n")
        self._out.flush()

    async def run(self, control: asyncio.StreamReader) -> None:
        """Ready -> wait for Start -> run the bots -> Result. ``control`` is stdin."""
        self.emit(Ready(pid=os.getpid()))
        line = await control.readline()
        if not line:
            logger.info("worker %d: stopped before the start", self.plan.index)
            self.emit(self._result([], interrupted=True))
            return
        start = start_decoder.decode(line)
        # Wall clock -> this process' monotonic clock (one machine: the clocks agree).
        t0 = time.monotonic() + (start.t0 - time.time())
        stopped = asyncio.Event()
        try:
            self._spawn(self._watch_control(control, stopped), "control")
            self._spawn(self._report_progress(), "progress")
            self._spawn(self._measure_window(t0), "usage")
            self._spawn(self._watch_loop_lag(), "loop-lag")
            runs = [
                asyncio.create_task(
                    bot.run(BotTimes(join_at=t0 + plan.join_offset_s,
                                     window_start=t0 + self.plan.window_start_s,
                                     window_end=t0 + self.plan.window_end_s)),
                    name=f"bot {plan.name}")
                for bot, plan in zip(self._bots, self.plan.bots, strict=True)
            ]
            outcomes = await asyncio.gather(*runs, return_exceptions=True)
        finally:
            await self._cancel_tasks()
        results = [self._outcome(bot, plan, outcome)
                   for bot, plan, outcome in zip(self._bots, self.plan.bots, outcomes,
                                                 strict=True)]
        self.emit(self._progress())
        self.emit(self._result(results, interrupted=stopped.is_set()))

    def _outcome(self, bot: Bot, plan: BotPlan, outcome: BotResult | BaseException) -> BotResult:
        if isinstance(outcome, BotResult):
            return outcome
        # A bug in a bot, not a failure it reports: loud in the log, counted in the report.
        logger.error("bot %s crashed", plan.name, exc_info=outcome)
        window = self.plan.window_end_s - self.plan.window_start_s
        return BotResult(
            index=plan.index, name=plan.name, room_id=plan.room_id, peer_id=bot.client.peer_id,
            state="crashed", error="bot-crashed", errors={"bot-crashed": 1}, join_s=None,
            ws_connect_s=None, expected_peers=plan.expected_peers, window_s=0.0,
            packets_expected=round(window * PACKETS_PER_S) * plan.expected_peers,
            packets_received=0, remotes=[],
        )

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch_control(self, control: asyncio.StreamReader, stopped: asyncio.Event
                             ) -> None:
        while await control.readline():
            pass  # nothing else is sent after Start; EOF is the stop signal
        logger.info("worker %d: runner closed the control pipe; stopping the bots",
                    self.plan.index)
        stopped.set()
        for bot in self._bots:
            bot.stop()

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(self.plan.progress_interval_s)
            self.emit(self._progress())

    async def _measure_window(self, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + self.plan.window_start_s - time.monotonic()))
        self._window_cpu.append(cpu_seconds())
        opened = time.monotonic()
        self._in_window = True
        await asyncio.sleep(max(0.0, t0 + self.plan.window_end_s - time.monotonic()))
        self._in_window = False
        self._window_cpu.append(cpu_seconds())
        self._window_s = time.monotonic() - opened
        self._window_rss = rss_bytes()

    async def _watch_loop_lag(self, period_s: float = 0.05) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + period_s
            await asyncio.sleep(period_s)
            lag = max(0.0, loop.time() - due) * 1000
            self._lag_since_report = max(self._lag_since_report, lag)
            self._lag_max = max(self._lag_max, lag)
            if self._in_window:
                self._lag_window = max(self._lag_window, lag)

    def _progress(self) -> Progress:
        joined = connected = failed = connections = 0
        for bot in self._bots:
            phase = bot.phase
            if phase == "failed":
                failed += 1
            elif phase == "joined":
                joined += 1
                peers = bot.connected_peers
                connections += peers
                connected += peers >= bot.expected_peers
        lag, self._lag_since_report = self._lag_since_report, 0.0
        return Progress(joined=joined, connected=connected, failed=failed,
                        connections=connections, cpu_s=round(cpu_seconds(), 3),
                        rss_bytes=rss_bytes(), at=time.time(), loop_lag_ms=round(lag, 1))

    def _result(self, bots: list[BotResult], *, interrupted: bool) -> Result:
        window_cpu = (self._window_cpu[1] - self._window_cpu[0]
                      if len(self._window_cpu) == 2 else 0.0)
        usage = ProcessUsage(
            pid=os.getpid(), cpu_s=round(cpu_seconds(), 3), window_cpu_s=round(window_cpu, 3),
            window_s=round(self._window_s, 3), rss_bytes=self._window_rss or rss_bytes(),
            rss_peak_bytes=peak_rss_bytes(), max_loop_lag_ms=round(self._lag_max, 1),
            window_loop_lag_ms=round(self._lag_window, 1),
        )
        return Result(bots=bots, usage=usage, interrupted=interrupted)


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _amain() -> int:
    # One reader for every line of stdin: a buffered sys.stdin read could swallow the next one.
    control = await _stdin_reader()
    try:
        plan = plan_decoder.decode(await control.readline())
    except msgspec.DecodeError as exc:
        print(f"media.bot_load.worker: bad plan on stdin: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr, level=plan.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [bots {plan.index}] %(name)s: %(message)s",
    )
    await Worker(plan, sys.stdout.buffer).run(control)
    return 0


def main() -> int:
    """Entry point of ``python -m media.bot_load.worker``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return asyncio.run(_amain())


if __name__ == "__main__":
    sys.exit(main())
