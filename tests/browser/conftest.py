"""Fixtures for the browser tests: a dev-mode hub in the test's loop (with or without its
transcription tap) and one headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from signaling.testing.hub import HubHandle, start_hub, test_settings
from tests.support.browser import Chromium, chromium


@pytest.fixture
async def dev_hub() -> AsyncIterator[HubHandle]:
    """A hub in dev mode (``/api/dev/login`` and invite links on), serving the demo page."""
    handle = await start_hub(test_settings(auth={"dev_login": True}))
    try:
        yield handle
    finally:
        await handle.aclose()


@pytest.fixture
async def transcribing_hub() -> AsyncIterator[HubHandle]:
    """A dev-mode hub running its in-process transcription tap (pocketsphinx), as
    ``connvo-rtc serve`` does by default."""
    handle = await start_hub(test_settings(auth={"dev_login": True}, tap={"enabled": True}))
    try:
        yield handle
    finally:
        await handle.aclose()


@pytest.fixture
async def browser() -> AsyncIterator[Chromium]:
    """Debian's Chromium, headless (skipped locally, failed under CI=true, when missing).
    A test fails if any of its pages threw an uncaught error."""
    async with chromium() as instance:
        yield instance
        errors = instance.page_errors()
    assert not errors, "errors on the pages:\n" + "\n".join(errors)
