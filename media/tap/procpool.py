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
- **Back-pressure.** Each process's backlog is the audio written minus the audio it reports
  consumed. A segment that starts while the backlog exceeds ``max_backlog_s`` is refused; one
  that grows past twice that is cut short. Either way its final arrives with ``dropped=True``
  and the event loop never buffers more than about ``2 * max_backlog_s`` of audio per process.
- **Batches.** A child reads everything that has arrived before handling it: each speaker's
  audio goes to the engine in one call and a segment's end goes ahead of other speakers'
  queued audio, so a process that has fallen behind still sends finals promptly.
- **Failure.** A process that dies is restarted with back-off; the segments it held end with
  empty, ``dropped`` finals. Children exit when the socket closes, so ``kill -9`` of the tap
  leaves no orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from media.errors import RecogniserStartError, TapConfigError, TranscriberNotRunningError

from . import procmsg
from .child import child_main
from .engine import Engine
from .procmsg import Audio, Begin, End, Failed, Forget, Progress, Quit, Ready, Result
from .transcriber import (
    BYTES_PER_SECOND,
    Recognition,
    RecognitionCallback,
    TranscriberStats,
)

# Engine lives in media.tap.engine; it is named here too because engines written against
# this module (docs/transcription.md) import it from here.
__all__ = ["Engine", "ProcessTranscriber"]

logger = logging.getLogger(__name__)


@dataclass
class _Process:
    """One recogniser process as the parent sees it."""

    index: int
    process: Any = None  # multiprocessing.Process
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    ready: asyncio.Future[int] | None = None
    sent_audio_s: float = 0.0
    done_audio_s: float = 0.0
    seen_audio_s: float = 0.0  # child's running totals, for deltas into the stats
    seen_cpu_s: float = 0.0
    streams: set[str] = field(default_factory=set)

    @property
    def backlog_s(self) -> float:
        """Audio seconds written to the process but not yet reported consumed."""
        return max(0.0, self.sent_audio_s - self.done_audio_s)

    @property
    def up(self) -> bool:
        """The process has said ready and its socket is open."""
        return self.writer is not None and self.ready is not None and self.ready.done() \
            and not self.ready.cancelled() and self.ready.exception() is None

    def send(self, message: procmsg.ToChild) -> bool:
        """Write ``message`` to the process; False (nothing written) when it is not up."""
        if not self.up or self.writer is None or self.writer.is_closing():
            return False
        self.writer.write(procmsg.frame(message))
        return True


