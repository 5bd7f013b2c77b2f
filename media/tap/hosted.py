"""The hub's tap process: a :class:`~media.tap.worker.TapWorker` whose job queue is the hub's.

:class:`~media.tap.host.TapHost` starts it as ``python -m media.tap.hosted --fd N`` with one
end of a socket pair on descriptor ``N``. The first message says which worker to run
(:class:`~media.tap.hostmsg.Setup`); from then on every job-queue call of the worker is a
request to the hub (:class:`HubJobs`), and the process tells the hub once its recognisers are
warm. It runs until SIGTERM (the hub's staged shutdown: it leaves its rooms, sending the
finals in flight, and stops its recognisers) or until the link closes (the hub is gone: it
exits too, so ``kill -9`` of a hub leaves no tap behind).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys

import msgspec

from signaling.tapjobs import TapJob

from . import hostmsg, procmsg
from .config import TapConfig
from .hostmsg import (
    Claim,
    Complete,
    Enqueue,
    Release,
    Renew,
    Reply,
    Setup,
    TapJobsCallError,
    TapLinkError,
    Warm,
)

logger = logging.getLogger("media.tap.hosted")  # not "__main__" under -m

CALL_TIMEOUT_S = 10.0
"""A job-queue call the hub has not answered within this (plus the claim's own wait) fails."""
SETUP_TIMEOUT_S = 30.0


class HubJobs:
    """:class:`~signaling.tapjobs.TapJobs` over the link to the hub: each call is one request
    answered by one :class:`~media.tap.hostmsg.Reply`. :attr:`hub_url` is the URL the hub
    last said to join rooms at; :attr:`closed` is set once the hub is gone."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._calls: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)
        self._setup: asyncio.Future[Setup] = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._read(), name="hub link")
        self.hub_url = ""
        self.closed = asyncio.Event()

    async def setup(self, timeout_s: float = SETUP_TIMEOUT_S) -> Setup:
        """The hub's first message."""
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(self._setup)

    async def _read(self) -> None:
        try:
            while True:
                message = hostmsg.decode_to_tap(await procmsg.read_frame(self._reader))
                if isinstance(message, Setup):
                    if not self._setup.done():
                        self._setup.set_result(message)
                    continue
                if message.hub_url:
                    self.hub_url = message.hub_url
                call = self._calls.pop(message.call, None)
                if call is not None and not call.done():
                    call.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            logger.info("tap process: the hub closed the link")
        except TapLinkError:
            logger.exception("tap process: bad frame from the hub")
        finally:
            self.closed.set()
            gone = TapLinkError("the hub is gone")
            if not self._setup.done():
                self._setup.set_exception(gone)
            for call in self._calls.values():
                if not call.done():
                    call.set_exception(gone)
            self._calls.clear()

    async def _call(self, request: hostmsg.Request, timeout_s: float = CALL_TIMEOUT_S) -> Reply:
        if self.closed.is_set():
            raise TapLinkError("the hub is gone")
        reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._calls[request.call] = reply
        self._writer.write(procmsg.frame(request))
        try:
            async with asyncio.timeout(timeout_s):
                answer = await reply
        except TimeoutError:
            raise TapLinkError(f"the hub did not answer {type(request).__name__.lower()} "
                               f"within {timeout_s:.0f} s") from None
        finally:
            self._calls.pop(request.call, None)
        if answer.error:
            raise TapJobsCallError(answer.error)
        return answer

    async def enqueue(self, job: TapJob) -> bool:
        return (await self._call(Enqueue(call=next(self._ids), job=job))).ok

    async def claim(self, worker_id: str, *, timeout_s: float) -> TapJob | None:
        request = Claim(call=next(self._ids), worker_id=worker_id, timeout_s=timeout_s)
        return (await self._call(request, timeout_s + CALL_TIMEOUT_S)).job

    async def renew(self, worker_id: str, job: TapJob) -> bool:
        return (await self._call(Renew(call=next(self._ids), worker_id=worker_id,
                                       job=job))).ok

    async def complete(self, job: TapJob) -> None:
        await self._call(Complete(call=next(self._ids), job=job))

    async def release(self, worker_id: str, job: TapJob) -> None:
        await self._call(Release(call=next(self._ids), worker_id=worker_id, job=job))

    def tell_warm(self, recognisers: list[int]) -> None:
        """Tell the hub the recognisers are warm."""
        if not self.closed.is_set():
            self._writer.write(procmsg.frame(Warm(pid=os.getpid(), recognisers=recognisers)))

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(Exception):
            self._writer.close()


async def serve(sock: socket.socket) -> int:
    """Run the worker the hub sets up over ``sock`` until SIGTERM or the hub is gone."""
    from .procpool import ProcessTranscriber
    from .worker import TapWorker

    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=procmsg.MAX_FRAME)
    jobs = HubJobs(reader, writer)
    try:
        setup = await jobs.setup()
        config = msgspec.json.decode(setup.config, type=TapConfig)
    except (TapLinkError, TimeoutError, msgspec.DecodeError) as exc:
        logger.error("tap process: no usable setup from the hub: %r", exc)
        await jobs.aclose()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = TapWorker(jobs, hub_url=lambda: jobs.hub_url, config=config,
                       worker_id=setup.worker_id)

    async def report_warm() -> None:
        await worker.wait_warm()
        transcriber = worker.transcriber
        jobs.tell_warm(transcriber.processes if isinstance(transcriber, ProcessTranscriber)
                       else [])

    await worker.start()
    reporter = loop.create_task(report_warm(), name="report warm")
    hub_gone = loop.create_task(jobs.closed.wait(), name="hub gone")
    stopping = loop.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({hub_gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
        logger.info("tap process %d: %s; shutting down", os.getpid(),
                    "signal received" if stop.is_set() else "the hub is gone")
    finally:
        for task in (reporter, hub_gone, stopping):
            task.cancel()
        await asyncio.gather(reporter, hub_gone, stopping, return_exceptions=True)
        await worker.aclose()
        await jobs.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m media.tap.hosted --fd N``: only :class:`~media.tap.host.TapHost` starts
    this."""
    parser = argparse.ArgumentParser(prog="python -m media.tap.hosted",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="the hub's end of the link")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s tap[%(process)d] %(name)s: "
                               "%(message)s")
    sock = socket.socket(fileno=args.fd)
    try:  # the event loop the hub runs (its tap ran on it before it had its own process)
        import uvloop
    except ImportError:
        return asyncio.run(serve(sock))
    return uvloop.run(serve(sock))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
