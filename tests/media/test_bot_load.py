"""``connvo-rtc loadtest``: schedule, provisioning, report, thresholds, and the real CLI.

The end-to-end tests run the real command (``python -m signaling.cli loadtest``) as a
subprocess, with its real bot processes, against the in-process hub of the ``hub`` fixture on
127.0.0.1 (bots pin their ICE host candidates to loopback because the URL is a loopback one).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from media.bot_load import LoadTest, LoadTestConfig, ProvisionError, Thresholds, provision
from media.bot_load.config import http_base_for, is_loopback_url
from media.bot_load.plan import build_worker_plans
from media.bot_load.progress import ProgressDisplay
from media.bot_load.provision import RetryPolicy, RoomPlan, provision_rooms
from media.bot_load.report import TimelinePoint, distribution, percentile
from media.bot_load.thresholds import evaluate
from signaling.testing.hub import SECRET, HubHandle, start_hub, test_settings
from signaling.testing.ports import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "loadtest.md"


def documented_fields() -> list[str]:
    """Dotted paths listed in the "Report fields" section of docs/loadtest.md."""
    text = DOCS.read_text()
    section = text.split("## Report fields", 1)[1].split("\n## ", 1)[0]
    fields = re.findall(r"^\| `([a-z0-9_.\[\]]+)`", section, flags=re.MULTILINE)
    assert len(fields) > 30, "the docs' field table went missing"
    return fields


def lookup(report: dict[str, Any], path: str) -> Any:
    """``a.b[].c`` -> ``report["a"]["b"][0]["c"]``; raises KeyError/IndexError if absent."""
    node: Any = report
    for part in path.split("."):
        many = part.endswith("[]")
        node = node[part.removesuffix("[]")]
        if many:
            assert isinstance(node, list), path
            node = node[0]
    return node


async def run_cli(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signaling.cli", "--log-level", "WARNING", "loadtest", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --------------------------------------------------------------------------- units


def test_urls() -> None:
    assert http_base_for("ws://127.0.0.1:8080/ws") == "http://127.0.0.1:8080"
    assert http_base_for("wss://rtc.example.com/prefix/ws") == "https://rtc.example.com/prefix"
    assert is_loopback_url("ws://127.0.0.1:1/ws") and is_loopback_url("ws://localhost/ws")
    assert is_loopback_url("ws://[::1]:80/ws") and not is_loopback_url("wss://example.com/ws")
    with pytest.raises(ValueError):
        http_base_for("http://127.0.0.1/ws")


@pytest.mark.parametrize("bad", [{"peers_per_room": 5}, {"peers_per_room": 1}, {"rooms": 0},
                                 {"ramp": 0}, {"processes": 0}, {"profile": "fast"},
                                 {"pin_host_addresses": ("nope",)}])
def test_config_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LoadTestConfig(ws_url="ws://127.0.0.1:1/ws", **bad)


def test_bots_are_dealt_round_robin_on_a_ramp() -> None:
    config = LoadTestConfig(ws_url="ws://127.0.0.1:1/ws", rooms=3, peers_per_room=4, ramp=4,
                            settle_s=2, duration_s=10, processes=2)
    rooms = [RoomPlan(f"m{r}", f"room{r}", tuple(f"t{r}{s}" for s in range(4)))
             for r in range(3)]
    plans = build_worker_plans(config, rooms)
    assert [len(p.bots) for p in plans] == [6, 6]
    bots = sorted((b for p in plans for b in p.bots), key=lambda b: b.index)
    assert [b.join_offset_s for b in bots] == [i / 4 for i in range(12)]
    assert [b.room_id for b in bots[:4]] == ["room0"] * 4  # rooms fill one after the other
    assert {b.index % 2 for b in plans[1].bots} == {1}  # a room's bots span the processes
    assert all(b.expected_peers == 3 for b in bots)
    assert plans[0].window_start_s == 11 / 4 + 2 and plans[0].window_end_s == 11 / 4 + 12
    pair = [RoomPlan("m", "room", ("a", "b"))]
    one = build_worker_plans(LoadTestConfig(ws_url="ws://127.0.0.1:1/ws", rooms=1,
                                            peers_per_room=2, processes=8), pair)
    assert len(one) == 2  # no idle processes


def test_percentiles() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 95) == 95.0
    d = distribution([0.1, 0.2, 0.3])
    assert (d["count"], d["p50"], d["max"]) == (3, 0.2, 0.3)


def test_thresholds_check_only_what_was_given() -> None:
    report: dict[str, Any] = {
        "media": {"delivery_pct": 96.0, "loss_pct": 0.5},
        "errors": {"ice-failed": 2}, "totals": {"failed": 1},
        "latency": {"join_s": {"p95": 0.2}, "connect_s": {"p95": None}},
    }
    assert evaluate(Thresholds(), report) == {"passed": True, "checks": []}
    verdict = evaluate(Thresholds(min_delivery_pct=95, max_errors=1, max_join_p95_s=0.5),
                       report)
    assert not verdict["passed"]
    assert [(c["name"], c["passed"]) for c in verdict["checks"]] == [
        ("min_delivery_pct", True), ("max_errors", False), ("max_join_p95_s", True)]
    # A figure that was never measured fails its check: a gate must not pass on nothing.
    assert not evaluate(Thresholds(max_connect_p95_s=10), report)["passed"]
    with pytest.raises(ValueError):
        Thresholds(min_delivery_pct=101)


def test_progress_display_updates_one_line_on_a_tty_and_prints_lines_otherwise() -> None:
    config = LoadTestConfig(ws_url="ws://127.0.0.1:1/ws", rooms=2, ramp=10, settle_s=1,
                            duration_s=5)
    point = TimelinePoint(t_s=1.0, joined=8, connected=6, failed=0, connections=10,
                          cpu_pct=40.0, loop_lag_ms=3.0)
    tty = io.StringIO()
    display = ProgressDisplay(config, tty, tty=True)
    display("provisioning", None)
    display("running", point)
    display.close()
    assert tty.getvalue().count("\r\x1b[K") == 2 and tty.getvalue().endswith("\n")
    assert "settling" in tty.getvalue() and "joined 8/8" in tty.getvalue()
    assert "connections 10/12" in tty.getvalue()
    log = io.StringIO()
    display = ProgressDisplay(config, log, tty=False, every_s=3600)
    for _ in range(5):
        display("running", point)  # same phase, within every_s: printed once
    display("collecting", None)
    assert log.getvalue().count("\n") == 2 and "\r" not in log.getvalue()


# --------------------------------------------------------------------------- provisioning


async def test_provisioning_rides_out_the_api_rate_limit() -> None:
    hub = await start_hub(test_settings(limits={"api_requests_per_second": 2}))
    try:
        config = LoadTestConfig(ws_url=hub.ws_url, secret=SECRET, rooms=6, peers_per_room=3)
        rooms, retries = await provision_rooms(
            config, retry=RetryPolicy(attempts=20, base_s=0.1, max_s=0.5))
        assert retries > 0  # 12 calls against a burst of 8: some were answered 429
        assert len({r.room_id for r in rooms}) == 6
        for room in rooms:
            claims = [hub.tokens.verify_join(t) for t in room.tokens]
            assert {c.room_id for c in claims} == {room.room_id}
            assert [c.role for c in claims] == ["host", "participant", "participant"]
            assert len({c.user_id for c in claims}) == 3
    finally:
        await hub.aclose()


async def test_provisioning_spreads_rooms_over_organizers_within_the_meeting_quota(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub caps each user's open meetings (50 by default); a load test of more rooms than
    that as one organizer got 409 meeting-quota. Rooms are spread over organizers."""
    monkeypatch.setattr(provision, "ROOMS_PER_ORGANIZER", 2)
    hub = await start_hub(test_settings(limits={"max_open_meetings_per_user": 2}))
    try:
        config = LoadTestConfig(ws_url=hub.ws_url, secret=SECRET, rooms=5, peers_per_room=2)
        rooms, _ = await provision_rooms(config)  # one organizer would be refused the 3rd
        assert len({r.room_id for r in rooms}) == 5
    finally:
        await hub.aclose()


