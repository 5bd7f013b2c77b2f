"""``python -m tests.browser.netcut`` — run *inside a network namespace of its own*: cut the
network path two Chromium pages' media uses and measure how long until media flows again.

The namespace (made by :func:`run_in_namespace`) has a loopback for the hub and a veth pair;
the pages start with one address, 10.151.0.1, and Chromium gathers host candidates on it only
(no loopback candidates). When Ada's and Grace's pages are connected and receiving each other's
video, the network changes as when a laptop leaves Wi-Fi for a phone's hotspot: 10.151.0.1 is
deleted and 10.151.0.2 appears. No candidate pair of the old ICE session can work, so nothing
but an ICE restart brings media back: the page sees ICE ``disconnected``, restarts ICE (new
credentials, candidates on the new address) and media flows again. Printed as JSON: the seconds from the cut until
Grace decoded 10 more frames from Ada (``recovered_s``), whether ICE was restarted (new ufrag),
and the pairs before and after.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

ADDRESSES = ("10.151.0.1", "10.151.0.2")


def run_in_namespace(timeout: float = 120.0) -> dict[str, Any]:
    """Make a namespace, run this module in it, delete the namespace; the module's result."""
    name = f"connvo-netcut-{os.getpid()}"
    ip = ["ip", "netns", "exec", name, "ip"]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for args in (["link", "set", "lo", "up"],
                     ["link", "add", "cva", "type", "veth", "peer", "name", "cvb"],
                     ["addr", "add", f"{ADDRESSES[0]}/24", "dev", "cva"],
                     ["link", "set", "cva", "up"], ["link", "set", "cvb", "up"]):
            subprocess.run([*ip, *args], check=True)
        done = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-m",
                               "tests.browser.netcut"], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"netcut failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def change_network(old: str) -> None:
    """The old address goes, a new one comes (on the other end of the veth pair)."""
    subprocess.run(["ip", "addr", "del", f"{old}/24", "dev", "cva"], check=True)
    subprocess.run(["ip", "addr", "add", f"{ADDRESSES[1]}/24", "dev", "cvb"], check=True)


async def measure() -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from signaling.testing.hub import start_hub, test_settings
    from tests.support.browser import Chromium, inbound, launch_options

    hub = await start_hub(test_settings(auth={"dev_login": True}))
    options = launch_options()
    options["args"] = [a for a in options["args"] if a != "--allow-loopback-in-peer-connection"]
    try:
        async with async_playwright() as pw:
            chrome = Chromium(await pw.chromium.launch(**options), pw)
            try:
                ada = await chrome.open(hub.base_url + "/", "Ada Lovelace")
                link = await ada.start_meeting("Network change")
                grace = await chrome.open(link, "Grace Hopper")
                await grace.join()
                ada_id, grace_id = await ada.peer_id(), await grace.peer_id()
                await grace.wait_stats(lambda s: s.get(ada_id, {}).get("connectionState")
                                       == "connected" and s[ada_id]["inbound"]["video"]["frames"]
                                       > 20, "video from Ada", timeout=30)
                before = (await ada.stats())[grace_id]
                pair = before["candidatePair"]
                cut = pair["localAddress"]
                if cut != ADDRESSES[0]:
                    raise RuntimeError(f"unexpected pair {pair}")
                frames = (await grace.stats())[ada_id]["inbound"]["video"]["frames"]
                started = time.monotonic()
                await asyncio.to_thread(change_network, cut)
                after = await grace.wait_stats(
                    lambda s: s[ada_id]["inbound"]["video"]["frames"] > frames + 10
                    and (s[ada_id]["candidatePair"] or {}).get("localAddress") != cut,
                    "video from Ada over the other path", timeout=60)
                recovered = time.monotonic() - started
                ada_after = (await ada.stats())[grace_id]
                errors = chrome.page_errors()
                return {"recovered_s": round(recovered, 2), "cut": cut,
                        "pair_before": pair, "pair_after": after[ada_id]["candidatePair"],
                        "ice_restarted": ada_after["iceUfrag"] != before["iceUfrag"],
                        "audio_packets": inbound(after, ada_id, "audio"), "page_errors": errors}
            finally:
                await chrome.aclose()
    finally:
        await hub.aclose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure())))
