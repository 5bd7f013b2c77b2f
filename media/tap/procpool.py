"""Recognition in separate processes: a :class:`Transcriber` for engines that hold the GIL.

:class:`ProcessTranscriber` runs an :class:`Engine` in ``processes`` child processes (spawn
context: no forked event loop, no inherited locks) and talks to each over a socket pair with
length-prefixed msgpack frames. The tap's event loop only ever writes to a non-blocking socket
and reads results in one task per process; decoding never happens there.

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

Wire format, parent -> child: ``("b", stream, segment)`` begin, ``("a", stream, pcm)`` audio,
``("e", stream)`` end, ``("f", stream)`` forget, ``("q",)`` quit. Child -> parent:
``("ready", pid)``, ``("r", stream, segment, text, final, segment_audio_s, audio_s, cpu_s)``,
``("x", stream, segment, error, audio_s, cpu_s)`` (segment failed), ``("p", audio_s, cpu_s)``
progress (totals since the process started).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from .transcriber import (
    BYTES_PER_SECOND,
    Recognition,
    RecognitionCallback,
    TranscriberStats,
    load_object,
)

logger = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
MAX_FRAME = 8 << 20
PROGRESS_EVERY_S = 0.25
"""Audio seconds between progress reports from a child (the parent's view of its backlog)."""
BATCH_BYTES = 1 << 20
"""Input a child reads before handling it (about 30 s of audio): the most one batch holds."""
IDLE_AFTER_S = 0.2
"""A child with no input for this long lets the engine do set-up work (``idle()``)."""


class Engine(Protocol):
    """A speech recogniser inside one recogniser process: synchronous, single-threaded.

    Calls for one stream come in order ``begin``, ``accept``\\*, (``partial``), ``end``; calls for
    different streams interleave, so an engine that can decode only one utterance at a time
    keeps one decoder per active stream. Raising from a call drops that segment only.
    The factory is named by an import path (``package.module:Class``) because it is loaded in
    the child; it is called with the back-end's options mapping.

    Optional: ``idle() -> bool``, called when the process has had no input for
    :data:`IDLE_AFTER_S`, for set-up that would otherwise delay a speaker (pocketsphinx makes a
    spare decoder there); it returns whether to call it again at the next idle moment. Its CPU
    time is not counted as recognition.
    """

    def begin(self, stream_id: str) -> None:
        """A segment of ``stream_id`` starts."""
        ...

    def accept(self, stream_id: str, pcm: bytes) -> None:
        """Audio of the current segment (16 kHz mono s16)."""
        ...

    def partial(self, stream_id: str) -> str:
        """The best hypothesis so far ("" if none)."""
        ...

    def end(self, stream_id: str) -> str:
        """Finish the segment; its final text."""
        ...

    def forget(self, stream_id: str) -> None:
        """Drop the stream's state (the speaker left)."""
        ...

    def close(self) -> None:
        """Release everything (the process is ending)."""
        ...


# --------------------------------------------------------------------------- the child


@dataclass
class _Segment:
    segment_id: str
    audio_s: float = 0.0
    since_partial_s: float = 0.0
    last_partial: str = ""


class _FrameReader:
    """The child's side of the socket: length-prefixed frames, as many as have arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self.closed = False

    def wait(self, timeout_s: float) -> bool:
        """Whether there is input within ``timeout_s`` (a frame, a closed socket)."""
        if self._buffer:
            return True
        readable, _, _ = select.select([self._sock], [], [], timeout_s)
        return bool(readable)

    def read(self) -> list[bytes]:
        """Every complete frame that has arrived, up to about :data:`BATCH_BYTES`; blocks
        until there is one. Empty once the socket has closed (``closed``)."""
        self._take(block=False)
        frames = self._frames()
        while not frames and not self.closed:
            self._take(block=True)
            self._take(block=False)
            frames = self._frames()
        return frames

    def _take(self, *, block: bool) -> None:
        while not self.closed and len(self._buffer) < BATCH_BYTES:
            try:
                data = self._sock.recv(1 << 16, 0 if block else socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:  # reset: the parent is gone
                data = b""
            if not data:
                self.closed = True
                return
            self._buffer += data
            if block:
                return

    def _frames(self) -> list[bytes]:
        frames: list[bytes] = []
        offset, buffer = 0, self._buffer
        while len(buffer) - offset >= _LEN.size:
            (size,) = _LEN.unpack_from(buffer, offset)
            if len(buffer) - offset - _LEN.size < size:
                break
            frames.append(bytes(buffer[offset + _LEN.size : offset + _LEN.size + size]))
            offset += _LEN.size + size
        del buffer[:offset]
        return frames


def child_main(sock: socket.socket, engine_path: str, options: dict[str, Any],
               partial_interval_s: float) -> None:
    """Entry point of a recogniser process: serve frames until the socket closes or ``q``.

    Input is handled in batches: everything that has arrived since the last batch. Within a
    batch each stream's audio is joined and handed to the engine in one call, in order and
    before that stream's next begin/end; a segment's end is handled as soon as its batch is
    read, ahead of other speakers' audio that arrived before it. So a process that has fallen
    behind (a burst of speakers, a busy machine) delivers finals after one speaker's backlog
    rather than everyone's, which is what the end-of-speech latency target needs. A process
    that keeps up sees batches of one frame and behaves as before. When nothing has arrived
    for :data:`IDLE_AFTER_S`, the engine's optional ``idle()`` does set-up work (pocketsphinx:
    makes a spare decoder); that CPU is not counted as recognition.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder()

    def send(message: tuple[Any, ...]) -> None:
        body = encoder.encode(message)
        sock.sendall(_LEN.pack(len(body)) + body)

    engine: Engine = load_object(engine_path)(options)  # type: ignore[operator]
    engine_idle = getattr(engine, "idle", None)
    cpu_start = time.process_time()  # report decoding time, not start-up
    setup_cpu = 0.0  # idle-time set-up (not decoding either)

    def cpu() -> float:
        return time.process_time() - cpu_start - setup_cpu

    send(("ready", os.getpid()))
    reader = _FrameReader(sock)
    active: dict[str, _Segment] = {}
    audio_total = 0.0
    reported = 0.0

    def fail(stream: str, segment: _Segment, exc: BaseException) -> None:
        logger.warning("recogniser pid=%d stream=%s segment=%s failed: %r", os.getpid(), stream,
                       segment.segment_id, exc)
        send(("x", stream, segment.segment_id, repr(exc)[:200], audio_total,
              cpu()))

    def audio(stream: str, pcm: bytes) -> None:
        nonlocal audio_total, reported
        seconds = len(pcm) / BYTES_PER_SECOND
        audio_total += seconds
        segment = active.get(stream)
        if segment is not None:
            try:
                engine.accept(stream, pcm)
                segment.audio_s += seconds
                segment.since_partial_s += seconds
                if 0 < partial_interval_s <= segment.since_partial_s:
                    segment.since_partial_s = 0.0
                    text = engine.partial(stream)
                    if text and text != segment.last_partial:
                        segment.last_partial = text
                        send(("r", stream, segment.segment_id, text, False, segment.audio_s,
                              audio_total, cpu()))
            except Exception as exc:  # noqa: BLE001 - one bad segment must not end the process
                del active[stream]
                fail(stream, segment, exc)
                with contextlib.suppress(Exception):
                    engine.forget(stream)
        if audio_total - reported >= PROGRESS_EVERY_S:
            reported = audio_total
            send(("p", audio_total, cpu()))

    def control(message: list[Any]) -> None:
        kind, stream = message[0], message[1]
        if kind == "b":
            segment = _Segment(message[2])
            try:
                engine.begin(stream)
            except Exception as exc:  # noqa: BLE001
                fail(stream, segment, exc)
                return
            active[stream] = segment
        elif kind == "e":
            ended = active.pop(stream, None)
            if ended is None:
                return
            try:
                text = engine.end(stream)
            except Exception as exc:  # noqa: BLE001
                fail(stream, ended, exc)
                return
            send(("r", stream, ended.segment_id, text, True, ended.audio_s, audio_total,
                  cpu()))
        elif kind == "f":
            active.pop(stream, None)
            engine.forget(stream)

    idle_work = engine_idle is not None
    try:
        while True:
            if idle_work and not reader.wait(IDLE_AFTER_S):
                started = time.process_time()
                idle_work = bool(engine_idle())  # type: ignore[misc]
                setup_cpu += time.process_time() - started
                continue
            frames = reader.read()
            if not frames:
                break  # the socket closed
            idle_work = engine_idle is not None
            pending: dict[str, list[bytes]] = {}  # stream -> audio not yet handed over
            quit_ = False
            for body in frames:
                message = decoder.decode(body)
                if message[0] == "a":
                    pending.setdefault(message[1], []).append(message[2])
                    continue
                if message[0] == "q":
                    quit_ = True
                    break
                chunks = pending.pop(message[1], None)
                if chunks:
                    audio(message[1], b"".join(chunks))
                control(message)
            for stream, chunks in pending.items():
                audio(stream, b"".join(chunks))
            if quit_:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone
    finally:
        engine.close()
        with contextlib.suppress(OSError):
            sock.close()


