"""Run coturn's ``turnserver`` as a supervised child process (development and small deployments).

:class:`TurnServerSupervisor` writes the rendered config to a private temporary directory (0700,
file 0600), starts ``turnserver -c FILE``, forwards every line it prints to this module's logger
(secrets scrubbed), restarts it with capped exponential back-off when it dies, and stops it on
:meth:`~TurnServerSupervisor.aclose`: SIGTERM, a bounded wait, then SIGKILL. The one supervising
task is owned by the supervisor and cancelled and awaited on close.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from .coturn import TurnServerConfig, render_turnserver_config
from .errors import TurnServerError, TurnServerNotFound

logger = logging.getLogger(__name__)

#: Longest log line read from turnserver; longer lines are dropped.
MAX_LOG_LINE = 16_384
#: Recent log lines kept for error messages and :attr:`TurnServerSupervisor.recent_log`.
RECENT_LOG_LINES = 200


def find_turnserver(binary: str = "turnserver") -> str:
    """Return the path of the ``turnserver`` binary; raise :class:`TurnServerNotFound`."""
    path = shutil.which(binary)
    if path is None:
        raise TurnServerNotFound(
            f"{binary!r} not found: install coturn (Debian/Ubuntu: apt-get install coturn)"
        )
    return path


def write_private_file(directory: Path, name: str, text: str) -> Path:
    """Create ``directory/name`` with mode 0600 (never world-readable, even briefly)."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


