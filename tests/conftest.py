"""Shared fixtures: a real hub on a free loopback port per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.support.hub import HubHandle, start_hub

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(path: str) -> None:
    """Skip (locally) or fail (under CI=true) when a system dependency is missing."""
    import shutil

    if shutil.which(path) is None:
        message = f"{path} is not installed (make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    handle = await start_hub()
    try:
        yield handle
    finally:
        await handle.aclose()
