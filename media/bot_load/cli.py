"""``connvo-rtc loadtest``: fill a hub with bots, print a summary, gate a deploy.

::

    connvo-rtc loadtest --url wss://rtc.example.com/ws --secret "$CONNVO_RTC_AUTH_SECRET" \\
        --rooms 25 --peers-per-room 4 --ramp 10 --duration 60 \\
        --out report.json --plot report.png --min-delivery 95 --max-failed-bots 0

Exit codes: 0 done (and every threshold given was met), 1 a threshold was missed, 2 bad
arguments, 3 the run could not start (the hub refused the meetings, bot processes did not
start), 130 interrupted by Ctrl-C (a partial report is still written when the bots had
started). See ``docs/loadtest.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from ..bots import PROFILES
from .config import LoadTestConfig, Thresholds, is_loopback_url
from .plot import plotting_available, write_plot
from .pool import WorkerError
from .progress import ProgressDisplay
from .provision import ProvisionError
from .runner import LoadTest, LoadTestInterrupted
from .table import render_table

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_THRESHOLD, EXIT_USAGE, EXIT_NOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def add_parser(subparsers: Any) -> None:
    """Register ``loadtest`` on the ``connvo-rtc`` command line."""
    p = subparsers.add_parser(
        "loadtest", help="load-test a hub with headless WebRTC bots",
        description="Create meetings, fill them with headless aiortc bots that send audio to "
                    "each other, and report join/connect/first-audio latency, media delivery, "
                    "errors and the bots' CPU and memory. See docs/loadtest.md.")
    target = p.add_argument_group("target")
    target.add_argument("--url", required=True, help="hub websocket URL, e.g. ws://host:8080/ws")
    target.add_argument("--api-url", default="",
                        help="hub HTTP base URL for the meeting API (default: from --url)")
    target.add_argument("--token", default=os.environ.get("CONNVO_RTC_LOADTEST_TOKEN", ""),
                        help="user JWT of the meetings' organizer; join tokens come from "
                             "createJoinToken (env CONNVO_RTC_LOADTEST_TOKEN)")
    target.add_argument("--secret", default="",
                        help="the hub's HS256 auth secret: mint the organizer's and the bots' "
                             "tokens locally (env CONNVO_RTC_AUTH_SECRET; the first of a list). "
                             "With neither --token nor --secret, a dev-mode hub's "
                             "/api/dev/login is used")
    load = p.add_argument_group("load")
    load.add_argument("--rooms", type=int, default=1, help="meetings to create (default 1)")
    load.add_argument("--peers-per-room", type=int, default=4, help="bots per room, 2..4")
    load.add_argument("--ramp", type=float, default=5.0, help="joins per second (default 5)")
    load.add_argument("--duration", type=float, default=30.0,
                      help="measurement window, seconds (default 30)")
    load.add_argument("--settle", type=float, default=5.0,
                      help="seconds between the last join and the window (default 5)")
    load.add_argument("--video", action="store_true", help="bots also send VP8 video")
    load.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                      help="bot processes (default: one per core)")
    load.add_argument("--profile", choices=PROFILES, default="cheap",
                      help="cheap: pre-encoded Opus, nothing decoded (default); naive: encode "
                           "per connection and decode everything, like plain aiortc")
    load.add_argument("--audio", help="audio file the bots send, looped (default: a tone)")
    net = p.add_argument_group("network")
    net.add_argument("--pin-host", action="append", default=None, metavar="ADDR",
                     help="gather ICE host candidates only on ADDR (repeatable); default "
                          "127.0.0.1 when --url is a loopback URL, else every interface")
    net.add_argument("--relay", action="store_true", help="use TURN-relayed candidates only")
    net.add_argument("--ice-timeout", type=float, default=15.0,
                     help="offer -> connected deadline per connection, seconds")
    out = p.add_argument_group("output")
    out.add_argument("--out", help="write the JSON report here")
    out.add_argument("--plot", help="write a PNG (latency CDFs, peers over time) here")
    out.add_argument("--quiet", action="store_true", help="no live progress")
    out.add_argument("-v", "--verbose", action="store_true", help="show the bot processes' logs")
    gate = p.add_argument_group("thresholds (exit code 1 when one is missed)")
    gate.add_argument("--min-delivery", type=float, metavar="PCT",
                      help="media delivery at least PCT %%")
    gate.add_argument("--max-loss", type=float, metavar="PCT", help="packet loss at most PCT %%")
    gate.add_argument("--max-errors", type=int, metavar="N", help="errors (all codes) at most N")
    gate.add_argument("--max-failed-bots", type=int, metavar="N",
                      help="bots that failed or never joined at most N")
    gate.add_argument("--max-join-p95", type=float, metavar="S",
                      help="join latency p95 at most S seconds")
    gate.add_argument("--max-connect-p95", type=float, metavar="S",
                      help="time to connected p95 at most S seconds")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> LoadTestConfig:
    """Build the run's configuration; raises ``ValueError`` on a bad combination."""
    secret = args.secret or os.environ.get("CONNVO_RTC_AUTH_SECRET", "").split(",")[0].strip()
    if args.pin_host:
        pins: tuple[str, ...] | None = tuple(args.pin_host)
    else:
        pins = ("127.0.0.1",) if is_loopback_url(args.url) else None
    thresholds = Thresholds(
        min_delivery_pct=args.min_delivery, max_loss_pct=args.max_loss,
        max_errors=args.max_errors, max_failed_bots=args.max_failed_bots,
        max_join_p95_s=args.max_join_p95, max_connect_p95_s=args.max_connect_p95,
    )
    return LoadTestConfig(
        ws_url=args.url, api_url=args.api_url, user_token=args.token, secret=secret,
        rooms=args.rooms, peers_per_room=args.peers_per_room, ramp=args.ramp,
        duration_s=args.duration, settle_s=args.settle, video=args.video,
        processes=args.processes, profile=args.profile, audio_path=args.audio,
        pin_host_addresses=pins, relay=args.relay, ice_timeout_s=args.ice_timeout,
        worker_log_level="INFO" if args.verbose else "WARNING", thresholds=thresholds,
    )


