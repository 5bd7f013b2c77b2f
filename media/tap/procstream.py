"""The parent's side of one recogniser process, and one speaker's stream on it.

:class:`RecogniserProcess` is what :class:`~media.tap.procpool.ProcessTranscriber` knows of a
process: its socket, how far behind it is, whether it makes partials, and the messages held
for it while it is being restarted. :class:`ProcessStream` is a speaker's
:class:`~media.tap.transcriber.SpeechStream` pinned to one such process.

How far behind a process is decides what the tap gives up, in this order (``max_backlog_s``
is the transcriber's setting, 15 s by default):

1. **Partials** (at :data:`PARTIALS_OFF` of ``max_backlog_s`` behind, back at
   :data:`PARTIALS_ON`): the process makes finals only; the stream reports itself
   :attr:`~ProcessStream.degraded`. Nothing is lost; the text comes later.
2. **Latency**: up to ``max_backlog_s`` behind, every segment is still decoded, late.
3. **New segments** (beyond ``max_backlog_s``): refused; their final says ``dropped``.
4. **The running segment** (beyond twice that): cut short; its final has the words decoded so
   far and says ``dropped``.

While a process is being restarted its messages wait (:attr:`RecogniserProcess.held`) and
count as backlog, so speech during a restart goes through the same steps instead of being
dropped for want of a process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import procmsg
from .procmsg import Audio, Begin, End, Forget, Partials
from .transcriber import BYTES_PER_SECOND, Recognition, RecognitionCallback, TranscriberStats

logger = logging.getLogger(__name__)

PARTIALS_OFF = 0.2
"""A process this fraction of ``max_backlog_s`` behind stops making partials."""
PARTIALS_ON = 0.1
"""... and makes them again once it is back within this fraction (hysteresis)."""
MAX_HELD_FRAMES = 20_000
"""Messages held for a restarting process at most (the audio among them is bounded by the
backlog limits; this bounds the rest)."""


@dataclass
class RecogniserProcess:
    """One recogniser process as the parent sees it. ``max_backlog_s`` sets the thresholds
    above; ``name`` labels log lines."""

    index: int
    max_backlog_s: float
    name: str = "recogniser"
    process: Any = None  # multiprocessing.Process
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    ready: asyncio.Future[int] | None = None
    sent_audio_s: float = 0.0
    done_audio_s: float = 0.0
    seen_audio_s: float = 0.0  # child's running totals, for deltas into the stats
    seen_cpu_s: float = 0.0
    streams: set[str] = field(default_factory=set)
    warming: bool = False
    """The warm-up segment is in flight: its audio and CPU are not recognition."""
    partials: bool = True
    """The process makes partials (off while it is behind)."""
    restarting: bool = False
    """It died and a new one is on its way: messages wait in :attr:`held`."""
    held: list[bytes] = field(default_factory=list)
    held_audio_s: float = 0.0
    started_at: float = 0.0
    quick_deaths: int = 0
    """Deaths in a row, each soon after its start (the restart back-off grows with them)."""

    @property
    def backlog_s(self) -> float:
        """Audio seconds written to the process (or held for it) and not yet consumed."""
        return max(0.0, self.sent_audio_s - self.done_audio_s) + self.held_audio_s

    @property
    def up(self) -> bool:
        """The process has said ready, its socket is open and it is not being replaced."""
        return self.writer is not None and self.ready is not None and self.ready.done() \
            and not self.ready.cancelled() and self.ready.exception() is None \
            and not self.restarting

    @property
    def state(self) -> str:
        """For log lines: ``up``, ``restarting`` or ``down``."""
        return "up" if self.up else "restarting" if self.restarting else "down"

    def send(self, message: procmsg.ToChild) -> bool:
        """Write ``message`` to the process (or hold it while the process restarts); False
        when neither is possible."""
        frame = procmsg.frame(message)
        if self.up and self.writer is not None and not self.writer.is_closing():
            self.writer.write(frame)
            return True
        if self.restarting and len(self.held) < MAX_HELD_FRAMES:
            self.held.append(frame)
            return True
        return False

    def send_audio(self, stream: str, pcm: bytes) -> bool:
        """:meth:`send` an :class:`~media.tap.procmsg.Audio` message and count it as backlog."""
        seconds = len(pcm) / BYTES_PER_SECOND
        held = not self.up
        if not self.send(Audio(stream, pcm)):
            return False
        if held:
            self.held_audio_s += seconds
        else:
            self.sent_audio_s += seconds
        self.note_backlog()
        return True

    def release_held(self) -> int:
        """The new process is up: write what waited for it (in order). How many messages."""
        held, self.held = self.held, []
        if held and self.writer is not None:
            self.writer.write(b"".join(held))
        self.sent_audio_s += self.held_audio_s
        self.held_audio_s = 0.0
        return len(held)

    def note_backlog(self) -> None:
        """Turn partials off when the process has fallen behind, on when it has caught up."""
        behind = self.backlog_s
        if self.partials and behind >= PARTIALS_OFF * self.max_backlog_s:
            self.partials = False
            logger.warning("%s-%d: %.1f s behind: partial results off until it catches up",
                           self.name, self.index, behind)
            if self.up:
                self.send(Partials(False))
        elif not self.partials and behind <= PARTIALS_ON * self.max_backlog_s:
            self.partials = True
            logger.info("%s-%d: caught up (%.1f s behind): partial results on", self.name,
                        self.index, behind)
            if self.up:
                self.send(Partials(True))


class ProcessStream:
    """One speaker's :class:`~media.tap.transcriber.SpeechStream` on a process.

    It writes to its process through :meth:`RecogniserProcess.send`, counts into the
    transcriber's shared ``stats`` and calls ``on_finished`` once it is closed and has no final
    pending, so the transcriber can forget it.
    """

    def __init__(self, stream_id: str, proc: RecogniserProcess, on_result: RecognitionCallback,
                 name: str, *, stats: TranscriberStats, max_backlog_s: float,
                 on_finished: Callable[[ProcessStream], None]) -> None:
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
        self._cut: set[str] = set()  # segments cut short: their finals say dropped
        self._closed = False

    @property
    def behind_s(self) -> float:
        """Seconds of audio the stream's recogniser process has not consumed yet."""
        return self.proc.backlog_s

    @property
    def degraded(self) -> bool:
        """The stream's process is behind: no partials until it catches up."""
        return not self.proc.partials

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
            # Not "0 up": name the process, its state and how far behind it is.
            logger.warning("%s: segment %s dropped (recogniser process %d %s, %.1f s behind, "
                           "limit %.1f s)", self.name, segment_id, proc.index, proc.state,
                           proc.backlog_s, self._max_backlog_s)
            self._stats.dropped_segments += 1
            self._refused = True
            # Its final now, not when the speech ends: the room hears at once that it is not
            # being transcribed (the writes and end that follow are ignored).
            self.deliver(Recognition(segment_id, "", True, dropped=True))
            return False
        self._refused = False
        return True

    def write(self, pcm: bytes) -> None:
        """See :meth:`~media.tap.transcriber.SpeechStream.write`."""
        if self._segment is None or self._refused or not pcm:
            return
        proc = self.proc
        if proc.backlog_s > 2 * self._max_backlog_s:
            logger.warning("%s: segment %s cut short (recogniser process %d %s, %.1f s behind)",
                           self.name, self._segment, proc.index, proc.state, proc.backlog_s)
            self._stats.dropped_segments += 1
            proc.send(End(self.stream_id))
            self._pending[self._segment] = time.monotonic()
            self._cut.add(self._segment)
            self._refused = True
            return
        proc.send_audio(self.stream_id, pcm)

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
            if result.segment_id in self._cut:
                self._cut.discard(result.segment_id)
                result = dataclasses.replace(result, dropped=True)
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
