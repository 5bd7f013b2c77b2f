"""The runner's side of the bot processes: start them, talk to them, always reap them.

One :class:`WorkerProcess` per :class:`~media.bot_load.plan.WorkerPlan`: a
``python -m media.bot_load.worker`` subprocess whose stdin carries the plan and the start
signal, whose stdout carries JSON-line reports, and whose stderr (its log) is kept as a bounded
tail -- printed when the process dies without a result -- or echoed live when asked.
:class:`WorkerPool` owns them all; its :meth:`~WorkerPool.aclose` stops, waits and finally
kills, so no bot outlives the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import msgspec

from .plan import Progress, Ready, Result, Start, WorkerPlan, worker_message_decoder
from .worker import MAX_LINE_BYTES

logger = logging.getLogger(__name__)

#: Lines of a worker's stderr kept for the post-mortem of a crashed worker.
STDERR_TAIL_LINES = 60


class WorkerError(Exception):
    """A bot process did not start, did not answer, or died without reporting."""


class WorkerProcess:
    """One bot process. Single use: :meth:`spawn`, :meth:`start`, :meth:`result`,
    :meth:`aclose` (idempotent)."""

    def __init__(self, plan: WorkerPlan, *, on_progress: Callable[[int, Progress], None],
                 echo_stderr: bool = False) -> None:
        self.plan = plan
        self.index = plan.index
        self.progress: Progress | None = None
        #: Last lines of the process' stderr.
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._on_progress = on_progress
        self._echo = echo_stderr
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._result: asyncio.Future[Result | None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def spawn(self) -> None:
        """Start the process and hand it its plan."""
        loop = asyncio.get_running_loop()
        self._result = loop.create_future()
        root = str(Path(__file__).resolve().parents[2])  # where ``media`` is importable from
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "media.bot_load.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, limit=MAX_LINE_BYTES,
        )
        self._spawn_task(self._read_stdout(), "stdout")
        self._spawn_task(self._read_stderr(), "stderr")
        await self._send(msgspec.json.encode(self.plan))

    async def wait_ready(self) -> None:
        """Wait for :class:`Ready`; raise :class:`WorkerError` if the process dies first."""
        assert self._result is not None, "spawn() first"
        ready = asyncio.ensure_future(self._ready.wait())
        waiters: set[asyncio.Future[Any]] = {ready, self._result}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self._ready.is_set():
            raise WorkerError(f"bot process {self.index} exited before it was ready"
                              f" (code {self.returncode}):\n{self.stderr_text()}")

    async def start(self, t0: float) -> None:
        """Send :class:`Start` (``t0`` on the wall clock)."""
        await self._send(msgspec.json.encode(Start(t0=t0)))

    def stop(self) -> None:
        """Ask the bots to stop now (closes stdin; idempotent)."""
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(Exception):
                self._proc.stdin.close()

    async def result(self) -> Result | None:
        """The final :class:`Result`, or ``None`` if the process ended without one."""
        assert self._result is not None, "spawn() first"
        return await asyncio.shield(self._result)

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_tail)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Stop the bots, wait up to ``timeout_s`` for the process, then kill it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is not None:
            self.stop()
            try:
                async with asyncio.timeout(timeout_s):
                    await proc.wait()
            except TimeoutError:
                logger.warning("bot process %d (pid %d) did not exit; killing it", self.index,
                               proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        # The readers end at EOF once the process is gone; give them a moment, then cancel.
        tasks = list(self._tasks)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._result is not None and not self._result.done():
            self._result.set_result(None)

    # ------------------------------------------------------------------ plumbing

    async def _send(self, line: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(line + b"\n")
            await self._proc.stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise WorkerError(f"bot process {self.index} is gone: {exc}\n"
                              f"{self.stderr_text()}") from None

    def _spawn_task(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"bots-{self.index} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        result: Result | None = None
        try:
            while line := await self._proc.stdout.readline():
                try:
                    message = worker_message_decoder.decode(line)
                except msgspec.DecodeError:
                    self.stderr_tail.append(f"(stdout) {line[:200]!r}")
                    continue
                if isinstance(message, Progress):
                    self.progress = message
                    self._on_progress(self.index, message)
                elif isinstance(message, Ready):
                    self._ready.set()
                elif isinstance(message, Result):
                    result = message
        finally:
            if self._result is not None and not self._result.done():
                self._result.set_result(result)

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.stderr_tail.append(text)
            if self._echo:
                print(text, file=sys.stderr, flush=True)


class WorkerPool:
    """All the bot processes of one run (``async with`` closes them)."""

    def __init__(self, plans: Sequence[WorkerPlan], *,
                 on_progress: Callable[[int, Progress], None] | None = None,
                 echo_stderr: bool = False) -> None:
        callback = on_progress or (lambda _i, _p: None)
        self.workers = [WorkerProcess(p, on_progress=callback, echo_stderr=echo_stderr)
                        for p in plans]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def spawn(self, ready_timeout_s: float = 60.0) -> None:
        """Start every process and wait until all are ready."""
        for worker in self.workers:
            await worker.spawn()
        try:
            async with asyncio.timeout(ready_timeout_s):
                await asyncio.gather(*(w.wait_ready() for w in self.workers))
        except TimeoutError:
            raise WorkerError(f"bot processes not ready within {ready_timeout_s} s") from None

    async def start(self, t0: float) -> None:
        await asyncio.gather(*(w.start(t0) for w in self.workers))

    def stop(self) -> None:
        """Ask every process to stop its bots now (they still report)."""
        for worker in self.workers:
            worker.stop()

    async def results(self, timeout_s: float) -> list[Result | None]:
        """Each worker's result (``None`` for one that died or did not report in time; such
        a worker is stopped, then killed)."""
        async def one(worker: WorkerProcess) -> Result | None:
            try:
                async with asyncio.timeout(timeout_s):
                    return await worker.result()
            except TimeoutError:
                logger.warning("bot process %d: no result within %.0f s; stopping it",
                               worker.index, timeout_s)
                worker.stop()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(15.0):
                        return await worker.result()
                await worker.aclose(timeout_s=1.0)
                return await worker.result()

        results = await asyncio.gather(*(one(w) for w in self.workers))
        for worker, result in zip(self.workers, results, strict=True):
            if result is None:
                logger.error("bot process %d ended without a result (code %s); its log:\n%s",
                             worker.index, worker.returncode, worker.stderr_text())
        return list(results)

    async def aclose(self) -> None:
        """Stop, wait, kill what is left (idempotent)."""
        await asyncio.gather(*(w.aclose() for w in self.workers))
