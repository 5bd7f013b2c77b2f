"""Inside a recogniser process: read the tap's messages, drive the engine, send results.

:func:`child_main` is the process's entry point (the target the parent spawns); it loads the
:class:`~media.tap.engine.Engine` and runs a :class:`RecogniserChild` until the socket closes or
a :class:`~media.tap.procmsg.Quit` arrives. The messages are those of :mod:`media.tap.procmsg`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import procmsg
from .engine import Engine
from .procmsg import (
    Audio,
    Begin,
    End,
    Failed,
    Forget,
    Partials,
    Progress,
    Quit,
    Ready,
    Result,
)
from .transcriber import BYTES_PER_SECOND, load_object

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.25
"""Audio seconds between progress reports from a child (the parent's view of its backlog)."""
BATCH_BYTES = 1 << 20
"""Input a child reads before handling it (about 30 s of audio): the most one batch holds."""
IDLE_AFTER_S = 0.2
"""A child with no input for this long lets the engine do set-up work (``idle()``)."""


class FrameReader:
    """The child's side of the socket: frames, as many as have arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self.closed = False
        """The socket has closed (or was reset): the parent is gone."""

    def wait(self, timeout_s: float) -> bool:
        """Whether there is input within ``timeout_s`` (a frame, a closed socket)."""
        if self._buffer:
            return True
        readable, _, _ = select.select([self._sock], [], [], timeout_s)
        return bool(readable)

    def read(self) -> list[bytes]:
        """The body of every complete frame that has arrived, up to about
        :data:`BATCH_BYTES`; blocks until there is one. Empty once the socket has closed."""
        self._take(block=False)
        bodies = procmsg.split_frames(self._buffer)
        while not bodies and not self.closed:
            self._take(block=True)
            self._take(block=False)
            bodies = procmsg.split_frames(self._buffer)
        return bodies

    def _take(self, *, block: bool) -> None:
        # Non-blocking: drain what the socket holds (up to a batch). Blocking: wait for one
        # chunk only, so a batch is handed over as soon as something has arrived.
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


@dataclass
class _Segment:
    """The child's record of one stream's current segment."""

    segment_id: str
    audio_s: float = 0.0
    since_partial_s: float = 0.0
    last_partial: str = ""


class RecogniserChild:
    """One recogniser process's loop: serves the tap's frames to ``engine`` until the socket
    closes or :class:`~media.tap.procmsg.Quit` arrives, then closes the engine and the socket.

    Input is handled in batches: everything that has arrived since the last batch. Within a
    batch each stream's audio is joined and handed to the engine in one call, in order and
    before that stream's next begin/end; a segment's end is handled as soon as its batch is
    read, ahead of other speakers' audio that arrived before it. So a process that has fallen
    behind (a burst of speakers, a busy machine) delivers finals after one speaker's backlog
    rather than everyone's, which is what the end-of-speech latency target needs. A process
    that keeps up sees batches of one frame. While the parent says it is behind
    (:class:`~media.tap.procmsg.Partials`), it makes no partials: finals only. When nothing has arrived for
    :data:`IDLE_AFTER_S`, the engine's optional ``idle()`` does set-up work (pocketsphinx:
    makes a spare decoder); that CPU is not counted as recognition.
    """

    def __init__(self, sock: socket.socket, engine: Engine, partial_interval_s: float) -> None:
        self._sock = sock
        self._engine = engine
        self._engine_idle: Callable[[], object] | None = getattr(engine, "idle", None)
        self._partial_interval_s = partial_interval_s
        self._partials = True  # the parent turns them off while this process is behind
        self._reader = FrameReader(sock)
        self._active: dict[str, _Segment] = {}
        self._audio_total = 0.0  # seconds of audio received since the start, all streams
        self._reported = 0.0  # _audio_total at the last progress report
        self._cpu_start = time.process_time()  # report decoding time, not start-up
        self._setup_cpu = 0.0  # idle-time set-up (not decoding either)

    def run(self) -> None:
        """Say ready, then serve until the socket closes or ``Quit``; always closes the engine
        and the socket on the way out."""
        self._send(Ready(os.getpid()))
        try:
            self._serve()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the parent is gone
        finally:
            self._engine.close()
            with contextlib.suppress(OSError):
                self._sock.close()

    def _serve(self) -> None:
        idle_work = self._engine_idle is not None
        while True:
            if idle_work and not self._reader.wait(IDLE_AFTER_S):
                idle_work = self._idle()
                continue
            bodies = self._reader.read()
            if not bodies:
                return  # the socket closed
            idle_work = self._engine_idle is not None  # new input: there may be set-up again
            if self._handle_batch(bodies):
                return

    def _idle(self) -> bool:
        """Let the engine do set-up work; whether it has more."""
        if self._engine_idle is None:
            return False
        started = time.process_time()
        more = bool(self._engine_idle())
        self._setup_cpu += time.process_time() - started
        return more

    def _handle_batch(self, bodies: list[bytes]) -> bool:
        """Handle one batch (see the class docstring); whether it asked the process to quit."""
        pending: dict[str, list[bytes]] = {}  # stream -> audio not yet handed over
        quit_ = False
        for body in bodies:
            message = procmsg.decode_to_child(body)
            if isinstance(message, Audio):
                pending.setdefault(message.stream, []).append(message.pcm)
                continue
            if isinstance(message, Quit):
                quit_ = True
                break
            if isinstance(message, Partials):  # at once: the audio queued so far is why
                self._partials = message.on
                continue
            chunks = pending.pop(message.stream, None)
            if chunks:  # the stream's earlier audio goes before its begin/end/forget
                self._audio(message.stream, b"".join(chunks))
            if isinstance(message, Begin):
                self._begin(message.stream, message.segment)
            elif isinstance(message, End):
                self._end(message.stream)
            elif isinstance(message, Forget):
                self._forget(message.stream)
        for stream, chunks in pending.items():
            self._audio(stream, b"".join(chunks))
        return quit_

    # ------------------------------------------------------------------ one stream

    def _begin(self, stream: str, segment_id: str) -> None:
        segment = _Segment(segment_id)
        try:
            self._engine.begin(stream)
        except Exception as exc:  # noqa: BLE001 - one bad segment must not end the process
            self._fail(stream, segment, exc)
            return
        self._active[stream] = segment

    def _audio(self, stream: str, pcm: bytes) -> None:
        seconds = len(pcm) / BYTES_PER_SECOND
        self._audio_total += seconds
        segment = self._active.get(stream)
        if segment is not None:
            try:
                self._accept(stream, segment, pcm, seconds)
            except Exception as exc:  # noqa: BLE001
                del self._active[stream]
                self._fail(stream, segment, exc)
                with contextlib.suppress(Exception):
                    self._engine.forget(stream)
        if self._audio_total - self._reported >= PROGRESS_EVERY_S:
            self._reported = self._audio_total
            self._send(Progress(self._audio_total, self._cpu()))

    def _accept(self, stream: str, segment: _Segment, pcm: bytes, seconds: float) -> None:
        """Hand audio to the engine and send a partial when one is due and has changed."""
        self._engine.accept(stream, pcm)
        segment.audio_s += seconds
        segment.since_partial_s += seconds
        if self._partials and 0 < self._partial_interval_s <= segment.since_partial_s:
            segment.since_partial_s = 0.0
            text = self._engine.partial(stream)
            if text and text != segment.last_partial:
                segment.last_partial = text
                self._send(Result(stream, segment.segment_id, text, False, segment.audio_s,
                                  self._audio_total, self._cpu()))

    def _end(self, stream: str) -> None:
        ended = self._active.pop(stream, None)
        if ended is None:
            return  # never began (the engine refused it) or already failed
        try:
            text = self._engine.end(stream)
        except Exception as exc:  # noqa: BLE001
            self._fail(stream, ended, exc)
            return
        self._send(Result(stream, ended.segment_id, text, True, ended.audio_s,
                          self._audio_total, self._cpu()))

    def _forget(self, stream: str) -> None:
        self._active.pop(stream, None)
        self._engine.forget(stream)

    def _fail(self, stream: str, segment: _Segment, exc: BaseException) -> None:
        logger.warning("recogniser pid=%d stream=%s segment=%s failed: %r", os.getpid(), stream,
                       segment.segment_id, exc)
        self._send(Failed(stream, segment.segment_id, repr(exc)[:200], self._audio_total,
                          self._cpu()))

    # ------------------------------------------------------------------ output

    def _cpu(self) -> float:
        return time.process_time() - self._cpu_start - self._setup_cpu

    def _send(self, message: procmsg.ToParent) -> None:
        self._sock.sendall(procmsg.frame(message))


def child_main(sock: socket.socket, engine_path: str, options: Mapping[str, Any],
               partial_interval_s: float) -> None:
    """Entry point of a recogniser process: load the engine ``engine_path`` names (called with
    ``options``) and serve the socket until it closes or ``Quit``. An engine that fails to load
    ends the process before ``Ready``, which the parent reports as a failed start."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    engine: Engine = load_object(engine_path)(options)  # type: ignore[operator]
    RecogniserChild(sock, engine, partial_interval_s).run()
