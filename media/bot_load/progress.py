"""The live progress display: one updating line on a terminal, periodic lines otherwise.

No dependency: a carriage return and "erase line" (``ESC [ K``) on a TTY; when the output is
a file or a CI log, one line every ``every_s`` seconds and on each phase change.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .config import LoadTestConfig
from .report import TimelinePoint


class ProgressDisplay:
    """Renders ``LoadTest`` progress callbacks to ``stream`` (stderr by default)."""

    def __init__(self, config: LoadTestConfig, stream: TextIO | None = None, *,
                 every_s: float = 5.0, tty: bool | None = None) -> None:
        self._config = config
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._every_s = every_s
        self._last_line = 0.0
        self._phase = ""
        self._dirty = False

    def __call__(self, phase: str, point: TimelinePoint | None) -> None:
        changed = phase != self._phase
        self._phase = phase
        line = self._line(phase, point)
        if self._tty:
            self._stream.write("\r\x1b[K" + line)
            self._dirty = True
            self._stream.flush()
            return
        now = time.monotonic()
        if changed or now - self._last_line >= self._every_s:
            self._last_line = now
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        """End the updating line (call before printing anything else)."""
        if self._tty and self._dirty:
            self._stream.write("\n")
            self._stream.flush()
            self._dirty = False

    def _line(self, phase: str, point: TimelinePoint | None) -> str:
        c = self._config
        if point is None:
            meetings = f"{c.rooms} meeting{'s' if c.rooms != 1 else ''}"
            return {"provisioning": f"creating {meetings} ...",
                    "starting": f"starting {c.processes} bot processes ...",
                    "collecting": "collecting results ..."}.get(phase, phase)
        if point.t_s < c.ramp_s:
            stage = "ramping"
        elif point.t_s < c.window_start_s:
            stage = "settling"
        elif point.t_s < c.window_end_s:
            stage = f"measuring {point.t_s - c.window_start_s:4.0f}/{c.duration_s:g} s"
        else:
            stage = "leaving"
        pairs = c.rooms * c.peers_per_room * (c.peers_per_room - 1) // 2
        return (f"[{point.t_s:6.1f} s] {stage:<18} joined {point.joined}/{c.bots}  "
                f"connected {point.connected}/{c.bots}  failed {point.failed}  "
                f"connections {point.connections}/{pairs}  cpu {point.cpu_pct:.0f} %  "
                f"lag {point.loop_lag_ms:.0f} ms")
