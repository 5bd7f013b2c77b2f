"""Real headless Chromium for tests: Debian's ``/usr/bin/chromium`` driven by Playwright.

Never ``playwright install``: the browser is the system one, launched by ``executable_path``.
Fake camera/microphone (a test pattern and a beep), automatic permission prompts, loopback ICE
candidates, and a host resolver that resolves nothing but 127.0.0.1, so Chromium only ever talks
to this machine.

Playwright passes its own ``--disable-features=...``; a second one would replace it, so the
launch drops Playwright's flag (``ignore_default_args``) and passes one merged list.

Some fakes are launch flags, not page settings (``--use-file-for-fake-audio-capture``): a page
that needs one gets its own Chromium process from :meth:`Chromium.launch`.

:class:`DemoPage` drives the demo page (``signaling/static``) like a person would: the lobby
form, the control bar, the chat box. Its ``room_*`` helpers read ``window.demo.room``, the
connvo.js ``Room`` the page is using.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"

#: Features we switch off on top of Playwright's own list. Host candidates carry real IPs, not
#: mDNS names (aiortc cannot resolve ``.local``, and nothing may resolve here anyway).
EXTRA_DISABLED_FEATURES = ("WebRtcHideLocalIpsWithMdns",)

#: Playwright 1.5x's list, used when its bundle cannot be read (the merged flag still wins,
#: being the last one on the command line).
_FALLBACK_DISABLED = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
    "PreconnectToSearch", "msForceBrowserSignIn", "msEdgeUpdateLaunchServicesPreferredVersion",
)

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)

#: Low resolution keeps four browsers on two cores.
TEST_VIDEO = {"width": 320, "height": 240, "frameRate": 15}


def playwright_disabled_features() -> tuple[str, ...]:
    """The ``--disable-features`` list Playwright passes to Chromium (read from its bundle)."""
    import playwright

    driver = Path(playwright.__file__).parent / "driver" / "package" / "lib"
    for path in sorted(driver.glob("**/*.js")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        match = re.search(r"disabledFeatures\s*=\s*\[(.*?)\]\.filter", text, re.DOTALL)
        if match:
            body = re.sub(r"//[^\n]*", "", match.group(1))
            names = tuple(re.findall(r'^\s*"([A-Za-z0-9_]+)",?\s*$', body, re.MULTILINE))
            if names:
                return names
    return _FALLBACK_DISABLED


def launch_options(extra_args: Sequence[str] = ()) -> dict[str, Any]:
    """Keyword arguments for ``playwright.chromium.launch``: :data:`CHROMIUM_ARGS`, then
    ``extra_args``."""
    defaults = playwright_disabled_features()
    merged = ",".join(dict.fromkeys((*defaults, *EXTRA_DISABLED_FEATURES)))
    return {
        "executable_path": CHROMIUM,
        "headless": True,
        "args": [*CHROMIUM_ARGS, *extra_args, f"--disable-features={merged}"],
        "ignore_default_args": [f"--disable-features={','.join(defaults)}"],
    }


def fake_audio_file_arg(wav: Path, *, loop: bool = True) -> str:
    """The flag making Chromium's fake microphone play ``wav`` (16-bit PCM WAV) instead of its
    beep, from the start each time a page opens the microphone; ``loop=False`` plays it once,
    then silence."""
    return f"--use-file-for-fake-audio-capture={wav}{'' if loop else '%noloop'}"


class Chromium:
    """One headless Chromium for a test; :meth:`open` gives each person their own context."""

    def __init__(self, browser: Any, playwright: Any = None) -> None:
        self.browser = browser
        self.playwright = playwright
        self.pages: list[DemoPage] = []
        self.others: list[Chromium] = []

    async def launch(self, *extra_args: str) -> Chromium:
        """Another Chromium process with ``extra_args`` on top of the usual flags (e.g.
        :func:`fake_audio_file_arg`); closed with this one, its pages' errors count as ours."""
        if self.playwright is None:
            raise RuntimeError("this Chromium was not started by chromium()")
        other = Chromium(await self.playwright.chromium.launch(**launch_options(extra_args)),
                         self.playwright)
        self.others.append(other)
        return other

    async def close_pages(self) -> None:
        """Close every page opened so far (their errors still count): a test that stops its
        own hub closes its pages first, or they report the hub's going away as an error."""
        for page in self.pages:
            await page.aclose()
        for other in self.others:
            await other.close_pages()

    async def aclose(self) -> None:
        for other in self.others:
            await other.aclose()
        await self.browser.close()

    async def open(self, url: str, name: str, *, relay: bool = False,
                   viewport: tuple[int, int] = (960, 600)) -> DemoPage:
        page = await DemoPage.open(self.browser, url, name, relay=relay, viewport=viewport)
        self.pages.append(page)
        return page

    def page_errors(self) -> list[str]:
        """Uncaught exceptions, unhandled rejections and console errors on any page so far."""
        own = [f"{p.name}: {line}" for p in self.pages for line in p.console
               if line.startswith(("pageerror", "error:"))]
        return own + [error for other in self.others for error in other.page_errors()]


@asynccontextmanager
async def chromium() -> AsyncIterator[Chromium]:
    """Launch Debian's Chromium headless (skip locally, fail under CI=true, when missing)."""
    from playwright.async_api import async_playwright

    from tests.conftest import require_binary

    require_binary(CHROMIUM)
    async with async_playwright() as pw:
        instance = Chromium(await pw.chromium.launch(**launch_options()), pw)
        try:
            yield instance
        finally:
            await instance.aclose()


