"""Task ownership helpers: whoever starts a task cancels and awaits it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any


async def cancel_all(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel every task, then wait for each to finish (errors were the task's to log)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    # gather, not ``suppress(CancelledError)`` around each await: that also swallowed a
    # cancellation of the caller itself (an aiohttp shutdown timeout expiring while a webhook
    # sender stopped), leaving its task "cancelling" and the shutdown hung.
    await asyncio.gather(*tasks, return_exceptions=True)


class TaskSet:
    """Background tasks with one owner: each is tracked until it ends, a crash is logged (and
    passed to ``on_crash``), and :meth:`aclose` cancels and awaits whatever still runs."""

    def __init__(self, label: str, on_crash: Callable[[BaseException], None] | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.label = label
        self._on_crash = on_crash
        self._logger = logger or logging.getLogger(__name__)
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{what} {self.label}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._logger.error("%s task %s crashed", self.label, task.get_name(), exc_info=exc)
            if self._on_crash is not None:
                self._on_crash(exc)

    async def wait(self, timeout: float) -> None:
        """Let whatever still runs finish, for at most ``timeout`` seconds (nothing is cancelled)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def aclose(self) -> None:
        await cancel_all(self._tasks)


class Timers:
    """Delayed actions keyed by an id, on a :class:`TaskSet` (a peer's resume grace, a room's
    empty timeout): starting one for a key replaces the one before, :meth:`cancel` stops it, and
    once :meth:`close` was called no new one starts."""

    def __init__(self, label: str, logger: logging.Logger | None = None) -> None:
        self.label = label
        self._tasks = TaskSet(label, logger=logger)
        self._by_key: dict[str, asyncio.Task[Any]] = {}
        self._closed = False

    def start(self, key: str, delay_s: float,
              action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``action()`` in ``delay_s`` seconds unless cancelled or replaced first."""
        if self._closed:
            return
        self.cancel(key)
        task = self._tasks.spawn(self._later(delay_s, action), f"{key}")
        self._by_key[key] = task
        task.add_done_callback(lambda t: self._forget(key, t))

    @staticmethod
    async def _later(delay_s: float, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        await asyncio.sleep(delay_s)
        await action()

    def _forget(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._by_key.get(key) is task:
            del self._by_key[key]

    def cancel(self, key: str) -> None:
        task = self._by_key.pop(key, None)
        if task is not None:
            task.cancel()

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def close(self) -> None:
        """Start no more timers (shutdown has begun); those running go on."""
        self._closed = True

    async def aclose(self) -> None:
        """Cancel and await every timer. Idempotent."""
        self._closed = True
        self._by_key.clear()
        await self._tasks.aclose()