def run(args: argparse.Namespace) -> int:
    """Run the load test the arguments describe; return the exit code."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"connvo-rtc loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.plot and not plotting_available():
        print("connvo-rtc loadtest: --plot needs matplotlib: install connvo-rtc[loadtest]",
              file=sys.stderr)
        return EXIT_USAGE
    if args.audio and not os.path.isfile(args.audio):
        print(f"connvo-rtc loadtest: no such audio file {args.audio!r}", file=sys.stderr)
        return EXIT_USAGE
    code, report = asyncio.run(_run(config, args))
    if report is None:
        return code
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    if args.plot:
        write_plot(report, args.plot)
    print(render_table(report))
    if args.out or args.plot:
        written = " and ".join(x for x in (args.out, args.plot) if x)
        print(f"\nwrote {written}")
    if report["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_OK if report["thresholds"]["passed"] else EXIT_THRESHOLD


async def _run(config: LoadTestConfig, args: argparse.Namespace
               ) -> tuple[int, dict[str, Any] | None]:
    """Run with a live display and a two-stage Ctrl-C; ``(exit code, report or None)``."""
    display = None if args.quiet else ProgressDisplay(config)
    test = LoadTest(config, on_progress=display, echo_worker_logs=args.verbose)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    presses = 0

    def on_sigint() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            print("\nstopping: the bots leave now (Ctrl-C again to abort)", file=sys.stderr)
            test.stop()
        elif main is not None:
            main.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        report = await test.run()
    except (ProvisionError, WorkerError) as exc:
        _close(display)
        print(f"connvo-rtc loadtest: could not run: {exc}", file=sys.stderr)
        return EXIT_NOT_RUN, None
    except (LoadTestInterrupted, asyncio.CancelledError):
        # The top of the program: our own second Ctrl-C cancelled it; becoming an exit code
        # is the whole point here (LoadTest.run has reaped the bot processes on the way out).
        _close(display)
        print("connvo-rtc loadtest: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED, None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    _close(display)
    return EXIT_OK, report


def _close(display: ProgressDisplay | None) -> None:
    if display is not None:
        display.close()