def page_config(*, relay: bool = False, video: dict[str, Any] | None = None) -> str:
    """An init script setting ``window.connvoConfig`` (see signaling/static/app.js): low
    resolution, only 127.0.0.1 candidates leave the page, and (``relay``) TURN only.

    Only for tests about what the config changes (TURN relay): the main flows open the page
    exactly as a person gets it, with no config, so a default the page gets wrong shows (the
    camera that could not be turned back on hid behind ``video`` set here)."""
    config: dict[str, Any] = {"video": video or TEST_VIDEO}
    if relay:
        config["iceTransportPolicy"] = "relay"
    return (f"window.connvoConfig = Object.assign({json.dumps(config)}, "
            "{ iceCandidateFilter: (c) => c.address === '127.0.0.1' });")


class DemoPage:
    """One person on the demo page, in their own browser context."""

    def __init__(self, context: Any, page: Any, name: str) -> None:
        self.context = context
        self.page = page
        self.name = name
        self.console: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))

    @classmethod
    async def open(cls, browser: Any, url: str, name: str, *, relay: bool = False,
                   viewport: tuple[int, int] = (960, 600)) -> DemoPage:
        context = await browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]},
            permissions=["camera", "microphone", "clipboard-read", "clipboard-write"],
        )
        if relay:
            await context.add_init_script(page_config(relay=True))
        page = await context.new_page()
        demo = cls(context, page, name)
        await page.goto(url)
        return demo

    # ------------------------------------------------------------------ the lobby

    async def start_meeting(self, title: str = "Design review", *,
                            transcribe: bool = False, record: bool = False) -> str:
        """Fill the lobby as the host (``transcribe``: tick "Live transcript", ``record``:
        tick "Record"); return the invite link."""
        await self.page.fill("#name", self.name)
        await self.page.fill("#title", title)
        await self.page.set_checked("#transcribe", transcribe)
        await self.page.set_checked("#record", record)
        await self.page.click("#join-button")
        await self.wait_joined()
        link = await self.page.evaluate("() => window.demo.inviteLink")
        assert "invite=" in link, link
        return str(link)

    async def join(self, *, expect_joined: bool = True) -> None:
        """Fill the lobby as an invitee and click Join."""
        await self.page.fill("#name", self.name)
        await self.page.click("#join-button")
        if expect_joined:
            await self.wait_joined()

    async def wait_joined(self, timeout: float = 15.0) -> None:
        try:
            await self.page.wait_for_function(
                "() => window.demo.room?.state === 'joined' && "
                "document.getElementById('app').dataset.screen === 'room'",
                timeout=timeout * 1000)
        except Exception as exc:
            raise AssertionError(f"{self.name} did not join: {self.diagnostics()}") from exc

    # ------------------------------------------------------------------ the room

    async def peer_id(self) -> str:
        return str(await self.page.evaluate("() => window.demo.room.peerId"))

    async def room_id(self) -> str:
        return str(await self.page.evaluate("() => window.demo.room.roomId"))

    async def peer_states(self) -> dict[str, str]:
        """Connection state per remote participant, by peerId."""
        return dict(await self.page.evaluate(
            "() => Object.fromEntries([...window.demo.room.peers.values()]"
            ".map((p) => [p.peerId, p.state]))"))

    async def stats(self) -> dict[str, Any]:
        """``room.getStats()``: per remote peer, connection state and RTP counts."""
        return dict(await self.page.evaluate("() => window.demo.room.getStats()"))

    async def wait_connected(self, peer_ids: set[str], timeout: float = 25.0) -> None:
        """Until the page's connections to exactly ``peer_ids`` are all ``connected``."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = await self.peer_states()
            if set(states) == peer_ids and all(s == "connected" for s in states.values()):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name}: wanted {sorted(peer_ids)} connected, have {states}; "
                             f"{self.diagnostics()}")

    async def wait_stats(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                         timeout: float = 15.0) -> dict[str, Any]:
        """Poll ``stats()`` until ``predicate`` holds; return the stats."""
        deadline = time.monotonic() + timeout
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = await self.stats()
            if predicate(stats):
                return stats
            await asyncio.sleep(0.25)
        raise AssertionError(f"{self.name}: {what}; stats={json.dumps(stats)[:3000]}")

    async def record_events(self, *types: str) -> None:
        """Start keeping the room's events of these types in ``window.recorded``."""
        await self.page.evaluate(
            """(types) => {
                window.recorded = [];
                for (const type of types) {
                    window.demo.room.on(type, (e) => window.recorded.push({
                        type, state: e.state, peerId: e.peer?.peerId, reason: e.reason,
                        resumed: e.resumed, code: e.code }));
                }
            }""", list(types))

    async def recorded(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("() => window.recorded ?? []"))

    async def transcript_lines(self) -> list[dict[str, Any]]:
        """The transcript pane, top to bottom: ``{speaker, text, final, segment}`` per line."""
        return list(await self.page.evaluate(
            """() => [...document.querySelectorAll('#transcript-log .transcript-line')]
                .map((li) => ({
                speaker: li.querySelector('b').textContent,
                text: li.querySelector('span').textContent,
                final: !li.classList.contains('interim'),
                segment: li.dataset.segment }))"""))

    def tile(self, peer_id: str) -> Any:
        return self.page.locator(f'.tile[data-key="{peer_id}"]')

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path))
        return path

    def diagnostics(self) -> str:
        return f"console of {self.name}:\n  " + "\n  ".join(self.console[-40:])

    async def aclose(self) -> None:
        await self.context.close()


def inbound(stats: dict[str, Any], peer_id: str, kind: str) -> int:
    """Packets received from ``peer_id`` of ``kind`` (``audio``/``video``); 0 if unknown."""
    entry = stats.get(peer_id)
    return int(entry["inbound"][kind]["packets"]) if entry else 0
