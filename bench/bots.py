"""Cheap bots vs naive aiortc peers: the most 4-peer audio rooms each sustains on this machine.

    .venv/bin/python -m bench.bots [--duration 10] [--max-rooms 64] [--json bench/out/bots.json]

Starts a real hub (``connvo-rtc serve``, in-memory, on a free loopback port) and runs the real
load tester (:mod:`media.bot_load`: one bot process per core, ICE pinned to 127.0.0.1, so all
traffic stays on loopback) with two kinds of bots:

- **naive aiortc**: a tone that aiortc Opus-encodes once per peer connection, every received
  track decoded -- what a plain ``RTCPeerConnection`` with an audio track does
  (``--profile naive``: our peer client configured that way);
- **cheap bots**: Opus encoded once per bot and replayed as packets, received audio counted
  from RTP but never decoded (``--profile cheap``, what ``connvo-rtc loadtest`` runs).

For each kind it steps the number of rooms -- doubling until a step fails, then bisecting -- and
reports the largest count *sustained*: every bot joined and connected to every other bot of its
room, and media delivery (audio packets received / expected over the window) >= 95 %. Each step
also prints the bots' p95 latencies: ``join`` -> ``joined``, and from each peer connection's
offer to ``connected`` and to its first audio (figures tests/media/test_peer_hub.py used to
bound). A step
that fails is tried again (up to ``--tries`` times) before it counts as failed: other jobs
share this machine, and a burst of theirs stalls the bots for a second or two.
The two searches alternate step by step so both see the same machine. Prints every step, then
the comparison table (peers per core, CPU per bot, and the ratios); writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

if not __package__:  # run as a file: bench/signaling.py would shadow the signaling package
    sys.exit("run it as a module from the repository root: .venv/bin/python -m bench.bots")

from media.bot_load import LoadTest, LoadTestConfig
from signaling.testing.ports import free_port

SECRET = "bench-bots-secret-0123456789abcdef-0123456789"
HUB_ENV = {"CONNVO_RTC_AUTH_SECRET": SECRET, "CONNVO_RTC_TAP_ENABLED": "false",
           "CONNVO_RTC_LIMITS_API_REQUESTS_PER_SECOND": "1000", "CONNVO_RTC_LOG_LEVEL": "WARNING",
           "CONNVO_RTC_LIMITS_MAX_OPEN_MEETINGS_PER_USER": "0"}
PROFILES = (("naive aiortc", "naive"), ("cheap bots", "cheap"))
MIN_DELIVERY_PCT = 95.0


@contextlib.asynccontextmanager
async def hub_process() -> AsyncIterator[str]:
    """A hub on a free loopback port; yields its websocket URL."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "signaling.cli", "serve", "--host", "127.0.0.1", "--port",
            str(port), stdout=log, stderr=log, env={**os.environ, **HUB_ENV})
        try:
            await wait_ready(port, proc, log)
            yield f"ws://127.0.0.1:{port}/ws"
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(15):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def wait_ready(port: int, proc: asyncio.subprocess.Process, log: Any) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if proc.returncode is not None:
                log.seek(0)
                raise RuntimeError(f"hub exited: {log.read()[-2000:].decode()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("hub not ready within 20 s")


@dataclass
class Step:
    rooms: int
    sustained: bool
    delivery_pct: float | None
    joined: int
    fully_connected: int
    bots: int
    cpu_pct_per_bot: float | None
    cpu_pct_total: float
    rss_bytes_per_bot: int | None
    loop_lag_ms: float
    load_avg: float
    tries: int
    #: p95 latencies of the step's bots, ms (None when no bot got that far)
    join_p95_ms: float | None = None
    connect_p95_ms: float | None = None
    first_audio_p95_ms: float | None = None


@dataclass
class Search:
    """Doubling, then bisection, over room counts for one profile."""

    label: str
    profile: str
    max_rooms: int
    good: int = 0
    bad: int | None = None
    steps: list[Step] = field(default_factory=list)

    def next_rooms(self) -> int | None:
        if self.bad is None:
            nxt = max(1, self.good * 2)
            return nxt if nxt <= self.max_rooms else None
        if self.bad - self.good <= 1:
            return None
        return (self.good + self.bad) // 2

    def record(self, step: Step) -> None:
        self.steps.append(step)
        if step.sustained:
            self.good = max(self.good, step.rooms)
        else:
            self.bad = step.rooms if self.bad is None else min(self.bad, step.rooms)

    def best(self) -> Step | None:
        done = [s for s in self.steps if s.sustained and s.rooms == self.good]
        return done[-1] if done else None


async def run_step(ws_url: str, profile: str, rooms: int, args: argparse.Namespace
                   ) -> dict[str, Any]:
    config = LoadTestConfig(
        ws_url=ws_url, secret=SECRET, rooms=rooms, peers_per_room=4, ramp=args.ramp,
        duration_s=args.duration, settle_s=args.settle, processes=args.processes,
        profile=profile, pin_host_addresses=("127.0.0.1",),  # type: ignore[arg-type]
    )
    return await LoadTest(config).run()


def _p95_ms(distribution: dict[str, Any]) -> float | None:
    return None if distribution["p95"] is None else distribution["p95"] * 1e3


def to_step(rooms: int, report: dict[str, Any], tries: int) -> Step:
    totals, media, res = report["totals"], report["media"], report["resources"]
    latency = report["latency"]
    delivery = media["delivery_pct"]
    sustained = (totals["fully_connected"] == totals["bots"] and delivery is not None
                 and delivery >= MIN_DELIVERY_PCT)
    return Step(rooms=rooms, sustained=sustained, delivery_pct=delivery,
                joined=totals["joined"], fully_connected=totals["fully_connected"],
                bots=totals["bots"], cpu_pct_per_bot=res["cpu_pct_per_bot"],
                cpu_pct_total=res["cpu_pct_total"], rss_bytes_per_bot=res["rss_bytes_per_bot"],
                loop_lag_ms=res["window_loop_lag_ms"], load_avg=os.getloadavg()[0], tries=tries,
                join_p95_ms=_p95_ms(latency["join_s"]),
                connect_p95_ms=_p95_ms(latency["connect_s"]),
                first_audio_p95_ms=_p95_ms(latency["first_audio_s"]))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def print_step(label: str, step: Step) -> None:
    delivery = "-" if step.delivery_pct is None else f"{step.delivery_pct:6.2f} %"
    per_bot = "-" if step.cpu_pct_per_bot is None else f"{step.cpu_pct_per_bot:5.1f} %"
    print(f"  {label:<13} {step.rooms:>3} rooms ({step.bots:>3} bots): delivery {delivery}, "
          f"{step.fully_connected}/{step.bots} fully connected, CPU {step.cpu_pct_total:5.0f} % "
          f"({per_bot}/bot), loop lag {step.loop_lag_ms:5.0f} ms, load {step.load_avg:.2f}; "
          f"p95 join {_ms(step.join_p95_ms)}, connect {_ms(step.connect_p95_ms)}, "
          f"first audio {_ms(step.first_audio_p95_ms)}"
          f"{'' if step.sustained else '  -> not sustained'}"
          f"{f' (try {step.tries})' if step.tries > 1 else ''}", flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    searches = [Search(label, profile, args.max_rooms) for label, profile in PROFILES]
    async with hub_process() as ws_url:
        while True:
            progressed = False
            for search in searches:  # alternate: both kinds see the same machine
                rooms = search.next_rooms()
                if rooms is None:
                    continue
                progressed = True
                step = None
                for attempt in range(1, args.tries + 1):
                    report = await run_step(ws_url, search.profile, rooms, args)
                    step = to_step(rooms, report, attempt)
                    print_step(search.label, step)
                    await asyncio.sleep(1.0)  # let the sockets of the last step close
                    if step.sustained:
                        break
                assert step is not None
                search.record(step)
            if not progressed:
                break
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {"cores": cores, "duration_s": args.duration,
                               "min_delivery_pct": MIN_DELIVERY_PCT, "profiles": {}}
    for search in searches:
        best = search.best()
        results["profiles"][search.profile] = {
            "label": search.label,
            "max_rooms": search.good,
            "peers": search.good * 4,
            "peers_per_core": search.good * 4 / cores,
            "at_max": best.__dict__ if best else None,
            "first_failed_rooms": search.bad,
            "steps": [s.__dict__ for s in search.steps],
        }
    return results


def table(results: dict[str, Any]) -> str:
    """The comparison table (markdown)."""
    naive, cheap = results["profiles"]["naive"], results["profiles"]["cheap"]

    def at(p: dict[str, Any], key: str) -> Any:
        return (p["at_max"] or {}).get(key)

    def cpu_capacity(p: dict[str, Any]) -> float | None:
        per_bot = at(p, "cpu_pct_per_bot")
        return 100 / per_bot if per_bot else None

    def cpu_at(p: dict[str, Any], rooms: int) -> str:
        steps = [s for s in p["steps"] if s["rooms"] == rooms and s["sustained"]]
        per_bot = steps[0]["cpu_pct_per_bot"] if steps else None
        return "-" if per_bot is None else f"{per_bot:.1f} %"

    header = ("| bots | 4-peer rooms sustained | audio peers | peers per core | "
              "CPU per bot at that load | CPU per bot, 2 rooms | bots per core by CPU | "
              "RSS per bot | delivery | first failing |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for p in (naive, cheap):
        per_bot = at(p, "cpu_pct_per_bot")
        rss = at(p, "rss_bytes_per_bot")
        capacity = cpu_capacity(p)
        delivery = at(p, "delivery_pct")
        lines.append(
            f"| {p['label']} | {p['max_rooms']} | {p['peers']} | {p['peers_per_core']:.1f} | "
            f"{'-' if per_bot is None else f'{per_bot:.1f} %'} | {cpu_at(p, 2)} | "
            f"{'-' if capacity is None else f'{capacity:.0f}'} | "
            f"{'-' if not rss else f'{rss / 2**20:.0f} MiB'} | "
            f"{'-' if delivery is None else f'{delivery:.2f} %'} | "
            f"{'-' if p['first_failed_rooms'] is None else p['first_failed_rooms']} rooms |")
    ratio = cheap["peers"] / naive["peers"] if naive["peers"] else float("inf")
    n_cap, c_cap = cpu_capacity(naive), cpu_capacity(cheap)
    cap_ratio = f"**{c_cap / n_cap:.1f}x**" if n_cap and c_cap else "-"
    lines.append(f"| **cheap / naive** | **{ratio:.1f}x** | | **{ratio:.1f}x** | | | {cap_ratio} "
                 f"| | | |")
    return "\n".join(lines)


def machine_line() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="window per step, s")
    parser.add_argument("--settle", type=float, default=5.0, help="settle per step, s")
    parser.add_argument("--ramp", type=float, default=8.0, help="joins per second")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-rooms", type=int, default=64)
    parser.add_argument("--tries", type=int, default=3, help="tries before a step fails")
    parser.add_argument("--json", default="bench/out/bots.json", help="write the figures here")
    args = parser.parse_args()
    print(f"bots benchmark: 4-peer audio rooms, {args.duration:g} s window per step, "
          f"{args.processes} bot processes; machine: {machine_line()}", flush=True)
    started = time.monotonic()
    results = asyncio.run(run(args))
    results["machine_load_end"] = os.getloadavg()
    print(f"\nafter {(time.monotonic() - started) / 60:.1f} min; machine: {machine_line()}")
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