async def test_provisioning_with_a_user_credential(hub: HubHandle) -> None:
    config = LoadTestConfig(ws_url=hub.ws_url, user_token=hub.user_token("organizer"),
                            rooms=1, peers_per_room=2)
    (room,), _ = await provision_rooms(config)
    claims = [hub.tokens.verify_join(t) for t in room.tokens]
    assert [c.role for c in claims] == ["host", "participant"]
    assert {c.user_id for c in claims} == {"organizer"}


async def test_provisioning_refusals_are_typed(hub: HubHandle) -> None:
    with pytest.raises(ProvisionError) as caught:
        await provision_rooms(LoadTestConfig(ws_url=hub.ws_url))  # no credential, not dev mode
    assert caught.value.code == "no-credential"
    with pytest.raises(ProvisionError) as caught:
        await provision_rooms(LoadTestConfig(ws_url=hub.ws_url, secret="not-the-hub-secret-0123456789abcdef-xyz"))
    assert caught.value.status == 401


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
async def test_cli_smoke_writes_every_documented_field_and_a_png(
    hub: HubHandle, tmp_path: Path
) -> None:
    import PIL.Image as pil  # pillow comes with matplotlib
    out, png = tmp_path / "report.json", tmp_path / "report.png"
    code, stdout, stderr = await run_cli(
        "--url", hub.ws_url, "--secret", SECRET, "--rooms", "2", "--peers-per-room", "4",
        "--ramp", "20", "--settle", "2", "--duration", "5", "--processes", "2",
        "--out", str(out), "--plot", str(png), "--min-delivery", "95", "--max-failed-bots", "0")
    assert code == 0, stdout + stderr
    assert "Traceback" not in stderr
    assert "media delivery" in stdout and "verdict               PASS" in stdout
    report = json.loads(out.read_text())
    for path in documented_fields():
        lookup(report, path)
    assert report["config"]["pin_host_addresses"] == ["127.0.0.1"]
    assert report["totals"]["joined"] == 8 and report["totals"]["failed"] == 0
    assert report["totals"]["connections_connected"] == 12
    assert report["media"]["delivery_pct"] >= 95
    assert len(report["samples"]["connect_s"]) == 24 and report["errors"] == {}
    assert [p["exit_code"] for p in report["resources"]["processes"]] == [0, 0]
    assert report["resources"]["cpu_pct_per_bot"] > 0 and report["thresholds"]["passed"]
    with pil.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400
        image.verify()


