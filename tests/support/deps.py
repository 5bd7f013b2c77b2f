"""Missing test dependencies: a skip on a developer's machine, a failure under ``CI=true``."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether we run under CI (``CI=true``), where missing dependencies fail instead of skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(message: str) -> NoReturn:
    """Fail (under CI) or skip the test for a dependency that is not installed."""
    if in_ci():
        pytest.fail(message + " (required under CI=true)")
    pytest.skip(message)
