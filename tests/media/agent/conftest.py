"""The agent's tests need espeak-ng (the embedded voice)."""

from __future__ import annotations

import pytest

from tests.conftest import require_binary


@pytest.fixture
def espeak() -> None:
    """espeak-ng is installed (a skip locally, a failure under CI=true)."""
    require_binary("espeak-ng")