@pytest.mark.slow
async def test_cli_exits_non_zero_when_a_threshold_is_missed(hub: HubHandle,
                                                              tmp_path: Path) -> None:
    # Relay-only with no TURN server: the bots join but no connection can come up.
    out = tmp_path / "report.json"
    code, stdout, stderr = await run_cli(
        "--url", hub.ws_url, "--secret", SECRET, "--rooms", "1", "--peers-per-room", "2",
        "--ramp", "20", "--settle", "1", "--duration", "1", "--processes", "1", "--relay",
        "--min-delivery", "95", "--out", str(out), "--quiet")
    assert code == 1, stdout + stderr
    assert "Traceback" not in stderr and "FAIL" in stdout
    report = json.loads(out.read_text())
    assert report["errors"].get("turn-auth-failed", 0) >= 1
    assert report["media"]["delivery_pct"] == 0
    (check,) = report["thresholds"]["checks"]
    assert check["name"] == "min_delivery_pct" and not check["passed"]


async def test_cli_against_a_stopped_hub_fails_cleanly() -> None:
    port = free_port()
    code, _, stderr = await run_cli("--url", f"ws://127.0.0.1:{port}/ws", "--secret", SECRET,
                                    "--quiet")
    assert code == 3
    assert "hub-unreachable" in stderr and "Traceback" not in stderr


async def test_cli_refuses_bad_arguments() -> None:
    code, _, stderr = await run_cli("--url", "ws://127.0.0.1:1/ws", "--peers-per-room", "5")
    assert code == 2 and "peers_per_room" in stderr


@pytest.mark.slow
async def test_stop_makes_the_bots_leave_and_still_reports(hub: HubHandle) -> None:
    config = LoadTestConfig(ws_url=hub.ws_url, secret=SECRET, rooms=1, peers_per_room=2,
                            ramp=20, settle_s=0.5, duration_s=120, processes=1,
                            pin_host_addresses=("127.0.0.1",))
    test = LoadTest(config)
    run = asyncio.create_task(test.run())
    await wait_until(lambda: any(p.connected == 2 for p in test.timeline), timeout=30,
                     interval=0.1, what="both bots connected")
    test.stop()
    async with asyncio.timeout(20):  # well inside the 120 s window: stop() cut it short
        report = await run
    assert report["interrupted"] and report["totals"]["joined"] == 2
    assert [p["exit_code"] for p in report["resources"]["processes"]] == [0]
    assert report["errors"] == {}
