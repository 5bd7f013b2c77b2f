"""``connvo-rtc serve --workers N``: N hub processes on one port.

Each worker is a full hub process (``connvo-rtc serve --worker-index I``) that binds the port
with ``SO_REUSEPORT``, so the kernel spreads new connections across them; they share state
through Redis, so no sticky sessions are needed. This parent only supervises: it restarts a
worker that dies (with back-off), forwards SIGTERM/SIGINT, and waits for the staged shutdown of
every worker. Chosen over gunicorn's aiohttp worker because it needs no extra dependency and
keeps one code path for one and many workers.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def run_workers(argv: Sequence[str], workers: int, *, stop_timeout_s: float = 15.0) -> int:
    """Run ``workers`` copies of ``connvo-rtc serve`` with ``argv`` until a signal arrives."""
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        logger.info("supervisor: signal %d, stopping %d workers", signum, workers)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def spawn(index: int) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "signaling.cli", *argv, "--worker-index", str(index)]
        proc = subprocess.Popen(args, env={**os.environ, "CONNVO_RTC_WORKER_INDEX": str(index)})
        logger.info("supervisor: worker %d started, pid %d", index, proc.pid)
        return proc

    procs = {i: spawn(i) for i in range(workers)}
    backoff = {i: 0.5 for i in range(workers)}
    started = {i: time.monotonic() for i in range(workers)}
    while not stopping:
        time.sleep(0.2)
        for index, proc in list(procs.items()):
            code = proc.poll()
            if code is None or stopping:
                continue
            if time.monotonic() - started[index] > 30:
                backoff[index] = 0.5  # it had been healthy: restart promptly
            logger.warning("supervisor: worker %d (pid %d) exited with %s; restarting in %.1f s",
                           index, proc.pid, code, backoff[index])
            time.sleep(backoff[index])
            backoff[index] = min(backoff[index] * 2, 30.0)
            procs[index] = spawn(index)
            started[index] = time.monotonic()
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + stop_timeout_s
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("supervisor: worker pid %d did not stop; killing", proc.pid)
            proc.kill()
            proc.wait()
    logger.info("supervisor: all workers stopped")
    return 0
