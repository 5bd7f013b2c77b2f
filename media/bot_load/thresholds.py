"""Pass/fail checks of a report against :class:`~media.bot_load.config.Thresholds`.

Only limits given on the command line are checked. A figure that could not be measured (no
delivery because no bot joined, no latency samples) fails its check: a deploy gate must not
pass a run that measured nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import Thresholds

#: (threshold field, report figure, ``"min"`` or ``"max"``, figure getter)
_CHECKS: tuple[tuple[str, str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("min_delivery_pct", "media.delivery_pct", "min", lambda r: r["media"]["delivery_pct"]),
    ("max_loss_pct", "media.loss_pct", "max", lambda r: r["media"]["loss_pct"]),
    ("max_errors", "errors (total)", "max", lambda r: sum(r["errors"].values())),
    ("max_failed_bots", "totals.failed", "max", lambda r: r["totals"]["failed"]),
    ("max_join_p95_s", "latency.join_s.p95", "max", lambda r: r["latency"]["join_s"]["p95"]),
    ("max_connect_p95_s", "latency.connect_s.p95", "max",
     lambda r: r["latency"]["connect_s"]["p95"]),
)


def evaluate(thresholds: Thresholds, report: dict[str, Any]) -> dict[str, Any]:
    """``{"passed": bool, "checks": [{name, figure, limit, value, passed}]}``."""
    checks = []
    for name, figure, kind, get in _CHECKS:
        limit = getattr(thresholds, name)
        if limit is None:
            continue
        value = get(report)
        if value is None:
            passed = False
        elif kind == "min":
            passed = value >= limit
        else:
            passed = value <= limit
        checks.append({"name": name, "figure": figure, "limit": limit, "value": value,
                       "passed": passed})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}
