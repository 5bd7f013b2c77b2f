"""Join -> first remote video frame in the demo page, on loopback.

    .venv/bin/python -m bench.join_to_video [--runs 9] [--json bench/out/join_to_video.json]

Starts a dev-mode hub in this process (in-memory, 127.0.0.1) and Debian's Chromium (the
browser tests' flags: fake camera and microphone). Ada starts a meeting; then, ``--runs``
times, Grace opens the invite link in a fresh browser context, types her name and clicks
*Join meeting*, and the page records (``performance.now()``, in the page) the click and the
first frame of Ada's video presented in Grace's tile (``requestVideoFrameCallback``). Grace
then leaves (her seat is free at once). The page has its default config, as a person gets it
(640x360 camera). Prints every run and p50 / p95 / max in ms; needs no network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path

#: In Grace's page: the time of the Join click and of the first frame of a remote tile.
PROBE = """
window.joinProbe = { clicked: null, frame: null };
document.addEventListener('submit', () => { window.joinProbe.clicked = performance.now(); }, true);
new MutationObserver(() => {
    const video = document.querySelector('.tile:not(.self):not(.screen-tile) video');
    if (!video || video.dataset.probed) return;
    video.dataset.probed = '1';
    video.requestVideoFrameCallback(() => {
        if (window.joinProbe.frame === null) window.joinProbe.frame = performance.now();
    });
}).observe(document, { subtree: true, childList: true });
"""


async def run(runs: int) -> list[float]:
    from signaling.testing.hub import start_hub, test_settings
    from tests.support.browser import chromium

    hub = await start_hub(test_settings(auth={"dev_login": True}))
    took: list[float] = []
    try:
        async with chromium() as browser:
            ada = await browser.open(hub.base_url + "/", "Ada Lovelace", viewport=(1280, 800))
            link = await ada.start_meeting("Bench")
            for i in range(runs):
                grace = await browser.open("about:blank", "Grace Hopper")
                await grace.context.add_init_script(PROBE)
                await grace.page.goto(link)
                await grace.page.get_by_role("button", name="Join meeting").wait_for()
                await grace.page.get_by_role("textbox", name="Your name").fill("Grace Hopper")
                await grace.page.wait_for_function(
                    "() => window.demo.preview?.getVideoTracks().length > 0")
                await grace.page.get_by_role("button", name="Join meeting").click()
                await grace.page.wait_for_function("() => window.joinProbe.frame !== null",
                                                   timeout=30_000)
                probe = await grace.page.evaluate("() => window.joinProbe")
                ms = probe["frame"] - probe["clicked"]
                took.append(ms)
                print(f"run {i + 1}: Join -> first frame of Ada's video {ms:.0f} ms", flush=True)
                await grace.page.get_by_role("button", name="Leave").click()
                await grace.page.get_by_role("heading", name="You left the meeting").wait_for()
                await grace.aclose()
            errors = browser.page_errors()
            if errors:
                raise SystemExit("errors on the pages:\n" + "\n".join(errors))
    finally:
        await hub.aclose()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    took = asyncio.run(run(args.runs))
    ordered = sorted(took)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    summary = {"runs": len(took), "p50_ms": round(statistics.median(took)),
               "p95_ms": round(p95), "max_ms": round(max(took)), "all_ms": [round(t) for t in took]}
    print(f"Join -> first remote video frame over {len(took)} runs: p50 {summary['p50_ms']} ms, "
          f"p95 {summary['p95_ms']} ms, max {summary['max_ms']} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
