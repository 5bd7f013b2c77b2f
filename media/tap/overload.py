"""What the tap tells a room about how transcription keeps up: ``transcript-status``.

When recognition falls behind, the tap degrades in this order (the recogniser side is
:mod:`media.tap.procstream`) and says so:

1. ``delayed`` -- a speaker's recogniser is behind by a fifth of ``max_backlog_s`` (3 s by
   default): partials stop, finals come late, nothing is lost yet.
2. ``dropping`` -- a segment had to be dropped (the recogniser more than ``max_backlog_s``
   behind, or restarting with that much waiting) or cut short (twice that): one frame per
   such segment, naming its speaker, and the state stays ``dropping`` until
   :data:`RECOVER_S` have passed without another.
3. ``live`` -- caught up (partials back on) and nothing dropped for :data:`RECOVER_S`.

:class:`RoomStatus` is that state for one room; a
:class:`~media.tap.session.TapSession` feeds it and sends the frames it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from signaling import protocol

RECOVER_S = 5.0
"""Seconds without a dropped segment before the room hears ``delayed`` or ``live`` again."""


@runtime_checkable
class Pressure(Protocol):
    """What a :class:`~media.tap.transcriber.SpeechStream` may tell about its recogniser
    (:class:`~media.tap.procstream.ProcessStream` does; a stream without it never degrades)."""

    @property
    def behind_s(self) -> float:
        """Seconds of audio the recogniser has not consumed yet."""
        ...

    @property
    def degraded(self) -> bool:
        """The recogniser is behind: partials are off until it catches up."""
        ...


class RoomStatus:
    """The transcription state of one room. :meth:`dropped` and :meth:`update` return the
    frame to send, if any; :meth:`current` the one a newcomer needs."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.state: protocol.TranscriptState = "live"
        #: Segments dropped in this room since the tap joined.
        self.dropped_total = 0
        self._last_drop = float("-inf")
        self._behind_s = 0.0

    def dropped(self, peer_id: str) -> protocol.TranscriptStatusIn:
        """One of ``peer_id``'s segments was not (or not wholly) transcribed."""
        self.state = "dropping"
        self.dropped_total += 1
        self._last_drop = self._clock()
        return protocol.TranscriptStatusIn(state="dropping", peer_id=peer_id, dropped=1,
                                           behind_ms=self._behind_ms())

    def update(self, *, degraded: bool, behind_s: float) -> protocol.TranscriptStatusIn | None:
        """The room's recognisers now (any speaker's degraded; the most any is behind): a
        frame when the state changes."""
        self._behind_s = behind_s
        state: protocol.TranscriptState
        if self._clock() - self._last_drop < RECOVER_S:
            state = "dropping"
        elif degraded:
            state = "delayed"
        else:
            state = "live"
        if state == self.state:
            return None
        self.state = state
        return self.current()

    def current(self) -> protocol.TranscriptStatusIn:
        """The state as a frame (what a participant who just joined is sent, unless live)."""
        return protocol.TranscriptStatusIn(state=self.state, behind_ms=self._behind_ms())

    def _behind_ms(self) -> int:
        return min(86_400_000, max(0, round(self._behind_s * 1000)))
