"""The hub's wall clock: unix milliseconds, the unit of every timestamp it stores or sends."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
