"""The report's picture: latency CDFs and connected peers over time (matplotlib, Agg).

matplotlib is imported only when a plot is asked for (``--plot``), with the non-interactive Agg
backend so it works on a headless machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def plotting_available() -> bool:
    """Whether matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def write_plot(report: dict[str, Any], path: str | Path) -> None:
    """Write a PNG with two panels: CDFs of join latency, time to connected and time to first
    audio; joined/connected/failed bots and peer connections over time, the measurement window
    shaded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    figure = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    cdf, timeline = figure.subplots(1, 2)
    samples = report["samples"]
    every = [v for key in ("join_s", "connect_s", "first_audio_s") for v in samples[key] if v > 0]
    for key, label in (("join_s", "join latency"), ("connect_s", "time to connected"),
                       ("first_audio_s", "time to first audio")):
        values = sorted(samples[key])
        if not values:
            continue
        ys = [(i + 1) / len(values) for i in range(len(values))]
        cdf.step([v * 1000 for v in values], ys, where="post",
                 label=f"{label} (n={len(values)})")
    if every and max(every) / min(every) > 20:
        cdf.set_xscale("log")  # join latency (ms) and first audio (s) on one readable axis
    cdf.set_xlabel("milliseconds")
    cdf.set_ylabel("fraction of samples")
    cdf.set_ylim(0, 1.02)
    cdf.set_title("latency CDFs")
    cdf.grid(alpha=0.3)
    cdf.legend(loc="lower right", fontsize="small")

    points = report["timeline"]
    ts = [p["t_s"] for p in points]
    for key, label in (("joined", "bots joined"), ("connected", "bots connected to all"),
                       ("connections", "peer connections up"), ("failed", "bots failed")):
        timeline.plot(ts, [p[key] for p in points], label=label)
    config = report["config"]
    start = (config["bots"] - 1) / config["ramp"] + config["settle_s"]
    timeline.axvspan(start, start + config["duration_s"], color="grey", alpha=0.15,
                     label="measurement window")
    timeline.set_xlabel("seconds since the first join")
    timeline.set_ylabel("count")
    media = report["media"]
    delivery = media["delivery_pct"]
    timeline.set_title(f"{config['bots']} bots in {config['rooms']} rooms; delivery "
                       f"{'-' if delivery is None else format(delivery, '.2f')} %")
    timeline.grid(alpha=0.3)
    timeline.legend(loc="center right", fontsize="small")
    figure.savefig(str(path), format="png")
