"""``connvo-rtc tap``: standalone transcription tap workers.

Runs one :class:`~media.tap.worker.TapWorker` against the shared job queue in Redis until
SIGTERM/SIGINT, then leaves its rooms (their jobs are reclaimed by the other workers) and stops
its recogniser processes. Run as many as the load needs, on any machines that reach Redis and
the hub::

    connvo-rtc tap --redis redis://redis.internal:6379/0 --hub-url wss://rtc.example.com/ws \\
                   --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("connvo_rtc.tap")


def add_parser(subparsers: Any) -> None:
    """Register ``tap`` on the ``connvo-rtc`` command line."""
    p = subparsers.add_parser(
        "tap", help="run a standalone transcription tap worker",
        description="Claim transcription jobs from the shared Redis queue, join each room as "
                    "its tap and stream transcripts back through the hub. See "
                    "docs/transcription.md.")
    _arguments(p)
    p.set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--redis", required=not env("CONNVO_RTC_REDIS_URL"),
                   default=env("CONNVO_RTC_REDIS_URL"),
                   help="the hub's Redis: redis://, rediss:// or redis+cluster:// URL")
    p.add_argument("--redis-cluster", action="store_true", help="the --redis URL is a Cluster")
    p.add_argument("--config", default=env("CONNVO_RTC_CONFIG"), metavar="FILE",
                   help="the hub's config file: its [agent] section (and CONNVO_RTC_AGENT_* "
                        "variables) says how rooms with an AI persona think and speak "
                        "(docs/agent.md); default: script brain, espeak-ng, shipped scenarios")
    p.add_argument("--hub-url", required=True,
                   help="hub websocket URL the tap joins rooms through, e.g. ws://hub:8080/ws")
    p.add_argument("--recognizer", default=env("CONNVO_RTC_TAP_RECOGNIZER", "pocketsphinx"),
                   help="recogniser back-end (default pocketsphinx; see docs/transcription.md)")
    p.add_argument("--processes", type=int, default=int(env("CONNVO_RTC_TAP_PROCESSES", "1")),
                   help="recogniser processes (default 1; one per core you give it)")
    p.add_argument("--max-rooms", type=int, default=16, help="rooms this worker serves at once")
    p.add_argument("--max-backlog", type=float, default=15.0,
                   help="seconds of speech a recogniser may fall behind before segments are "
                        "dropped (the room is told); partials stop at a fifth of it (default 15)")
    p.add_argument("--reclaim-after", type=float, default=10.0,
                   help="seconds before a silent worker's job is reclaimed (match the hubs' "
                        "tap.reclaim_after_s; default 10)")
    p.add_argument("--recording-dir", default=env("CONNVO_RTC_RECORDING_DIR", "recordings"),
                   help="directory recorded rooms' files go to; the hubs serve downloads from "
                        "the same directory (their recording.dir; default ./recordings). With "
                        "CONNVO_RTC_RECORDING_STORAGE=s3 (and the CONNVO_RTC_RECORDING_S3_* "
                        "variables, as the hubs have them): the local spool uploads go from")
    p.add_argument("--worker-id", default="",
                   help="stable id in the job queue (default: tap-<host>-<pid>)")
    p.add_argument("--pin-host", action="append", default=None, metavar="ADDRESS",
                   help="gather ICE host candidates only on this address (repeatable; tests "
                        "use 127.0.0.1)")


async def _run(args: argparse.Namespace) -> int:
    from signaling.extras import missing, tap_modules
    from signaling.redis_store import connect
    from signaling.settings import ConfigError, load_settings
    from signaling.tapjobs import RedisTapJobs, TapJobs

    from .config import TapConfig
    from .worker import TapWorker

    try:
        # The [recording] bucket and the [agent] settings: the hubs' file and variables.
        # (a ConfigError is a ValueError: a bad file or variable is a configuration error)
        settings = load_settings(args.config, env=os.environ)
        recording = settings
        agent = dataclasses.asdict(settings.agent)
        config = TapConfig(
            agent=agent,
            recognizer=args.recognizer, processes=args.processes, max_rooms=args.max_rooms,
            max_backlog_s=args.max_backlog,
            reclaim_after_s=args.reclaim_after, renew_every_s=min(2.0, args.reclaim_after / 4),
            pin_host_addresses=tuple(args.pin_host) if args.pin_host else None,
            recording_dir=str(Path(args.recording_dir).resolve()),
            recording_s3=recording.s3_config(),
        )
        from .transcriber import resolve

        resolve(config.recognizer)  # an unknown back-end fails now, not at the first room
    except (ValueError, ConfigError) as exc:
        print(f"connvo-rtc tap: configuration error: {exc}", file=sys.stderr)
        return 1
    if absent := missing(tap_modules(config.recognizer)):
        print(f"connvo-rtc tap: needs {', '.join(absent)}: install connvo-rtc[tap]",
              file=sys.stderr)
        return 1
    if not args.hub_url.startswith(("ws://", "wss://")):
        print("connvo-rtc tap: --hub-url must be ws:// or wss://", file=sys.stderr)
        return 1
    client = connect(args.redis, cluster=args.redis_cluster)
    jobs: TapJobs = RedisTapJobs(
        client, reclaim_after_s=args.reclaim_after)
    worker_id = args.worker_id or f"tap-{socket.gethostname()}-{os.getpid()}"
    worker = TapWorker(jobs, hub_url=lambda: str(args.hub_url), config=config,
                       worker_id=worker_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    logger.info("tap worker %s serving %s via %s", worker_id, args.hub_url,
                args.redis.split("@")[-1])
    try:
        await stop.wait()
        logger.info("tap worker %s: signal received, shutting down", worker_id)
    finally:
        await worker.aclose()
        await jobs.aclose()
        await client.aclose()
    return 0


def run(args: argparse.Namespace) -> int:
    """``connvo-rtc tap``: run until SIGTERM/SIGINT."""
    return asyncio.run(_run(args))


def main(argv: list[str] | None = None) -> int:
    """``python -m media.tap``."""
    parser = argparse.ArgumentParser(prog="connvo-rtc tap", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default=os.environ.get("CONNVO_RTC_LOG_LEVEL", "INFO"))
    _arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)