# --------------------------------------------------------------------------- the parent


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
        return max(0.0, self.sent_audio_s - self.done_audio_s)

    @property
    def up(self) -> bool:
        return self.writer is not None and self.ready is not None and self.ready.done() \
            and not self.ready.cancelled() and self.ready.exception() is None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class ProcessTranscriber:
    """Runs ``engine`` (an import path to an :class:`Engine` factory) in child processes."""

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
            raise ValueError("processes must be at least 1")
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
        return self._stats

    @property
    def processes(self) -> list[int]:
        """PIDs of the live recogniser processes."""
        return [p.process.pid for p in self._procs if p.process is not None and p.up]

    def backlog_s(self) -> list[float]:
        """Audio seconds written but not yet consumed, per process."""
        return [p.backlog_s for p in self._procs]

    async def start(self) -> None:
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
                                                            limit=MAX_FRAME)
        proc.process, proc.writer = process, writer
        proc.sent_audio_s = proc.done_audio_s = proc.seen_audio_s = proc.seen_cpu_s = 0.0
        proc.ready = loop.create_future()
        proc.reader_task = self._spawn_task(self._read(proc, reader), f"read {proc.index}")
        try:
            async with asyncio.timeout(self.start_timeout_s):
                await asyncio.shield(proc.ready)
        except TimeoutError:
            await self._stop_process(proc, timeout_s=1.0)
            raise RuntimeError(f"{self.name}-{proc.index}: not ready within "
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
        if not self._started or self._closing:
            raise RuntimeError(f"{self.name} is not running")
        proc = min(self._procs, key=lambda p: (len(p.streams), p.backlog_s))
        stream = _Stream(self, f"s{next(self._ids)}", proc, on_result, name)
        proc.streams.add(stream.stream_id)
        self._streams[stream.stream_id] = stream
        return stream

    def _send(self, proc: _Process, message: tuple[Any, ...]) -> bool:
        if not proc.up or proc.writer is None or proc.writer.is_closing():
            return False
        body = _encoder.encode(message)
        proc.writer.write(_LEN.pack(len(body)) + body)
        return True

    def _forget(self, stream: _Stream) -> None:
        self._streams.pop(stream.stream_id, None)
        stream.proc.streams.discard(stream.stream_id)

    # ------------------------------------------------------------------ results

    async def _read(self, proc: _Process, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(_LEN.size)
                (size,) = _LEN.unpack(header)
                message = _decoder.decode(await reader.readexactly(size))
                self._on_message(proc, message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            logger.exception("%s-%d: bad frame from the recogniser", self.name, proc.index)
        if proc.ready is not None and not proc.ready.done():
            # Died while starting (bad model path, missing module): start() reports it.
            code = proc.process.exitcode if proc.process is not None else None
            proc.ready.set_exception(RuntimeError(
                f"{self.name}-{proc.index}: recogniser process exited while starting "
                f"(exit {code}); see its error above"))
        elif not self._closing:
            self._spawn_task(self._restart(proc), f"restart {proc.index}")

    def _account(self, proc: _Process, audio_s: float, cpu_s: float) -> None:
        proc.done_audio_s = audio_s
        self._stats.audio_s += max(0.0, audio_s - proc.seen_audio_s)
        self._stats.cpu_s += max(0.0, cpu_s - proc.seen_cpu_s)
        proc.seen_audio_s, proc.seen_cpu_s = audio_s, cpu_s

    def _on_message(self, proc: _Process, message: list[Any]) -> None:
        kind = message[0]
        if kind == "p":
            self._account(proc, message[1], message[2])
        elif kind == "r":
            _, stream_id, segment_id, text, final, segment_audio_s, audio_s, cpu_s = message
            self._account(proc, audio_s, cpu_s)
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.deliver(Recognition(segment_id, text, final, segment_audio_s))
        elif kind == "x":
            _, stream_id, segment_id, error, audio_s, cpu_s = message
            self._account(proc, audio_s, cpu_s)
            logger.warning("%s-%d: segment %s failed in the recogniser: %s", self.name,
                           proc.index, segment_id, error)
            self._stats.dropped_segments += 1
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.deliver(Recognition(segment_id, "", True, dropped=True))
        elif kind == "ready" and proc.ready is not None and not proc.ready.done():
            proc.ready.set_result(message[1])

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
                if proc.up:
                    self._send(proc, ("q",))
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
    """One speaker's :class:`~media.tap.transcriber.SpeechStream` on a process."""

    def __init__(self, owner: ProcessTranscriber, stream_id: str, proc: _Process,
                 on_result: RecognitionCallback, name: str) -> None:
        self.owner = owner
        self.stream_id = stream_id
        self.proc = proc
        self.name = name or stream_id
        self._on_result = on_result
        self._segment: str | None = None
        self._refused = False  # current segment is not being sent
        self._pending: dict[str, float | None] = {}  # segment -> when it ended (awaiting final)
        self._closed = False

    def start_segment(self, segment_id: str) -> bool:
        if self._closed:
            return False
        if self._segment is not None:
            self.end_segment()
        owner, proc = self.owner, self.proc
        owner.stats.segments += 1
        self._segment = segment_id
        self._pending[segment_id] = None
        if proc.backlog_s > owner.max_backlog_s or not owner._send(
            proc, ("b", self.stream_id, segment_id)
        ):
            logger.warning("%s: segment %s dropped (recogniser %d %s, backlog %.1f s)",
                           self.name, segment_id, proc.index, "up" if proc.up else "down",
                           proc.backlog_s)
            owner.stats.dropped_segments += 1
            self._refused = True
            return False
        self._refused = False
        return True

    def write(self, pcm: bytes) -> None:
        if self._segment is None or self._refused or not pcm:
            return
        owner, proc = self.owner, self.proc
        if proc.backlog_s > 2 * owner.max_backlog_s:
            logger.warning("%s: segment %s cut short (backlog %.1f s)", self.name,
                           self._segment, proc.backlog_s)
            owner.stats.dropped_segments += 1
            owner._send(proc, ("e", self.stream_id))
            self._pending[self._segment] = time.monotonic()
            self._refused = True
            return
        if owner._send(proc, ("a", self.stream_id, pcm)):
            proc.sent_audio_s += len(pcm) / BYTES_PER_SECOND

    def end_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        if self._refused:
            if self._pending.get(segment) is None:  # refused at the start: nothing will come
                self.deliver(Recognition(segment, "", True, dropped=True))
            return
        self._pending[segment] = time.monotonic()
        if not self.owner._send(self.proc, ("e", self.stream_id)):
            self.deliver(Recognition(segment, "", True, dropped=True))

    def close(self) -> None:
        if self._closed:
            return
        self.end_segment()
        self._closed = True
        self.owner._send(self.proc, ("f", self.stream_id))
        if not self._pending:
            self.owner._forget(self)

    def lost(self) -> None:
        """The process died: every segment in flight ends empty."""
        self._refused = self._segment is not None
        for segment in list(self._pending):
            self.deliver(Recognition(segment, "", True, dropped=True))

    def deliver(self, result: Recognition) -> None:
        stats = self.owner.stats
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
            self.owner._forget(self)
