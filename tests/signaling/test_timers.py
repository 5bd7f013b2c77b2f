"""Timers: the keyed delayed actions behind resume grace and empty-room timeouts (they were a
hand-made registry with string keys such as "grace:<peer>")."""

from __future__ import annotations

import asyncio

from signaling.tasks import Timers
from tests.waiting import wait_until


async def test_a_timer_runs_once_and_is_forgotten() -> None:
    timers = Timers("test")
    fired = asyncio.Event()

    async def action() -> None:
        fired.set()

    timers.start("p1", 0.0, action)
    assert "p1" in timers
    await asyncio.wait_for(fired.wait(), 5)
    await wait_until(lambda: "p1" not in timers, what="the timer forgetting its key")
    await timers.aclose()


async def test_starting_a_key_again_replaces_the_timer_and_cancel_stops_it() -> None:
    timers = Timers("test")
    ran: list[str] = []
    done = asyncio.Event()

    def record(what: str):  # type: ignore[no-untyped-def]
        async def action() -> None:
            ran.append(what)
            done.set()
        return action

    timers.start("p1", 60.0, record("first"))
    timers.start("p1", 0.0, record("second"))  # replaces the first
    timers.start("p2", 0.0, record("cancelled"))
    timers.cancel("p2")
    await asyncio.wait_for(done.wait(), 5)
    await timers.aclose()
    assert ran == ["second"]


async def test_after_close_no_timer_starts_and_aclose_cancels_the_rest() -> None:
    timers = Timers("test")
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def long_action() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    timers.start("p1", 0.0, long_action)
    await asyncio.wait_for(started.wait(), 5)
    timers.close()

    async def never() -> None:
        raise AssertionError("a timer started after close()")

    timers.start("p2", 0.0, never)
    assert "p2" not in timers
    await timers.aclose()
    assert cancelled.is_set()
