"""The summary table printed at the end of a load test (plain text, from the report dict)."""

from __future__ import annotations

from typing import Any

_MIB = 1024 * 1024


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} %"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / _MIB:.0f} MiB"


def render_table(report: dict[str, Any]) -> str:
    """A fixed-width summary of ``report`` (see :mod:`media.bot_load.report`)."""
    c, t, m, r = report["config"], report["totals"], report["media"], report["resources"]
    rooms = f"{c['rooms']} room{'s' if c['rooms'] != 1 else ''}"
    title = (f"connvo-rtc loadtest: {rooms} x {c['peers_per_room']} {c['profile']} "
             f"bots = {c['bots']} bots in {c['processes']} processes, ramp {c['ramp']:g}/s, "
             f"{c['duration_s']:g} s window")
    if c["video"]:
        title += ", video"
    if report["interrupted"]:
        title += "  (INTERRUPTED)"
    lines = [title, "", f"{'':<22}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}{'n':>7}"]
    for label, key in (("join latency", "join_s"), ("time to connected", "connect_s"),
                       ("time to first audio", "first_audio_s")):
        d = report["latency"][key]
        lines.append(f"{label:<22}{_s(d['p50']):>9}{_s(d['p95']):>9}{_s(d['p99']):>9}"
                     f"{_s(d['max']):>9}{d['count']:>7}")
    lines.append("")

    rows: list[tuple[str, str]] = []
    bots = (f"{t['joined']}/{t['bots']} joined, {t['fully_connected']} connected to everyone, "
            f"{t['failed']} failed")
    rows.append(("bots", bots))
    connections = f"{t['connections_connected']}/{t['connections_expected']} connected"
    if t["connections_failed"]:
        connections += f", {t['connections_failed']} failed"
    rows.append(("connections", connections))
    delivery = (f"{_pct(m['delivery_pct'], 2)} ({m['packets_received']:,} of "
                f"{m['packets_expected']:,} audio packets)")
    rows.append(("media delivery", delivery))
    jitter = m["jitter_ms"]["p95"]
    jitter_text = "-" if jitter is None else f"{jitter:.1f} ms"
    loss = f"{_pct(m['loss_pct'], 3)} ({m['packets_lost']:,} packets), jitter p95 {jitter_text}"
    rows.append(("loss", loss))
    if c["video"]:
        rows.append(("video", f"{m['video_frames']:,} frames received in the window"))
    errors = ", ".join(f"{code} x{n}" for code, n in report["errors"].items())
    rows.append(("errors", errors or "none"))
    per_process = ", ".join(_pct(p["cpu_pct"], 0) for p in r["processes"])
    cpu = (f"{_pct(r['cpu_pct_total'], 0)} of a core in total, "
           f"{_pct(r['cpu_pct_per_bot'], 1)} per bot (per process: {per_process})")
    rows.append(("bot CPU", cpu))
    rss = f"{_mib(r['rss_bytes_total'])} in total, {_mib(r['rss_bytes_per_bot'])} per bot"
    rows.append(("bot RSS", rss))
    lag = r["window_loop_lag_ms"]
    verdict = (" (the bots were starved of CPU: their figures include that; give them more"
               " cores or fewer rooms)") if lag > 500 else ""
    rows.append(("bot loop lag", f"{lag:.0f} ms worst in the window{verdict}"))
    machine = report["machine"]
    load = " ".join(f"{x:.2f}" for x in machine["load_avg_end"])
    rows.append(("machine", f"{machine['cpu_count']} cores, load {load}"))
    checks = report["thresholds"]["checks"]
    for check in checks:
        sign = ">=" if check["name"].startswith("min") else "<="
        value = "-" if check["value"] is None else check["value"]
        mark = "ok" if check["passed"] else "MISSED"
        rows.append(("threshold", f"{check['figure']} {sign} {check['limit']:g}: {value} {mark}"))
    if checks:
        rows.append(("verdict", "PASS" if report["thresholds"]["passed"] else "FAIL"))
    lines += [f"{label:<22}{text}" for label, text in rows]
    return "\n".join(lines)
