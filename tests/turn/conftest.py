"""Fixtures for the TURN tests: a real coturn ``turnserver`` on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.turnserver import TurnServerHandle, run_turnserver

#: Signs new credentials (first ``static-auth-secret``).
FIRST_SECRET = "first-secret-0123456789abcdef"
#: Still accepted by coturn (second ``static-auth-secret``): the secret being rotated in or out.
SECOND_SECRET = "second-secret-0123456789abcdef"
#: No longer configured anywhere.
ROTATED_OUT_SECRET = "retired-secret-0123456789abcdef"


@pytest.fixture
async def turnserver() -> AsyncIterator[TurnServerHandle]:
    """A turnserver accepting FIRST_SECRET and SECOND_SECRET."""
    async with run_turnserver([FIRST_SECRET, SECOND_SECRET]) as handle:
        yield handle


@pytest.fixture
async def turnserver_tls() -> AsyncIterator[TurnServerHandle]:
    """Like ``turnserver``, plus a TLS listener with a self-signed certificate for 127.0.0.1."""
    async with run_turnserver([FIRST_SECRET, SECOND_SECRET], tls=True) as handle:
        yield handle
