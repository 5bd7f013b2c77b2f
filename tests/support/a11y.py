"""Accessibility checks in real Chromium: axe-core (vendored, ``tests/support/vendor``) run on
a page as it is, and a contrast check of our own where axe cannot see (text over video)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

AXE = Path(__file__).parent / "vendor" / "axe.min.js"

#: WCAG 2.x A and AA rules, plus axe's best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


async def axe_violations(page: Any, *, impacts: tuple[str, ...] = ("serious", "critical")
                         ) -> list[dict[str, Any]]:
    """Run axe-core on ``page`` (a Playwright page); the violations of the given impacts,
    each ``{id, impact, help, nodes: [html...]}``."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.add_script_tag(content=AXE.read_text())
    result = await page.evaluate(
        """async (tags) => {
            const r = await window.axe.run(document, { runOnly: { type: 'tag', values: tags },
                                                        resultTypes: ['violations'] });
            return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => n.html.slice(0, 200)) }));
        }""", AXE_TAGS)
    return [v for v in result if v["impact"] in impacts]


def describe(violations: list[dict[str, Any]]) -> str:
    return "\n".join(f"{v['impact']}: {v['id']} ({v['help']}): {v['nodes'][:3]}"
                     for v in violations)
