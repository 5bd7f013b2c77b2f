"""The benchmark's table, its targets and the py-spy profile summary."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ("peerjs", "memory-1w", "redis-1w", "redis-2w")
LABELS = {"memory-1w": "ours memory 1w", "redis-1w": "ours Redis 1w",
          "redis-2w": "ours Redis 2w", "peerjs": "PeerJS 1.0.2"}


def _at(result: dict[str, Any], rate: float) -> dict[str, Any] | None:
    loads = result.get("loads") or []
    return next((r for r in loads if r["offered_per_s"] == rate), None)


def rows(results: dict[str, dict[str, Any]], args: argparse.Namespace
         ) -> list[tuple[str, dict[str, float | None]]]:
    def per(fn: Any) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, res in results.items():
            try:
                out[name] = fn(res)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                out[name] = None
        return out

    def at_saturation(key: str) -> Any:
        def get(res: dict[str, Any]) -> float:
            best = max(res["saturation"], key=lambda r: r["delivered_per_s"])
            return float(best[key])
        return get

    table: list[tuple[str, dict[str, float | None]]] = [
        ("relayed msg/s at saturation", per(lambda r: r["saturation_per_s"])),
        ("  server CPU at saturation, cores", per(at_saturation("server_cores"))),
        ("  generator CPU at saturation, cores", per(at_saturation("generator_cores"))),
        ("  other processes at saturation, cores", per(at_saturation("other_cores"))),
    ]

    def at(rate: float, key: str) -> dict[str, float | None]:
        return per(lambda r: (_at(r, rate) or {})[key])

    for rate in args.rates:
        k = f"{rate / 1000:g}k"
        table += [
            (f"server CPU us/msg @ {k} msg/s", at(rate, "server_cpu_us_per_msg")),
            (f"  delivered msg/s @ {k}", at(rate, "delivered_per_s")),
            (f"  relay p50 ms @ {k}", at(rate, "p50_ms")),
            (f"  relay p99 ms @ {k}", at(rate, "p99_ms")),
            (f"  generator CPU @ {k}, cores", at(rate, "generator_cores")),
            (f"  other processes @ {k}, cores", at(rate, "other_cores")),
        ]
    top = max(args.rates)
    table.append((f"msg/s per server core (1e6 / CPU us/msg @ {top / 1000:g}k)",
                  per(lambda r: 1e6 / (_at(r, top) or {})["server_cpu_us_per_msg"])))
    table += [
        ("join/connect p50 ms", per(lambda r: r["join_p50_ms"])),
        ("join/connect p99 ms", per(lambda r: r["join_p99_ms"])),
        ("  joins/s", per(lambda r: r["joins_per_s"])),
        ("server RSS idle, MiB", per(lambda r: r["rss_base_mb"])),
        (f"server RSS with {args.idle_clients} clients, MiB",
         per(lambda r: r["rss_connected_mb"])),
        ("RSS per idle connection, KiB", per(lambda r: r["rss_per_conn_kb"])),
        ("  Redis RSS per idle connection, KiB", per(lambda r: r["redis_rss_per_conn_kb"])),
        (f"idle CPU with {args.idle_clients} clients, ms/s",
         per(lambda r: r["idle_server_cores"] * 1e3)),
    ]
    return table


def _fmt(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def render(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    names = [n for n in CONFIGS if n in results] + [n for n in results if n not in CONFIGS]
    ratio = "memory-1w" in results and "peerjs" in results
    head = ["metric", *(LABELS.get(n, n) for n in names)] + (["ratio memory/PeerJS"] if ratio else [])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, values in rows(results, args):
        cells = [_fmt(values.get(n)) for n in names]
        if ratio:
            a, b = values.get("memory-1w"), values.get("peerjs")
            ok = a is not None and b and not math.isnan(a) and not math.isnan(b)
            cells.append(f"{a / b:.2f}" if ok else "-")  # type: ignore[operator]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: dict[str, dict[str, Any]], args: argparse.Namespace
            ) -> list[dict[str, Any]]:
    rate = min(args.rates, key=lambda r: abs(r - 5000))
    out: list[dict[str, Any]] = []
    mem, pj = results.get("memory-1w"), results.get("peerjs")
    if mem and pj and _at(mem, rate) and _at(pj, rate):
        m, p = _at(mem, rate), _at(pj, rate)
        assert m is not None and p is not None
        out.append({"target": f"hub CPU/msg <= 1.0 x PeerJS at {rate:g} msg/s",
                    "ratio": m["server_cpu_us_per_msg"] / p["server_cpu_us_per_msg"],
                    "limit": 1.0})
        out.append({"target": f"hub relay p99 <= PeerJS's at {rate:g} msg/s",
                    "ratio": m["p99_ms"] / p["p99_ms"], "limit": 1.0})
        out.append({"target": "hub RSS per idle connection <= PeerJS's",
                    "ratio": mem["rss_per_conn_kb"] / pj["rss_per_conn_kb"], "limit": 1.0})
    two = results.get("redis-2w")
    if two and "cross_cost_ratio" in two:
        out.append({"target": "cross-worker message CPU <= 2.0 x within-worker (2 workers + "
                              f"Redis, {args.cross_rate:g} msg/s)",
                    "ratio": two["cross_cost_ratio"], "limit": 2.0})
    for t in out:
        t["met"] = bool(t["ratio"] <= t["limit"])
    return out


def render_notes(results: dict[str, dict[str, Any]], checks: list[dict[str, Any]],
                 args: argparse.Namespace) -> str:
    """The cross-worker cost line, the targets table and warnings about phases a reader should
    not trust (generator stalled, sockets dropped, server errors, a busy machine)."""
    out: list[str] = []
    two = results.get("redis-2w", {})
    if "cross_cost" in two:
        c = two["cross_cost"]
        out += [(f"Redis 2 workers at {args.cross_rate:g} msg/s, CPU of both workers + Redis per "
                f"message: within a worker {c['local']['server_cpu_us_per_msg']:.1f} us (Redis "
                f"{c['local']['redis_cpu_us_per_msg']:.1f}), across workers "
                f"{c['cross']['server_cpu_us_per_msg']:.1f} us (Redis "
                f"{c['cross']['redis_cpu_us_per_msg']:.1f}); relay p50/p99 within "
                f"{c['local']['p50_ms']:.2f}/{c['local']['p99_ms']:.2f} ms, across "
                f"{c['cross']['p50_ms']:.2f}/{c['cross']['p99_ms']:.2f} ms; ratio "
                f"{two['cross_cost_ratio']:.2f}"), ""]
    if checks:
        out += ["| target | measured ratio | limit | met |", "|---|---:|---:|---|"]
        out += [f"| {t['target']} | {t['ratio']:.3f} | {t['limit']:.1f} | "
                f"{'yes' if t['met'] else 'NO'} |" for t in checks]
    warnings = []
    for name, res in results.items():
        if res.get("connect_failed"):
            warnings.append(f"{name}: {res['connect_failed']} clients failed to connect")
        fixed = [ph for repeats in res.get("load_runs", {}).values() for ph in repeats]
        for cost in res.get("cross_cost", {}).values():
            fixed += cost.get("halves", [])
        for ph in fixed:  # below saturation everything sent must arrive
            if ph["delivered_per_s"] < 0.97 * ph["sent_per_s"]:
                warnings.append(f"{name} {ph['offered_per_s']:.0f}/s {ph['mode']}: only "
                                f"{ph['delivered_per_s']:.0f} of {ph['sent_per_s']:.0f} msg/s "
                                "delivered (lost or backlogged)")
        for ph in [*fixed, *res.get("saturation", [])]:
            what = f"{name} {ph['offered_per_s']:.0f}/s {ph['mode']}"
            expected = ph["offered_per_s"] * ph["seconds"]
            if ph["generator_skipped"] > 0.01 * expected:
                warnings.append(f"{what}: generator stalled ({ph['generator_skipped']} sends "
                                "skipped): starved of CPU, figures unreliable")
            if ph["dropped_sockets"] or ph["server_errors"]:
                warnings.append(f"{what}: {ph['dropped_sockets']} sockets dropped, server "
                                f"errors {ph.get('error_codes', ph['server_errors'])}; first: "
                                f"{ph['first_error'][:160]}")
            if ph["other_cores"] > 0.25:
                warnings.append(f"{what}: other processes used {ph['other_cores']:.2f} cores")
    if warnings:
        busy = [w for w in warnings if "other processes used" in w]
        rest = [w for w in warnings if w not in busy]
        out += ["", f"warnings ({len(warnings)}):", *(f"- {w}" for w in rest[:40])]
        if busy:
            out.append(f"- and {len(busy)} phases where other processes used more than 0.25 "
                       "cores (the 'other processes' rows)")
    return "\n".join(out)


def summarize_profile(path: Path, top: int = 30) -> str:
    """Own time (leaf frame) and total time (anywhere on the stack) per function."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            total[f] = total.get(f, 0) + n
    if not samples:
        return "no samples"
    lines = [f"{samples} samples (non-idle); top {top} functions by own time:",
             "| own % | total % | function |", "|---:|---:|---|"]
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {100 * n / samples:.1f} | {100 * total[f] / samples:.1f} | "
                     f"`{_short(f)}` |")
    lines += ["", "top functions by total (inclusive) time:",
              "| total % | function |", "|---:|---|"]
    for f, n in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {100 * n / samples:.1f} | `{_short(f)}` |")
    return "\n".join(lines)


def _short(frame: str) -> str:
    for marker in ("/site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in frame:
            head, _, tail = frame.partition(marker)
            frame = head + tail.split("/", 1)[-1] if marker.startswith("/lib") else head + tail
    return frame


def render_baseline(results: dict[str, dict[str, Any]], args: argparse.Namespace,
                    prefix: str) -> str:
    """Before/after: each hub configuration from ``--baseline-tree`` (before) and from this
    tree (after), with after/before ratios, from one interleaved run."""
    pairs = [(n, prefix + n) for n in CONFIGS if n in results and prefix + n in results]
    head = ["metric"]
    for name, _ in pairs:
        head += [f"{LABELS[name]} before", "after", "after/before"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, values in rows(results, args):
        cells = []
        for after, before in pairs:
            a, b = values.get(after), values.get(before)
            ok = a is not None and b and not math.isnan(a) and not math.isnan(b)
            cells += [_fmt(b), _fmt(a), f"{a / b:.3f}" if ok else "-"]  # type: ignore[operator]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "before = --baseline-tree, after = this tree\n\n" + "\n".join(lines)
