"""A hub-only install: the hub's import graph holds no aiortc, av, pocketsphinx or matplotlib,
and a command that needs an extra says which one to install.

Each test runs a fresh interpreter in which those packages cannot be imported (``None`` in
``sys.modules``: ``import`` raises ``ModuleNotFoundError`` and ``importlib.util.find_spec``
answers ``None``, as for a package that is not installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from signaling.testing.ports import free_port

REPO = Path(__file__).resolve().parents[2]
#: What the extras bring (media: aiortc, av; tap: pocketsphinx; loadtest: matplotlib).
OPTIONAL = ("aiortc", "av", "pocketsphinx", "matplotlib")

HUB = """
import asyncio, json, sys
import aiohttp
from signaling.testing.hub import start_hub, test_settings

async def main():
    hub = await start_hub(test_settings())  # create_app with the tap off
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(hub.base_url + "/healthz") as resp:
                status = resp.status
    finally:
        await hub.aclose()
    media = sorted(m for m in sys.modules if m.split(".")[0] == "media")
    print(json.dumps({"status": status, "media": media}))

asyncio.run(main())
"""


def run_without(hidden: Sequence[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter that cannot import ``hidden``."""
    hide = f"import sys\nfor name in {tuple(hidden)!r}:\n    sys.modules[name] = None\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNVO_RTC_")}
    return subprocess.run([sys.executable, "-c", hide + code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def cli_without(hidden: Sequence[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``connvo-rtc ARGS`` in a new interpreter that cannot import ``hidden``."""
    return run_without(hidden, f"from signaling.cli import main\nsys.exit(main({list(args)!r}))")


def test_hub_builds_and_serves_without_the_optional_packages() -> None:
    result = run_without(OPTIONAL, HUB)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"status": 200, "media": []}


def test_serve_with_the_tap_but_without_its_extra_exits_1_with_one_line() -> None:
    result = cli_without(OPTIONAL, "serve", "--port", str(free_port()))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "needs aiortc, av, pocketsphinx" in lines[0]
    assert lines[0].endswith("install connvo-rtc[tap] or pass --no-tap")


def test_commands_of_missing_extras_say_what_to_install() -> None:
    listing = cli_without(OPTIONAL, "--help")
    assert listing.returncode == 0, listing.stderr
    assert "not installed: install connvo-rtc[loadtest]" in listing.stdout
    assert "not installed: install connvo-rtc[tap]" in listing.stdout
    for command in ("loadtest", "tap"):  # each command's extra is named after it
        result = cli_without(OPTIONAL, command, "--url", "ws://127.0.0.1:9/ws", "--rooms", "2")
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().endswith(f"install connvo-rtc[{command}]"), result.stderr


def test_loadtest_plot_without_matplotlib_says_what_to_install() -> None:
    result = cli_without(("matplotlib",), "loadtest", "--url", "ws://127.0.0.1:9/ws",
                         "--plot", "never-written.png")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("connvo-rtc loadtest: --plot needs matplotlib: "
                                     "install connvo-rtc[loadtest]")
