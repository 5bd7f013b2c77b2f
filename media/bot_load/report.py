"""Turning the bots' results into the load-test report (a JSON-ready dict).

Every figure the table and the plot show comes from this dict, and the dict holds the raw
material too (every latency sample, every bot's result, the timeline), so a report can be
re-analysed later. ``docs/loadtest.md`` documents each field; a test checks that every field
documented there is present.

Definitions (also in the docs):

- *join latency*: websocket connect + ``join`` -> ``joined``, per bot.
- *time to connected*: offer created or received -> connection ``connected``, per connection
  end (each pair of bots gives two samples).
- *time to first audio*: offer created or received -> first audio packet, per connection end.
- *delivery*: audio packets received inside the measurement window / packets expected, where
  every bot should hear every other bot of its room for the whole window (one packet per
  20 ms). Bots that never joined or connections that never came up count as nothing received.
- *loss*: packets the receivers' RTP sequence numbers say were lost / (received + lost).
- *CPU*: bot processes' CPU time (user + system, all threads) inside the window / window
  length, in % of one core.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from ..bots import PACKETS_PER_S, BotResult
from .config import LoadTestConfig
from .plan import Result, WorkerPlan
from .provision import RoomPlan
from .thresholds import evaluate

SCHEMA = "connvo-rtc/loadtest-report/1"


@dataclass(frozen=True)
class TimelinePoint:
    """Counts across all bot processes at one moment."""

    t_s: float
    """Seconds since the start (the first join)."""
    joined: int
    connected: int
    """Bots connected to every other bot of their room."""
    failed: int
    connections: int
    """Peer connections up (pairs of bots)."""
    cpu_pct: float
    """Bot processes' CPU over their latest report interval, % of one core (summed)."""
    loop_lag_ms: float
    """Worst event-loop lag of any bot process over its latest report interval, ms."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 4)


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """``{count, p50, p95, p99, mean, max}`` of ``values`` (figures ``None`` when empty)."""
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "mean": round(sum(values) / len(values), 4) if values else None,
        "max": round(max(values), 4) if values else None,
    }


def lost_bot(plan: WorkerPlan, index: int, code: str) -> BotResult:
    """The result of a bot whose process never reported."""
    bot = plan.bots[index]
    window = plan.window_end_s - plan.window_start_s
    per_stream = round(window * PACKETS_PER_S)
    return BotResult(
        index=bot.index, name=bot.name, room_id=bot.room_id, peer_id=None, state="lost",
        error=code, errors={code: 1}, join_s=None, ws_connect_s=None,
        expected_peers=bot.expected_peers, window_s=0.0,
        packets_expected=per_stream * bot.expected_peers, packets_received=0, remotes=[],
    )


def _pairs(bots: Iterable[BotResult]) -> tuple[int, int]:
    """(pairs where both ends reached connected, pairs where either end saw a failure)."""
    seen: dict[frozenset[str], list[bool]] = {}
    failed: set[frozenset[str]] = set()
    for bot in bots:
        if bot.peer_id is None:
            continue
        for remote in bot.remotes:
            pair = frozenset((bot.peer_id, remote.peer_id))
            seen.setdefault(pair, []).append(remote.connected_after_s is not None)
            if remote.error is not None:
                failed.add(pair)
    connected = sum(1 for ends in seen.values() if len(ends) == 2 and all(ends))
    return connected, len(failed)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _credential(config: LoadTestConfig) -> str:
    return "secret" if config.secret else "token" if config.user_token else "dev-login"


def build_report(
    *,
    config: LoadTestConfig,
    rooms: Sequence[RoomPlan],
    plans: Sequence[WorkerPlan],
    results: Sequence[Result | None],
    exit_codes: Sequence[int | None],
    timeline: Sequence[TimelinePoint],
    started_at: float,
    provision_s: float,
    api_retries: int,
    load_start: Sequence[float],
    interrupted: bool = False,
) -> dict[str, Any]:
    """Aggregate the worker results into the report dict (see the module docstring)."""
    bots: list[dict[str, Any]] = []
    all_bots: list[BotResult] = []
    processes: list[dict[str, Any]] = []
    for plan, result, code in zip(plans, results, exit_codes, strict=True):
        got = {b.index: b for b in result.bots} if result is not None else {}
        lost = "worker-lost" if result is None else "not-reported"
        for i, bot_plan in enumerate(plan.bots):
            bot = got.get(bot_plan.index) or lost_bot(plan, i, lost)
            all_bots.append(bot)
            bots.append(msgspec.to_builtins(bot) | {"process": plan.index})
        usage = result.usage if result is not None else None
        window_s = usage.window_s if usage else 0.0
        processes.append({
            "index": plan.index, "pid": usage.pid if usage else None, "bots": len(plan.bots),
            "cpu_s": usage.cpu_s if usage else None,
            "window_cpu_s": usage.window_cpu_s if usage else None, "window_s": window_s,
            "cpu_pct": (round(100 * usage.window_cpu_s / window_s, 1)
                        if usage and window_s > 0 else None),
            "rss_bytes": usage.rss_bytes if usage else None,
            "rss_peak_bytes": usage.rss_peak_bytes if usage else None,
            "max_loop_lag_ms": usage.max_loop_lag_ms if usage else None,
            "window_loop_lag_ms": usage.window_loop_lag_ms if usage else None,
            "exit_code": code, "reported": result is not None,
        })
        interrupted = interrupted or bool(result and result.interrupted)
    bots.sort(key=lambda b: b["index"])

    join = [b.join_s for b in all_bots if b.join_s is not None]
    connect = [r.connected_after_s for b in all_bots for r in b.remotes
               if r.connected_after_s is not None]
    first_audio = [r.first_audio_after_s for b in all_bots for r in b.remotes
                   if r.first_audio_after_s is not None]
    jitter = [r.jitter_ms for b in all_bots for r in b.remotes if r.jitter_ms is not None]
    expected = sum(b.packets_expected for b in all_bots)
    received = sum(b.packets_received for b in all_bots)
    window_packets = sum(r.audio_packets for b in all_bots for r in b.remotes)
    lost_packets = sum(r.packets_lost for b in all_bots for r in b.remotes)
    errors: Counter[str] = Counter()
    for bot in all_bots:
        errors.update(bot.errors)
        if bot.error is not None and bot.error not in bot.errors:
            errors[bot.error] += 1
    connected_pairs, failed_pairs = _pairs(all_bots)
    pairs_per_room = config.peers_per_room * (config.peers_per_room - 1) // 2
    window_cpu = sum(p["window_cpu_s"] or 0.0 for p in processes)
    cpu_pct_total = round(sum(p["cpu_pct"] or 0.0 for p in processes), 1)
    rss_total = sum(p["rss_bytes"] or 0 for p in processes)
    n_bots = len(all_bots)

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": _iso(started_at),
        "finished_at": _iso(time.time()),
        "interrupted": interrupted,
        "config": {
            "ws_url": config.ws_url, "api_url": config.api_base, "credential": _credential(config),
            "rooms": config.rooms, "peers_per_room": config.peers_per_room, "bots": config.bots,
            "ramp": config.ramp, "duration_s": config.duration_s, "settle_s": config.settle_s,
            "video": config.video, "processes": len(plans), "profile": config.profile,
            "audio_path": config.audio_path,
            "pin_host_addresses": list(config.pin_host_addresses or ()),
            "relay": config.relay, "ice_timeout_s": config.ice_timeout_s,
            "thresholds": asdict(config.thresholds),
        },
        "machine": {
            "cpu_count": os.cpu_count(), "load_avg_start": [round(x, 2) for x in load_start],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform(),
        },
        "provisioning": {"rooms": len(rooms), "seconds": round(provision_s, 3),
                         "api_retries": api_retries},
        "totals": {
            "bots": n_bots,
            "joined": sum(1 for b in all_bots if b.join_s is not None),
            "fully_connected": sum(
                1 for b in all_bots if b.error is None and b.expected_peers <= sum(
                    r.connected_after_s is not None for r in b.remotes)),
            "failed": sum(1 for b in all_bots if b.error is not None),
            "connections_expected": len(rooms) * pairs_per_room,
            "connections_connected": connected_pairs,
            "connections_failed": failed_pairs,
        },
        "latency": {"join_s": distribution(join), "connect_s": distribution(connect),
                    "first_audio_s": distribution(first_audio)},
        "media": {
            "window_s": config.duration_s,
            "packets_expected": expected,
            "packets_received": received,
            "delivery_pct": round(100 * received / expected, 2) if expected else None,
            "packets_lost": lost_packets,
            "loss_pct": (round(100 * lost_packets / (window_packets + lost_packets), 3)
                         if window_packets + lost_packets else None),
            "jitter_ms": distribution(jitter),
            "video_frames": sum(r.video_frames for b in all_bots for r in b.remotes),
        },
        "errors": dict(sorted(errors.items())),
        "resources": {
            "processes": processes,
            "window_cpu_s": round(window_cpu, 3),
            "cpu_pct_total": cpu_pct_total,
            "cpu_pct_per_bot": round(cpu_pct_total / n_bots, 2) if n_bots else None,
            "rss_bytes_total": rss_total,
            "rss_bytes_per_bot": rss_total // n_bots if n_bots else None,
            "window_loop_lag_ms": max((p["window_loop_lag_ms"] or 0.0 for p in processes),
                                      default=0.0),
        },
        "timeline": [asdict(p) for p in timeline],
        "samples": {"join_s": sorted(join), "connect_s": sorted(connect),
                    "first_audio_s": sorted(first_audio)},
        "bots": bots,
    }
    report["thresholds"] = evaluate(config.thresholds, report)
    return report