class TurnServerSupervisor:
    """Keep one ``turnserver`` process running until :meth:`aclose`.

    Use as ``async with TurnServerSupervisor(config) as sup: ...`` or call :meth:`start` and
    :meth:`aclose` (idempotent) yourself.
    """

    def __init__(
        self,
        config: TurnServerConfig,
        *,
        binary: str = "turnserver",
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 30.0,
        stop_timeout_s: float = 5.0,
        on_log_line: Callable[[str], None] | None = None,
    ) -> None:
        """Configure the supervisor; nothing starts before :meth:`start`.

        ``min_backoff_s``/``max_backoff_s``: delay before a restart, doubled after every quick
        death and capped; reset once a process has lived ``healthy_after_s`` seconds.
        ``stop_timeout_s``: how long SIGTERM may take before SIGKILL. ``on_log_line``: also called
        with every (scrubbed) log line, e.g. to collect them in tests.
        """
        if not 0 < min_backoff_s <= max_backoff_s:
            raise ValueError("need 0 < min_backoff_s <= max_backoff_s")
        self._config = config
        self._binary = binary
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._healthy_after_s = healthy_after_s
        self._stop_timeout_s = stop_timeout_s
        self._on_log_line = on_log_line
        self._secrets = tuple(s for s in config.secrets if s)
        self._recent: collections.deque[str] = collections.deque(maxlen=RECENT_LOG_LINES)
        self._dir: Path | None = None
        self._config_path: Path | None = None
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._starts = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<TurnServerSupervisor pid={self.pid} starts={self._starts} closed={self._closed}>"

    @property
    def pid(self) -> int | None:
        """PID of the running ``turnserver``, or ``None`` between restarts and after close."""
        proc = self._process
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def starts(self) -> int:
        """How many times a ``turnserver`` process has been started (1 + restarts)."""
        return self._starts

    @property
    def config_path(self) -> Path | None:
        """The private config file while running."""
        return self._config_path

    @property
    def recent_log(self) -> tuple[str, ...]:
        """The last lines ``turnserver`` printed (secrets scrubbed)."""
        return tuple(self._recent)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Write the config and start ``turnserver``; raise :class:`TurnServerError` if it cannot.

        Returns once the first process is spawned (see :meth:`wait_ready` for listening).
        """
        if self._task is not None or self._closed:
            raise TurnServerError("supervisor already started")
        binary = find_turnserver(self._binary)
        self._dir = Path(tempfile.mkdtemp(prefix="connvo-turn-"))  # mode 0700
        config = self._config
        if config.userdb is None:
            config = dataclasses.replace(config, userdb=str(self._dir / "turndb"))
        self._config_path = write_private_file(
            self._dir, "turnserver.conf", render_turnserver_config(config)
        )
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(
            self._supervise(binary, self._config_path, first), name="turnserver-supervisor"
        )
        try:
            await first
        except BaseException:
            await self.aclose()
            raise

    async def wait_ready(self, timeout: float = 10.0) -> int:
        """Wait until a ``turnserver`` accepts TCP on its port; return its PID.

        Raises :class:`TurnServerError` after ``timeout`` seconds.
        """
        host = self._config.listen_ips[0] if self._config.listen_ips else "127.0.0.1"
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            pid = self.pid
            if pid is not None:
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(0.5):
                        _, writer = await asyncio.open_connection(host, self._config.port)
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    if self.pid == pid:
                        return pid
            await asyncio.sleep(0.05)
        tail = "\n".join(list(self._recent)[-10:])
        raise TurnServerError(
            f"turnserver not listening on {host}:{self._config.port} after {timeout:g} s; "
            f"last log lines:\n{tail}"
        )

    async def aclose(self) -> None:
        """Stop ``turnserver`` (SIGTERM, wait, SIGKILL) and the supervising task. Idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:
                logger.exception("turnserver supervisor failed")
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self._config_path = None
        logger.info("turnserver supervisor closed")

    async def _supervise(self, binary: str, config_path: Path, first: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._min_backoff_s
        try:
            while True:
                started = loop.time()
                try:
                    proc = await asyncio.create_subprocess_exec(
                        binary,
                        "-c",
                        str(config_path),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.STDOUT,
                        # Its own session: a terminal's Ctrl-C reaches us, and we stop it in order.
                        start_new_session=True,
                        limit=MAX_LOG_LINE,
                    )
                except OSError as exc:
                    if not first.done():
                        first.set_exception(TurnServerError(f"cannot start {binary}: {exc}"))
                        return
                    logger.error("cannot start %s: %s", binary, exc)
                else:
                    self._process = proc
                    self._starts += 1
                    logger.info("turnserver started (pid %d, start #%d)", proc.pid, self._starts)
                    if not first.done():
                        first.set_result(None)
                    pump = asyncio.create_task(self._pump(proc), name=f"turnserver-log-{proc.pid}")
                    try:
                        returncode = await proc.wait()
                    finally:
                        await self._stop(proc, pump)
                    lived = loop.time() - started
                    if lived >= self._healthy_after_s:
                        backoff = self._min_backoff_s
                    logger.warning(
                        "turnserver (pid %d) exited with %s after %.1f s; restarting in %.2f s",
                        proc.pid,
                        _describe_returncode(returncode),
                        lived,
                        backoff,
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
        finally:
            self._process = None
            if not first.done():
                first.set_exception(TurnServerError("supervisor stopped before turnserver started"))

    async def _stop(self, proc: asyncio.subprocess.Process, pump: asyncio.Task[None]) -> None:
        """Terminate ``proc`` if still running (SIGTERM, wait, SIGKILL) and finish its log pump."""
        try:
            if proc.returncode is None:
                logger.info("stopping turnserver (pid %d)", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(self._stop_timeout_s):
                        await proc.wait()
                except TimeoutError:
                    logger.warning("turnserver (pid %d) ignored SIGTERM; killing it", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
                logger.info(
                    "turnserver (pid %d) stopped: %s",
                    proc.pid,
                    _describe_returncode(proc.returncode),
                )
            # The pipe reaches EOF once the process is gone: let the pump drain the last lines.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.wait([pump])
        finally:
            if proc.returncode is None:  # cancelled again while stopping: do not leave it behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            if not pump.done():
                pump.cancel()
                await asyncio.wait([pump])
            if not pump.cancelled() and pump.exception() is not None:
                logger.error("turnserver log pump failed", exc_info=pump.exception())

    async def _pump(self, proc: asyncio.subprocess.Process) -> None:
        """Forward ``proc``'s output, line by line, to the logger."""
        stream = proc.stdout
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line above MAX_LOG_LINE: the reader dropped it
                continue
            if not raw:
                return
            line = self._scrub(raw.decode("utf-8", errors="replace").rstrip())
            if not line:
                continue
            self._recent.append(line)
            level = logging.WARNING if ("ERROR" in line or "WARNING" in line) else logging.INFO
            logger.log(level, "turnserver[%d]: %s", proc.pid, line)
            if self._on_log_line is not None:
                self._on_log_line(line)

    def _scrub(self, line: str) -> str:
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


def _describe_returncode(returncode: int | None) -> str:
    if returncode is None:
        return "no status"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"
