"""Waiting for a state in tests, not for a length of time.

A fixed ``asyncio.sleep`` is either too short on a loaded machine (a flaky test) or longer than
needed everywhere else (a slow one). :func:`wait_until` polls the observable state instead and,
when it does not come, fails naming what did not happen.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(predicate: Callable[[], T | Awaitable[T]], timeout: float = 5.0, *,
                     what: str, interval: float = 0.02) -> T:
    """Call ``predicate`` (plain or async) every ``interval`` seconds until it returns a truthy
    value, and return that value. After ``timeout`` seconds raise ``AssertionError`` saying that
    ``what`` did not happen, with the predicate's last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s "
                                 f"(last check returned {value!r})")
        await asyncio.sleep(interval)
