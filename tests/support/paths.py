"""Where the shared project material lives: ``shared/`` beside the repository (as in CI)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CONNVO_RTC_SHARED", REPO.parent / "shared"))
JFK = str(SHARED / "fixtures" / "jfk.flac")
SEEDS = SHARED / "seeds" / "openapi"