class ProcessTranscriber:
    """Runs ``engine`` (an import path to an :class:`Engine` factory) in child processes.

    ``options`` go to the engine's factory; ``partial_interval_s`` is the audio seconds between
    partials (0: none); ``max_backlog_s`` the audio seconds a process may fall behind before
    segments are dropped; ``start_timeout_s`` how long a process may take to load the engine;
    ``name`` labels log lines and process names.
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
        self._stats = TranscriberStats()
        self._procs = [_Process(i) for i in range(processes)]
        self._streams: dict[str, _Stream] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> TranscriberStats:
        """Counters since start (shared by every stream)."""
        return self._stats

    @property
    def processes(self) -> list[int]:
        """PIDs of the live recogniser processes."""
        return [p.process.pid for p in self._procs if p.process is not None and p.up]

    def backlog_s(self) -> list[float]:
        """Audio seconds written but not yet consumed, per process."""
        return [p.backlog_s for p in self._procs]

    async def start(self) -> None:
        """Start every process; returns when all are ready. Raises
        :class:`~media.errors.RecogniserStartError` when one is not."""
        if self._started:
            return
        self._started = True
        await asyncio.gather(*(self._spawn(p) for p in self._procs))
        logger.info("%s: %d %s process(es) ready (pids %s)", self.name, len(self._procs),
                    self.engine.split(":")[0].rsplit(".", 1)[-1], self.processes)

    async def _spawn(self, proc: _Process) -> None:
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

    def _spawn_task(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name} {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ streams

    def open_stream(self, on_result: RecognitionCallback, *, name: str = "") -> _Stream:
        """A new stream on the least loaded process (see
        :meth:`~media.tap.transcriber.Transcriber.open_stream`). Raises
        :class:`~media.errors.TranscriberNotRunningError` before :meth:`start` or once
        closing."""
        if not self._started or self._closing:
            raise TranscriberNotRunningError(f"{self.name} is not running")
        proc = min(self._procs, key=lambda p: (len(p.streams), p.backlog_s))
        stream = _Stream(f"s{next(self._ids)}", proc, on_result, name, stats=self._stats,
                         max_backlog_s=self.max_backlog_s, on_finished=self._stream_finished)
        proc.streams.add(stream.stream_id)
        self._streams[stream.stream_id] = stream
        return stream

    def _stream_finished(self, stream: _Stream) -> None:
        self._streams.pop(stream.stream_id, None)
        stream.proc.streams.discard(stream.stream_id)

    # ------------------------------------------------------------------ results

    async def _read(self, proc: _Process, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                body = await procmsg.read_frame(reader)
                self._on_message(proc, procmsg.decode_to_parent(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            logger.exception("%s-%d: bad frame from the recogniser", self.name, proc.index)
        if proc.ready is not None and not proc.ready.done():
            # Died while starting (bad model path, missing module): start() reports it.
            code = proc.process.exitcode if proc.process is not None else None
            proc.ready.set_exception(RecogniserStartError(
                f"{self.name}-{proc.index}: recogniser process exited while starting "
                f"(exit {code}); see its error above"))
        elif not self._closing:
            self._spawn_task(self._restart(proc), f"restart {proc.index}")

    def _account(self, proc: _Process, audio_s: float, cpu_s: float) -> None:
        proc.done_audio_s = audio_s
        self._stats.audio_s += max(0.0, audio_s - proc.seen_audio_s)
        self._stats.cpu_s += max(0.0, cpu_s - proc.seen_cpu_s)
        proc.seen_audio_s, proc.seen_cpu_s = audio_s, cpu_s

    def _on_message(self, proc: _Process, message: procmsg.ToParent) -> None:
        match message:
            case Progress():
                self._account(proc, message.audio_s, message.cpu_s)
            case Result():
                self._account(proc, message.audio_s, message.cpu_s)
                stream = self._streams.get(message.stream)
                if stream is not None:
                    stream.deliver(Recognition(message.segment, message.text, message.final,
                                               message.segment_audio_s))
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

    async def _restart(self, proc: _Process) -> None:
        pid = proc.process.pid if proc.process is not None else None
        code = proc.process.exitcode if proc.process is not None else None
        logger.error("%s-%d: recogniser process %s died (exit %s); restarting", self.name,
                     proc.index, pid, code)
        await self._stop_process(proc, timeout_s=1.0)
        for stream_id in list(proc.streams):
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.lost()
        self._stats.restarts += 1
        delay = 1.0
        while not self._closing:
            try:
                await self._spawn(proc)
                return
            except Exception as exc:  # noqa: BLE001 - keep trying, with back-off
                logger.error("%s-%d: restart failed: %r", self.name, proc.index, exc)
                await self._stop_process(proc, timeout_s=1.0)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------------ closing

    async def _stop_process(self, proc: _Process, *, timeout_s: float) -> None:
        if proc.writer is not None:
            with contextlib.suppress(Exception):
                proc.send(Quit())
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
        await asyncio.gather(*(self._stop_process(p, timeout_s=3.0) for p in self._procs))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()
        if self._started:
            logger.info("%s stopped", self.name)


class _Stream:
    """One speaker's :class:`~media.tap.transcriber.SpeechStream` on a process.

    It writes to its process through :meth:`_Process.send`, counts into the transcriber's
    shared ``stats`` and calls ``on_finished`` once it is closed and has no final pending, so
    the transcriber can forget it.
    """

    def __init__(self, stream_id: str, proc: _Process, on_result: RecognitionCallback,
                 name: str, *, stats: TranscriberStats, max_backlog_s: float,
                 on_finished: Callable[[_Stream], None]) -> None:
        self.stream_id = stream_id
        self.proc = proc
        self.name = name or stream_id
        self._on_result = on_result
        self._stats = stats
        self._max_backlog_s = max_backlog_s
        self._on_finished = on_finished
        self._segment: str | None = None
        self._refused = False  # current segment is not being sent
        self._pending: dict[str, float | None] = {}  # segment -> when it ended (awaiting final)
        self._closed = False

    def start_segment(self, segment_id: str) -> bool:
        """See :meth:`~media.tap.transcriber.SpeechStream.start_segment`."""
        if self._closed:
            return False
        if self._segment is not None:
            self.end_segment()
        proc = self.proc
        self._stats.segments += 1
        self._segment = segment_id
        self._pending[segment_id] = None
        if proc.backlog_s > self._max_backlog_s or not proc.send(
            Begin(self.stream_id, segment_id)
        ):
            logger.warning("%s: segment %s dropped (recogniser %d %s, backlog %.1f s)",
                           self.name, segment_id, proc.index, "up" if proc.up else "down",
                           proc.backlog_s)
            self._stats.dropped_segments += 1
            self._refused = True
            return False
        self._refused = False
        return True

    def write(self, pcm: bytes) -> None:
        """See :meth:`~media.tap.transcriber.SpeechStream.write`."""
        if self._segment is None or self._refused or not pcm:
            return
        proc = self.proc
        if proc.backlog_s > 2 * self._max_backlog_s:
            logger.warning("%s: segment %s cut short (backlog %.1f s)", self.name,
                           self._segment, proc.backlog_s)
            self._stats.dropped_segments += 1
            proc.send(End(self.stream_id))
            self._pending[self._segment] = time.monotonic()
            self._refused = True
            return
        if proc.send(Audio(self.stream_id, pcm)):
            proc.sent_audio_s += len(pcm) / BYTES_PER_SECOND

    def end_segment(self) -> None:
        """See :meth:`~media.tap.transcriber.SpeechStream.end_segment`."""
        segment, self._segment = self._segment, None
        if segment is None:
            return
        if self._refused:
            if self._pending.get(segment) is None:  # refused at the start: nothing will come
                self.deliver(Recognition(segment, "", True, dropped=True))
            return
        self._pending[segment] = time.monotonic()
        if not self.proc.send(End(self.stream_id)):
            self.deliver(Recognition(segment, "", True, dropped=True))

    def close(self) -> None:
        """See :meth:`~media.tap.transcriber.SpeechStream.close`."""
        if self._closed:
            return
        self.end_segment()
        self._closed = True
        self.proc.send(Forget(self.stream_id))
        if not self._pending:
            self._on_finished(self)

    def lost(self) -> None:
        """The process died: every segment in flight ends empty."""
        self._refused = self._segment is not None
        for segment in list(self._pending):
            self.deliver(Recognition(segment, "", True, dropped=True))

    def deliver(self, result: Recognition) -> None:
        """A result for one of this stream's segments (from the process, or made up when the
        segment was dropped): counted, then passed to the callback unless stale."""
        stats = self._stats
        if result.final:
            if result.segment_id not in self._pending:
                return  # already finished (e.g. lost, then a late result)
            ended = self._pending.pop(result.segment_id)
            if result.segment_id == self._segment:
                self._refused = True  # failed in the recogniser: send no more of it
            stats.finals += 1
            if ended is not None and not result.dropped:
                stats.final_latency_s.append(time.monotonic() - ended)
        else:
            if result.segment_id not in self._pending:
                return
            stats.partials += 1
        try:
            self._on_result(result)
        except Exception:
            logger.exception("%s: result callback failed", self.name)
        if self._closed and not self._pending:
            self._on_finished(self)
