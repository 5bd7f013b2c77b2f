"""Recognition in separate processes: a :class:`Transcriber` for engines that hold the GIL.

:class:`ProcessTranscriber` runs an :class:`~media.tap.engine.Engine` in ``processes`` child
processes (spawn context: no forked event loop, no inherited locks) and talks to each over a
socket pair in the messages of :mod:`media.tap.procmsg` (length-prefixed msgpack frames). The
tap's event loop only ever writes to a non-blocking socket and reads results in one task per
process; decoding never happens there. Inside each process a
:class:`~media.tap.child.RecogniserChild` drives the engine.

- **Stream affinity.** A stream is pinned to one process for its life (the least loaded when
  it opens), so a speaker's partials and final come from one decoder and the engine can keep
  the speaker's adaptation state (pocketsphinx: cepstral mean) between segments.
- **Warm.** :meth:`ProcessTranscriber.start` returns once every process has loaded its engine
  and decoded a short burst of quiet noise (``warmup_s``), so the first speech of a meeting
  pays for neither; the burst is not counted in the stats.
- **Back-pressure, in stages** (:mod:`media.tap.procstream`). Each process's backlog is the
  audio written minus the audio it reports consumed. Behind by a fifth of ``max_backlog_s``
  it stops making partials (finals only) until it is back within a tenth; a segment that
  starts while the backlog exceeds ``max_backlog_s`` is refused; one that grows past twice that
  is cut short. Either way its final arrives with ``dropped=True`` and the event loop never
  buffers more than about ``2 * max_backlog_s`` of audio per process.
- **Batches.** A child reads everything that has arrived before handling it: each speaker's
  audio goes to the engine in one call and a segment's end goes ahead of other speakers'
  queued audio, so a process that has fallen behind still sends finals promptly.
- **Failure.** A process that dies is restarted at once (with back-off only when it keeps
  dying soon after starting); the segments it held end with empty, ``dropped`` finals, and
  what its streams send meanwhile waits for the new process (counted as backlog, so the
  stages above bound it). Children exit when the socket closes, so ``kill -9`` of the tap
  leaves no orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import random
import socket
import time
from array import array
from collections.abc import Mapping
from typing import Any

from media.errors import RecogniserStartError, TapConfigError, TranscriberNotRunningError

from . import procmsg
from .child import child_main
from .engine import Engine
from .procmsg import Audio, Begin, End, Failed, Forget, Progress, Quit, Ready, Result
from .procstream import ProcessStream, RecogniserProcess
from .transcriber import (
    BYTES_PER_SECOND,
    SAMPLE_RATE,
    Recognition,
    RecognitionCallback,
    TranscriberStats,
)

# Engine lives in media.tap.engine; it is named here too because engines written against
# this module (docs/transcription.md) import it from here.
__all__ = ["Engine", "ProcessTranscriber"]

logger = logging.getLogger(__name__)


WARMUP = "warmup"
"""The stream id of a process's warm-up segment (never a real stream's: those are ``s<n>``)."""
QUICK_DEATH_S = 10.0
"""A process that dies within this long of starting counts towards the restart back-off."""


def warmup_pcm(seconds: float) -> bytes:
    """Quiet noise (about -40 dBFS), the same every time: enough for an engine to run its whole
    search once. Not digital silence, which some engines skip or choke on."""
    noise = random.Random(14)
    return array("h", (noise.randint(-300, 300)
                       for _ in range(int(seconds * SAMPLE_RATE)))).tobytes()


class ProcessTranscriber:
    """Runs ``engine`` (an import path to an :class:`Engine` factory) in child processes.

    ``options`` go to the engine's factory; ``partial_interval_s`` is the audio seconds between
    partials (0: none); ``max_backlog_s`` the audio seconds a process may fall behind before
    segments are dropped (partials stop at a fifth of it); ``start_timeout_s`` how long a
    process may take to load the engine and decode its warm-up; ``warmup_s`` the seconds of
    quiet noise each new process decodes before it counts as started (0: none); ``name`` labels
    log lines and process names.
    """

    def __init__(
        self,
        engine: str,
        *,
        processes: int = 1,
        options: Mapping[str, Any] | None = None,
        partial_interval_s: float = 0.5,
        max_backlog_s: float = 15.0,
        start_timeout_s: float = 60.0,
        warmup_s: float = 0.3,
        name: str = "recogniser",
    ) -> None:
        if processes < 1:
            raise TapConfigError("processes must be at least 1")
        self.engine = engine
        self.options = dict(options or {})
        self.partial_interval_s = partial_interval_s
        self.max_backlog_s = max_backlog_s
        self.start_timeout_s = start_timeout_s
        self.name = name
        self._warmup = warmup_pcm(warmup_s) if warmup_s > 0 else b""
        self._stats = TranscriberStats()
        self._procs = [RecogniserProcess(i, max_backlog_s, name) for i in range(processes)]
        self._warmed: dict[int, asyncio.Future[bool]] = {}  # process index -> warm-up done
        self._streams: dict[str, ProcessStream] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        #: Warm-up segments decoded (one per process start, restarts included).
        self.warmups = 0

    @property
    def stats(self) -> TranscriberStats:
        """Counters since start (shared by every stream)."""
        return self._stats

    @property
    def processes(self) -> list[int]:
        """PIDs of the live recogniser processes."""
        return [p.process.pid for p in self._procs if p.process is not None and p.up]

    def backlog_s(self) -> list[float]:
        """Audio seconds written (or waiting for a restart) but not yet consumed, per
        process."""
        return [p.backlog_s for p in self._procs]

    async def start(self) -> None:
        """Start every process and warm it up; returns when all are ready. Raises
        :class:`~media.errors.RecogniserStartError` when one is not."""
        if self._started:
            return
        self._started = True
        await asyncio.gather(*(self._spawn(p) for p in self._procs))
        try:
            async with asyncio.timeout(self.start_timeout_s):
                warm = await asyncio.gather(*self._warmed.values())
        except TimeoutError:
            warm = [False]
        if not all(warm):
            raise RecogniserStartError(f"{self.name}: warm-up not decoded within "
                                       f"{self.start_timeout_s} s")
        logger.info("%s: %d %s process(es) ready and warm (pids %s)", self.name,
                    len(self._procs), self.engine.split(":")[0].rsplit(".", 1)[-1],
                    self.processes)

    async def _spawn(self, proc: RecogniserProcess) -> None:
        loop = asyncio.get_running_loop()
        parent_sock, child_sock = socket.socketpair()
        ctx = multiprocessing.get_context("spawn")
        process = ctx.Process(
            target=child_main, name=f"{self.name}-{proc.index}", daemon=True,
            args=(child_sock, self.engine, self.options, self.partial_interval_s),
        )
        try:
            await asyncio.to_thread(process.start)
        finally:
            child_sock.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock,
                                                            limit=procmsg.MAX_FRAME)
        proc.process, proc.writer = process, writer
        proc.sent_audio_s = proc.done_audio_s = proc.seen_audio_s = proc.seen_cpu_s = 0.0
        proc.ready = loop.create_future()
        proc.reader_task = self._spawn_task(self._read(proc, reader), f"read {proc.index}")
        try:
            async with asyncio.timeout(self.start_timeout_s):
                await asyncio.shield(proc.ready)
        except TimeoutError:
            await self._stop_process(proc, timeout_s=1.0)
            raise RecogniserStartError(f"{self.name}-{proc.index}: not ready within "
                                       f"{self.start_timeout_s} s") from None
        except BaseException:
            await self._stop_process(proc, timeout_s=1.0)
            raise
        proc.started_at = time.monotonic()
        self._warm(proc)
        proc.restarting, proc.partials = False, True  # a new process makes partials
        if held := proc.release_held():
            logger.info("%s-%d: %d message(s) that waited for the restart sent", self.name,
                        proc.index, held)
        proc.note_backlog()

    def _warm(self, proc: RecogniserProcess) -> None:
        """Send the warm-up segment (ahead of anything else the new process gets)."""
        warmed = asyncio.get_running_loop().create_future()
        self._warmed[proc.index] = warmed
        if not self._warmup or proc.writer is None:
            warmed.set_result(True)
            return
        proc.warming = True
        proc.writer.write(b"".join(procmsg.frame(m) for m in (
            Begin(WARMUP, WARMUP), Audio(WARMUP, self._warmup), End(WARMUP), Forget(WARMUP))))
        # Its audio is backlog like any other until the process reports it consumed.
        proc.sent_audio_s += len(self._warmup) / BYTES_PER_SECOND

    def _warmed_up(self, proc: RecogniserProcess, ok: bool) -> None:
        proc.warming = False
        self.warmups += ok
        warmed = self._warmed.get(proc.index)
        if warmed is not None and not warmed.done():
            warmed.set_result(ok)

    def _spawn_task(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name} {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ streams

    def open_stream(self, on_result: RecognitionCallback, *, name: str = "") -> ProcessStream:
        """A new stream on the least loaded process (see
        :meth:`~media.tap.transcriber.Transcriber.open_stream`). Raises
        :class:`~media.errors.TranscriberNotRunningError` before :meth:`start` or once
        closing."""
        if not self._started or self._closing:
            raise TranscriberNotRunningError(f"{self.name} is not running")
        proc = min(self._procs, key=lambda p: (not (p.up or p.restarting), len(p.streams),
                                               p.backlog_s))
        stream = ProcessStream(f"s{next(self._ids)}", proc, on_result, name, stats=self._stats,
                               max_backlog_s=self.max_backlog_s,
                               on_finished=self._stream_finished)
        proc.streams.add(stream.stream_id)
        self._streams[stream.stream_id] = stream
        return stream

    def _stream_finished(self, stream: ProcessStream) -> None:
        self._streams.pop(stream.stream_id, None)
        stream.proc.streams.discard(stream.stream_id)

    # ------------------------------------------------------------------ results

    async def _read(self, proc: RecogniserProcess, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                body = await procmsg.read_frame(reader)
                self._on_message(proc, procmsg.decode_to_parent(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            logger.exception("%s-%d: bad frame from the recogniser", self.name, proc.index)
        ready = proc.ready
        if ready is not None and not ready.done():
            # Died while starting (bad model path, missing module): start() reports it.
            code = proc.process.exitcode if proc.process is not None else None
            ready.set_exception(RecogniserStartError(
                f"{self.name}-{proc.index}: recogniser process exited while starting "
                f"(exit {code}); see its error above"))
        elif (not self._closing and ready is not None and not ready.cancelled()
              and ready.exception() is None and proc.reader_task is asyncio.current_task()):
            # A process that was up died (one stopped on purpose has its ready cancelled).
            proc.restarting = True  # from now on its streams' messages wait for the new one
            self._warmed_up(proc, False)
            self._spawn_task(self._restart(proc), f"restart {proc.index}")

    def _account(self, proc: RecogniserProcess, audio_s: float, cpu_s: float) -> None:
        proc.done_audio_s = audio_s
        if not proc.warming:  # the warm-up is not recognition
            self._stats.audio_s += max(0.0, audio_s - proc.seen_audio_s)
            self._stats.cpu_s += max(0.0, cpu_s - proc.seen_cpu_s)
        proc.seen_audio_s, proc.seen_cpu_s = audio_s, cpu_s
        proc.note_backlog()

    def _on_message(self, proc: RecogniserProcess, message: procmsg.ToParent) -> None:
        match message:
            case Progress():
                self._account(proc, message.audio_s, message.cpu_s)
            case Result() if message.stream == WARMUP:
                self._account(proc, message.audio_s, message.cpu_s)
                if message.final:
                    self._warmed_up(proc, True)
            case Result():
                self._account(proc, message.audio_s, message.cpu_s)
                stream = self._streams.get(message.stream)
                # A process that is behind has been told to stop partials; any it made before
                # it read that are dropped here, so none reaches the room after it was told.
                if stream is not None and (message.final or proc.partials):
                    stream.deliver(Recognition(message.segment, message.text, message.final,
                                               message.segment_audio_s))
            case Failed() if message.stream == WARMUP:
                self._account(proc, message.audio_s, message.cpu_s)
                logger.warning("%s-%d: the warm-up segment failed: %s", self.name, proc.index,
                               message.error)
                self._warmed_up(proc, True)  # the engine is loaded: it may still serve
            case Failed():
                self._account(proc, message.audio_s, message.cpu_s)
                logger.warning("%s-%d: segment %s failed in the recogniser: %s", self.name,
                               proc.index, message.segment, message.error)
                self._stats.dropped_segments += 1
                stream = self._streams.get(message.stream)
                if stream is not None:
                    stream.deliver(Recognition(message.segment, "", True, dropped=True))
            case Ready():
                if proc.ready is not None and not proc.ready.done():
                    proc.ready.set_result(message.pid)

    async def _restart(self, proc: RecogniserProcess) -> None:
        pid = proc.process.pid if proc.process is not None else None
        code = proc.process.exitcode if proc.process is not None else None
        lived_s = time.monotonic() - proc.started_at
        proc.quick_deaths = proc.quick_deaths + 1 if lived_s < QUICK_DEATH_S else 0
        logger.error("%s-%d: recogniser process %s died (exit %s) after %.1f s; restarting",
                     self.name, proc.index, pid, code, lived_s)
        await self._stop_process(proc, timeout_s=1.0)
        for stream_id in list(proc.streams):
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.lost()
        self._stats.restarts += 1
        # At once, unless it keeps dying young (a broken engine must not spin the CPU).
        delay = 0.0 if proc.quick_deaths < 2 else min(2.0 ** (proc.quick_deaths - 2), 30.0)
        while not self._closing:
            if delay:
                logger.warning("%s-%d: next start in %.0f s", self.name, proc.index, delay)
                await asyncio.sleep(delay)
            try:
                await self._spawn(proc)
                return
            except Exception as exc:  # noqa: BLE001 - keep trying, with back-off
                logger.error("%s-%d: restart failed: %r", self.name, proc.index, exc)
                await self._stop_process(proc, timeout_s=1.0)
                delay = min(max(1.0, delay * 2), 30.0)

    # ------------------------------------------------------------------ closing

    async def _stop_process(self, proc: RecogniserProcess, *, timeout_s: float) -> None:
        if proc.writer is not None:
            with contextlib.suppress(Exception):
                proc.writer.write(procmsg.frame(Quit()))
                proc.writer.close()
            proc.writer = None
        if proc.ready is not None and not proc.ready.done():
            proc.ready.cancel()
        process, proc.process = proc.process, None
        if process is not None:
            await asyncio.to_thread(process.join, timeout_s)
            if process.is_alive():
                logger.warning("%s-%d: recogniser pid %d did not stop; killing", self.name,
                               proc.index, process.pid)
                process.kill()
                await asyncio.to_thread(process.join, 5.0)

    async def aclose(self) -> None:
        """Stop every process and task (idempotent; concurrent calls wait for the same close).
        Results still in flight are abandoned."""
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self._aclose())
        await asyncio.shield(self._close_task)

    async def _aclose(self) -> None:
        self._closing = True
        for proc in self._procs:
            proc.restarting, proc.held, proc.held_audio_s = False, [], 0.0
        await asyncio.gather(*(self._stop_process(p, timeout_s=3.0) for p in self._procs))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for warmed in self._warmed.values():
            if not warmed.done():
                warmed.set_result(False)
        self._streams.clear()
        if self._started:
            logger.info("%s stopped", self.name)
