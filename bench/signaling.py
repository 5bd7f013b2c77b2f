"""Signalling cost: our hub (memory 1 worker, Redis 1 worker, Redis 2 workers) vs PeerJS server.

    .venv/bin/python -m bench.signaling [--quick] [--json FILE]
    .venv/bin/python -m bench.signaling --profile /tmp/hub.txt     # py-spy of the hub at 5k msg/s

Installs PeerJS server (npm ``peer@1.0.2``) into bench/.peerjs if missing, starts each server on
127.0.0.1 and drives it with the same multi-process load generator (bench/signaling_load/) speaking
that server's protocol. Per configuration, in this order:

1. RSS of the idle server, then ``--idle-clients`` clients connect/join (``--concurrency`` in
   flight): join/connect latency, then RSS and idle CPU with all of them connected.
2. All but ``--clients`` clients leave; the rest send relay messages with a 200-byte payload
   to random peers of their group of 4 at fixed offered loads (``--rates``): server CPU per
   relayed message, relay latency p50/p99, generator CPU.
3. Redis, 2 workers only: the same load once all within a worker and once all across workers
   (the cross-worker cost ratio; both workers and Redis summed).
4. A ramp of the offered rate until the delivered rate stops growing (saturation).

Prints one markdown table and the targets of issue 8; ``--json FILE`` writes every figure.
Every process it starts is stopped by PID at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

if not __package__:  # run as a file: bench/signaling.py would shadow the signaling package
    sys.exit("run it as a module from the repository root: .venv/bin/python -m bench.signaling")

from bench.signaling_load.clients import ClientSpec
from bench.signaling_load.generator import Generator, loop_name
from bench.signaling_load.procfs import cpu_seconds, machine_busy_s, pct, rss_bytes
from bench.signaling_load.report import (
    CONFIGS,
    render,
    render_baseline,
    render_notes,
    summarize_profile,
    targets,
)
from signaling.testing.hub import SECRET
from signaling.testing.hub_process import HubProcess
from signaling.testing.meetings import join_token, start_meeting
from signaling.testing.ports import free_port
from signaling.testing.redis_server import run_redis

ROOT = Path(__file__).resolve().parents[1]

PEERJS_DIR = ROOT / "bench" / ".peerjs"
#: Name prefix of a configuration run from ``--baseline-tree``.
BASELINE = "baseline:"
PEERJS_VERSION = "1.0.2"
HUB_ENV = {
    "CONNVO_RTC_LIMITS_API_REQUESTS_PER_SECOND": "1000000",
    "CONNVO_RTC_LIMITS_MESSAGES_PER_SECOND": "1000000",
    "CONNVO_RTC_LIMITS_MESSAGE_BURST": "1000000",
    "CONNVO_RTC_LIMITS_MAX_CONNECTIONS": "15000",  # within a 20,000 open-file hard limit
    # Every room is one organizer's meeting here.
    "CONNVO_RTC_LIMITS_MAX_OPEN_MEETINGS_PER_USER": "0",
    "CONNVO_RTC_LOG_LEVEL": "WARNING",
    "CONNVO_RTC_TAP_ENABLED": "false",
}


# ---------------------------------------------------------------------- servers


@dataclass
class Setup:
    """The servers of one configuration: whose CPU/RSS counts and where clients connect."""

    name: str
    kind: str  # "hub" or "peerjs"
    ws_urls: list[str]
    server_pids: list[int]
    redis_pid: int | None = None
    api_url: str = ""

    @property
    def all_pids(self) -> list[int]:
        return self.server_pids + ([self.redis_pid] if self.redis_pid else [])


class MemoryHub(HubProcess):
    """A hub worker with in-memory state (``HubProcess`` always passes ``--redis``)."""

    def start(self) -> None:
        fd, self.log_path = tempfile.mkstemp(prefix=f"bench-hub-{self.port}-", suffix=".log")
        env = {**os.environ, "CONNVO_RTC_AUTH_SECRET": SECRET, **self.env}
        if self.tree:
            env["PYTHONPATH"] = self.tree
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "signaling.cli", "serve", "--port", str(self.port)],
            stdout=fd, stderr=fd, cwd=self.tree or ROOT, env=env)
        os.close(fd)


@contextlib.asynccontextmanager
async def hub_setup(name: str, redis_pid: int | None, redis_url: str | None,
                    workers: int, args: argparse.Namespace) -> AsyncIterator[Setup]:
    env = {**HUB_ENV, "CONNVO_RTC_LOG_LEVEL": args.hub_log_level}
    tree = args.baseline_tree if name.startswith(BASELINE) else None
    if tree:  # an older tree refuses settings it does not have (they did not exist then)
        known = (Path(tree) / "signaling" / "settings.py").read_text()
        env = {k: v for k, v in env.items()
               if not k.startswith("CONNVO_RTC_LIMITS_") or k[18:].lower() in known}
    procs: list[HubProcess] = [
        MemoryHub(free_port(), "", env=dict(env), tree=tree) if redis_url is None
        else HubProcess(free_port(), redis_url, env=dict(env), tree=tree)
        for _ in range(workers)]
    try:
        for h in procs:
            h.start()
        await asyncio.gather(*(h.wait_ready() for h in procs))
        yield Setup(name, "hub", [h.ws_url for h in procs],
                    [h.proc.pid for h in procs if h.proc is not None], redis_pid,
                    procs[0].base_url)
    finally:
        for i, h in enumerate(procs):
            await asyncio.to_thread(h.kill, signal.SIGTERM)  # by PID; SIGKILL after 15 s
            if args.keep_logs and h.log_path:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                shutil.copy(h.log_path, Path(args.keep_logs) / f"{name}-worker{i}.log")
            h.cleanup()


def ensure_peerjs() -> None:
    """``npm install --prefix bench/.peerjs peer@1.0.2`` unless that version is there."""
    package = PEERJS_DIR / "node_modules" / "peer" / "package.json"
    if package.exists() and json.loads(package.read_text()).get("version") == PEERJS_VERSION:
        return
    print(f"installing PeerJS server peer@{PEERJS_VERSION} into {PEERJS_DIR} ...", flush=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(PEERJS_DIR),
                    f"peer@{PEERJS_VERSION}"], check=True, timeout=600)


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """SIGTERM by PID, SIGKILL if it is still there after ``timeout``."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), timeout)


@contextlib.asynccontextmanager
async def peerjs_setup() -> AsyncIterator[Setup]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = await asyncio.create_subprocess_exec(
            "node", str(ROOT / "bench" / "peerjs_server.js"), "--port", str(port),
            stdout=asyncio.subprocess.PIPE, stderr=log)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line.startswith(b"listening"):
                log.seek(0)
                raise RuntimeError(f"PeerJS server did not start: {line!r} "
                                   f"{log.read()[-2000:]!r}")
            yield Setup("peerjs", "peerjs", [f"ws://127.0.0.1:{port}/peerjs"], [proc.pid])
        finally:
            await stop_process(proc)


@contextlib.asynccontextmanager
async def setup_for(name: str, args: argparse.Namespace) -> AsyncIterator[Setup]:
    config = name.removeprefix(BASELINE)
    if name == "peerjs":
        async with peerjs_setup() as s:
            yield s
    elif config == "memory-1w":
        async with hub_setup(name, None, None, 1, args) as s:
            yield s
    else:
        async with run_redis() as redis:
            assert redis.proc is not None
            async with hub_setup(name, redis.proc.pid, redis.url,
                                 2 if config == "redis-2w" else 1, args) as s:
                yield s


async def create_rooms(api_url: str, count: int, concurrency: int = 16) -> list[str]:
    """``count`` started meetings; their room ids."""
    sem = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def one() -> str:
            async with sem:
                return (await start_meeting(api_url, session=session))[1]

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def build_groups(setup: Setup, count: int) -> list[list[ClientSpec]]:
    """``count`` groups of 4 clients; on 2 workers, members 0-1 on one and 2-3 on the other."""
    if setup.kind == "peerjs":
        url = setup.ws_urls[0]
        groups = []
        for g in range(count):
            ids = [f"g{g}m{m}{secrets.token_hex(3)}" for m in range(4)]
            groups.append([ClientSpec(f"{url}?key=peerjs&id={i}&token={secrets.token_hex(8)}",
                                      None, 0, i) for i in ids])
        return groups
    rooms = await create_rooms(setup.api_url, count)
    workers = len(setup.ws_urls)
    return [[ClientSpec(setup.ws_urls[m * workers // 4],
                        json.dumps({"type": "join", "token": join_token(room, f"u{m}")}),
                        m * workers // 4) for m in range(4)] for room in rooms]


# ---------------------------------------------------------------------- measuring


@dataclass
class Meter:
    """CPU of the server processes, Redis, the generator and the whole machine over a window."""

    setup: Setup
    generator: Generator
    start: dict[str, float] = field(default_factory=dict)

    def sample(self) -> dict[str, float]:
        s = {"server": sum(cpu_seconds(p) for p in self.setup.server_pids),
             "redis": cpu_seconds(self.setup.redis_pid) if self.setup.redis_pid else 0.0,
             "generator": sum(cpu_seconds(p) for p in self.generator.pids),
             "machine": machine_busy_s(), "t": time.monotonic()}
        return s

    def begin(self) -> None:
        self.start = self.sample()

    def end(self) -> dict[str, float]:
        now = self.sample()
        d = {k: now[k] - self.start[k] for k in now}
        d["other"] = max(0.0, d["machine"] - d["server"] - d["redis"] - d["generator"])
        return d


async def settle(setup: Setup, seconds: float = 0.3, timeout: float = 20.0) -> None:
    """Wait (bounded) until the servers are quiet: under 5 % of a core, or steady (a hub on
    Redis keeps some idle work that grows with its rooms)."""
    deadline = time.monotonic() + timeout
    last = float("inf")
    while time.monotonic() < deadline:
        c0 = sum(cpu_seconds(p) for p in setup.all_pids)
        await asyncio.sleep(seconds)
        cores = (sum(cpu_seconds(p) for p in setup.all_pids) - c0) / seconds
        if cores < 0.05 or (cores < 0.4 and abs(cores - last) < 0.03):
            return
        last = cores


async def phase(setup: Setup, gen: Generator, rate: float, mode: str, seconds: float,
                warm: float = 0.5, drain: float = 1.0) -> dict[str, Any]:
    """Offer ``rate`` msg/s for ``warm + seconds``; measure the last ``seconds``."""
    start = time.monotonic_ns() + 200_000_000  # time for the command to reach every process
    w0 = start + int(warm * 1e9)
    w1 = w0 + int(seconds * 1e9)
    meter = Meter(setup, gen)
    kwargs = {"rate": rate / len(gen), "start_ns": start, "w0": w0, "w1": w1, "mode": mode,
              "drain_s": drain}
    replies = asyncio.create_task(gen.call("phase", [kwargs] * len(gen),
                                           timeout=warm + seconds + drain + 30))
    await asyncio.sleep(max(0.0, (w0 - time.monotonic_ns()) / 1e9))
    meter.begin()
    await asyncio.sleep(max(0.0, (w1 - time.monotonic_ns()) / 1e9))
    cpu = meter.end()
    results = await replies
    # A server that fell behind must work off its backlog before anything else is measured
    # (the next phase may be another configuration's).
    await settle(setup, timeout=15.0)
    same, cross = array("q"), array("q")
    for r in results:
        same.frombytes(r["lat_same"])
        cross.frombytes(r["lat_cross"])
    delivered = len(same) + len(cross)
    lat = [v / 1e6 for v in (*same, *cross)]
    server_cpu = cpu["server"] + cpu["redis"]
    return {
        "offered_per_s": rate, "mode": mode, "seconds": cpu["t"],
        "sent_per_s": sum(r["sent_in_window"] for r in results) / cpu["t"],
        "generator_skipped": sum(r["skipped"] for r in results),
        "delivered_per_s": delivered / cpu["t"],
        "server_cpu_us_per_msg": server_cpu * 1e6 / delivered if delivered else float("nan"),
        "hub_cpu_us_per_msg": cpu["server"] * 1e6 / delivered if delivered else float("nan"),
        "redis_cpu_us_per_msg": cpu["redis"] * 1e6 / delivered if delivered else float("nan"),
        "server_cores": server_cpu / cpu["t"], "redis_cores": cpu["redis"] / cpu["t"],
        "generator_cores": cpu["generator"] / cpu["t"],
        "generator_self_cores": sum(r["cpu_s"] for r in results) / cpu["t"],
        "other_cores": cpu["other"] / cpu["t"],
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat, default=float("nan")),
        "same_p50_ms": pct([v / 1e6 for v in same], 50),
        "same_p99_ms": pct([v / 1e6 for v in same], 99),
        "cross_p50_ms": pct([v / 1e6 for v in cross], 50),
        "cross_p99_ms": pct([v / 1e6 for v in cross], 99),
        "cross_share": len(cross) / delivered if delivered else 0.0,
        "server_errors": sum(r["server_errors"] for r in results),
        "dropped_sockets": sum(r["dropped"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
        "error_codes": _sum_counts(r["error_codes"] for r in results),
    }


def _sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def _progress(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _phase_line(r: dict[str, Any]) -> str:
    return (f"offered {r['offered_per_s']:.0f}/s ({r['mode']}): sent {r['sent_per_s']:.0f}/s, "
            f"delivered {r['delivered_per_s']:.0f}/s, server {r['server_cpu_us_per_msg']:.1f} "
            f"us/msg ({r['server_cores']:.2f} cores), p50/p99 {r['p50_ms']:.2f}/"
            f"{r['p99_ms']:.2f} ms, generator {r['generator_cores']:.2f} cores, other "
            f"{r['other_cores']:.2f} cores"
            + (f", generator stalled: {r['generator_skipped']} sends skipped"
               if r["generator_skipped"] else "")
            + (f", errors {r['error_codes']}, {r['dropped_sockets']} sockets dropped; first: "
               f"{r['first_error'][:160]}" if r["server_errors"] or r["dropped_sockets"] else ""))


@dataclass
class Running:
    """One configuration with its servers up and its sending clients connected."""

    name: str
    setup: Setup
    gen: Generator
    mode: str  # traffic mode of the main loads: "random" (1 worker) or "mixed" (2 workers)
    result: dict[str, Any] = field(default_factory=dict)


def _spread(groups: list[list[ClientSpec]], procs: int) -> list[dict[int, list[ClientSpec]]]:
    """Group g goes to generator process g % procs."""
    per_proc: list[dict[int, list[ClientSpec]]] = [{} for _ in range(procs)]
    for g, members in enumerate(groups):
        per_proc[g % procs][g] = members
    return per_proc


async def connect(run: Running, groups: list[list[ClientSpec]], concurrency: int
                  ) -> tuple[array[int], float]:
    """Connect (and join) every client; their connect-to-ready latencies (ns) and the time."""
    gen = run.gen
    t0 = time.monotonic()
    replies = await gen.call("connect", [
        {"groups": p, "concurrency": max(1, concurrency // len(gen)), "timeout": 30.0}
        for p in _spread(groups, len(gen))], timeout=120 + len(groups) * 0.1)
    elapsed = time.monotonic() - t0
    lat = array("q")
    for r in replies:
        lat.frombytes(r["latencies"])
    failed = sum(r["failed"] for r in replies)
    if failed:
        errors = [e for r in replies for e in r["errors"]][:3]
        _progress(f"{run.name}: {failed} clients failed to connect: {errors}")
    run.result["connect_failed"] = run.result.get("connect_failed", 0) + failed
    return lat, elapsed


async def prepare(name: str, args: argparse.Namespace,
                  stack: contextlib.AsyncExitStack) -> Running:
    """Start ``name``'s servers and generator (stopped by ``stack``); connect
    ``--idle-clients`` clients for the join and RSS figures, then keep ``--clients``."""
    _progress(f"{name}: starting (load {os.getloadavg()[0]:.2f})")
    setup = await stack.enter_async_context(setup_for(name, args))
    gen = Generator(args.procs, setup.kind)
    stack.push_async_callback(gen.aclose)
    gen.start()
    run = Running(name, setup, gen, "mixed" if len(setup.ws_urls) > 1 else "random")
    res = run.result
    await settle(setup)
    pids = setup.server_pids
    rss0 = sum(rss_bytes(p) for p in pids)
    redis_rss0 = rss_bytes(setup.redis_pid) if setup.redis_pid else 0
    groups = await build_groups(setup, max(args.idle_clients, args.clients) // 4)
    rss_rooms = sum(rss_bytes(p) for p in pids)
    lat, elapsed = await connect(run, groups, args.concurrency)
    n = len(lat)
    if n < 4:
        raise RuntimeError(f"{name}: no group of clients could connect (see the errors above)")
    ms = [v / 1e6 for v in lat]
    res.update(clients_connected=n, join_p50_ms=pct(ms, 50), join_p99_ms=pct(ms, 99),
               joins_per_s=n / elapsed)
    _progress(f"{name}: {n} clients ready in {elapsed:.1f} s (p50 {res['join_p50_ms']:.1f} "
              f"ms, p99 {res['join_p99_ms']:.1f} ms)")
    await settle(setup)
    meter = Meter(setup, gen)
    meter.begin()
    await asyncio.sleep(args.idle_seconds)
    idle = meter.end()
    rss_n = sum(rss_bytes(p) for p in pids)
    redis_rss_n = rss_bytes(setup.redis_pid) if setup.redis_pid else 0
    res.update(rss_base_mb=rss0 / 2**20, rss_rooms_mb=rss_rooms / 2**20,
               rss_connected_mb=rss_n / 2**20, rss_per_conn_kb=(rss_n - rss0) / n / 1024,
               redis_rss_per_conn_kb=(redis_rss_n - redis_rss0) / n / 1024
               if setup.redis_pid else None,
               idle_server_cores=(idle["server"] + idle["redis"]) / idle["t"])
    _progress(f"{name}: RSS {rss0 / 2**20:.1f} -> {rss_n / 2**20:.1f} MiB with {n} clients: "
              f"{res['rss_per_conn_kb']:.2f} KiB each; idle CPU "
              f"{res['idle_server_cores'] * 1e3:.1f} ms/s")
    active = args.clients // 4
    await gen.call("close", [{"groups": [g for g in p if g >= active]}
                             for p in _spread(groups, len(gen))], timeout=120)
    await settle(setup)
    res.update(active_clients=active * 4, load_runs={})
    return run


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Prepare every configuration, then run the loads interleaved (config by config for
    each rate, the order reversed every other rate) so that the machine's background load
    drifts over all configurations alike."""
    if "peerjs" in args.configs:
        await asyncio.to_thread(ensure_peerjs)
    async with contextlib.AsyncExitStack() as stack:
        runs = [await prepare(name, args, stack) for name in args.configs]
        for rep in range(args.repeat):
            for i, rate in enumerate(args.rates):
                for r in runs if (i + rep) % 2 == 0 else runs[::-1]:
                    res = await phase(r.setup, r.gen, rate, r.mode, args.seconds,
                                      warm=args.warm, drain=args.drain)
                    _progress(f"{r.name}: {_phase_line(res)}")
                    r.result["load_runs"].setdefault(str(rate), []).append(res)
        for r in runs:
            r.result["loads"] = [_median(r.result["load_runs"][str(rate)])
                                 for rate in args.rates]
        for r in runs:
            if len(r.setup.ws_urls) > 1:
                await cross_cost(r, args)
        await saturate(runs, args)
        return {r.name: r.result for r in runs}


async def cross_cost(run: Running, args: argparse.Namespace) -> None:
    """All traffic within a worker vs all across workers, in ABBA order (drift cancels)."""
    phases: dict[str, list[dict[str, Any]]] = {"local": [], "cross": []}
    order = ("local", "cross") if args.quick else ("local", "cross", "cross", "local")
    for mode in order:
        res = await phase(run.setup, run.gen, args.cross_rate, mode,
                          args.seconds if args.quick else args.seconds / 2, warm=args.warm,
                          drain=args.drain)
        _progress(f"{run.name}: {_phase_line(res)}")
        phases[mode].append(res)
    cost = {m: _merge(v) for m, v in phases.items()}
    run.result["cross_cost"] = cost
    run.result["cross_cost_ratio"] = (cost["cross"]["server_cpu_us_per_msg"]
                                      / cost["local"]["server_cpu_us_per_msg"])


def _median(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of one load as one phase: the median of every figure."""
    merged = dict(repeats[0])
    for key, value in repeats[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in repeats)
    merged["repeats"] = len(repeats)
    return merged


def _merge(halves: list[dict[str, Any]]) -> dict[str, Any]:
    """Two equal-length phases as one: rates and CPU per message averaged."""
    merged = dict(halves[0])
    for key, value in halves[0].items():
        if isinstance(value, float) and not key.endswith("_ms"):
            merged[key] = sum(h[key] for h in halves) / len(halves)
    for key in ("p50_ms", "p99_ms", "max_ms"):  # no raw samples here: the worse of the two
        merged[key] = max(h[key] for h in halves)
    merged["halves"] = halves
    return merged


async def saturate(runs: list[Running], args: argparse.Namespace) -> None:
    """Ramp every configuration's offered rate x1.5 per step (interleaved) until delivery
    falls behind the offer or stops growing."""
    state = {r.name: {"rate": args.ramp_start, "best": 0.0, "steps": []} for r in runs}
    ramping = list(runs)
    for _ in range(args.ramp_steps):
        for r in list(ramping):
            st = state[r.name]
            res = await phase(r.setup, r.gen, st["rate"], r.mode, args.ramp_seconds, warm=0.3,
                              drain=3.0)
            _progress(f"{r.name}: ramp {_phase_line(res)}")
            st["steps"].append(res)
            delivered = res["delivered_per_s"]
            if delivered < 0.9 * st["rate"] or delivered < 1.03 * st["best"]:
                ramping.remove(r)
            st["best"] = max(st["best"], delivered)
            st["rate"] *= 1.5
        if not ramping:
            break
    for r in runs:
        steps = state[r.name]["steps"]
        r.result["saturation"] = steps
        r.result["saturation_per_s"] = max(s["delivered_per_s"] for s in steps)


# ---------------------------------------------------------------------- profile


async def profile(args: argparse.Namespace) -> None:
    """py-spy (raw collapsed stacks, by function) of the memory hub while it relays
    ``--profile-rate`` msg/s from ``--clients`` clients; prints the top functions by own time."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    name, mode = args.profile_config, args.profile_mode
    async with setup_for(name, args) as setup:
        gen = Generator(args.procs, setup.kind)
        try:
            gen.start()
            groups = await build_groups(setup, args.clients // 4)
            await connect(Running(name, setup, gen, mode), groups, args.concurrency)
            await settle(setup)
            warm = 1.0
            spy_proc = await asyncio.create_subprocess_exec(
                str(spy), "record", "--pid", str(setup.server_pids[0]), "--duration",
                str(int(warm + args.profile_seconds + 1)), "--format", "raw", "--function",
                *(["--native"] if args.profile_native else ["--nonblocking"]),
                "--rate", "200", "-o", args.profile,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            try:
                r = await phase(setup, gen, args.profile_rate, mode, args.profile_seconds,
                                warm=warm)
                _, err = await asyncio.wait_for(spy_proc.communicate(), 60)
            finally:
                await stop_process(spy_proc)
            if spy_proc.returncode:
                raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
            print(f"{name} (first worker) under py-spy at {args.profile_rate:.0f} msg/s "
                  f"offered, {args.clients} clients: {_phase_line(r)}")
        finally:
            await gen.aclose()
    print(summarize_profile(Path(args.profile)))


def _git_rev() -> str:
    """The commit the hub runs from, and whether signaling/ has uncommitted changes."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *argv], check=False,
                              capture_output=True, text=True, timeout=10).stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        dirty = git("status", "--porcelain", "signaling")
        return git("rev-parse", "--short", "HEAD") + (
            " + uncommitted changes in signaling/" if dirty else "")
    return "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="about a minute: fewer clients, shorter phases")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--clients", type=int, help="clients sending in the load phases "
                        "(default 1000; quick 200)")
    parser.add_argument("--idle-clients", type=int, help="clients connected for the RSS and "
                        "join figures (default 5000; quick 1000)")
    parser.add_argument("--rates", default="1000,5000,10000",
                        help="fixed offered loads, msg/s (comma-separated)")
    parser.add_argument("--seconds", type=float, help="measured seconds per fixed load "
                        "(default 5; quick 1)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the fixed loads this many times; the table shows medians")
    parser.add_argument("--cross-rate", type=float, default=5000.0,
                        help="offered msg/s of the 2-worker local-vs-cross phases")
    parser.add_argument("--ramp-start", type=float, help="first offered rate of the "
                        "saturation ramp, x1.5 per step (default 4000; quick 6000)")
    parser.add_argument("--ramp-steps", type=int, help="at most this many ramp steps "
                        "(default 8; quick 3)")
    parser.add_argument("--ramp-seconds", type=float, help="seconds per ramp step (default 2; "
                        "quick 1)")
    parser.add_argument("--idle-seconds", type=float, default=2.0,
                        help="idle CPU window with every client connected")
    parser.add_argument("--procs", type=int, default=2, help="generator processes")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="joins/connects in flight (over all generator processes)")
    parser.add_argument("--baseline-tree", metavar="DIR",
                        help="also run every hub configuration from this source tree (e.g. a "
                             "`git worktree` of an older commit), interleaved with this one, "
                             "and print before/after ratios")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the hub workers' logs here")
    parser.add_argument("--hub-log-level", default="WARNING",
                        help="the hubs' log level (INFO logs every join: costs CPU)")
    parser.add_argument("--profile", metavar="FILE",
                        help="only profile the memory hub with py-spy (raw stacks to FILE)")
    parser.add_argument("--profile-rate", type=float, default=5000.0)
    parser.add_argument("--profile-config", default="memory-1w", choices=CONFIGS[1:],
                        help="the hub configuration to profile (its first worker)")
    parser.add_argument("--profile-mode", default="random",
                        choices=("random", "local", "cross", "mixed"),
                        help="traffic: random peers, same worker, across workers, half/half")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-native", action="store_true",
                        help="also sample C frames (py-spy --native; pauses the hub per sample)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.clients = args.clients or (200 if quick else 1000)
    args.idle_clients = args.idle_clients or (1000 if quick else 5000)
    args.seconds = args.seconds or (1.0 if quick else 5.0)
    args.ramp_seconds = args.ramp_seconds or (1.0 if quick else 2.0)
    args.ramp_steps = args.ramp_steps or (3 if quick else 8)
    args.ramp_start = args.ramp_start or (6000.0 if quick else 4000.0)
    # Warm-up before, and the longest wait for stragglers after, each fixed-load window.
    args.warm, args.drain = (0.3, 0.5) if quick else (0.5, 1.0)
    if quick:
        args.idle_seconds = min(args.idle_seconds, 0.5)
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    if args.baseline_tree:
        if not (Path(args.baseline_tree) / "signaling" / "cli.py").is_file():
            parser.error(f"--baseline-tree {args.baseline_tree}: no signaling/cli.py there")
        # Each hub configuration runs twice, interleaved: from the baseline tree and from this.
        args.configs += [BASELINE + c for c in args.configs if c != "peerjs"]
    if args.clients % 4 or args.idle_clients % 4:
        parser.error("--clients and --idle-clients must be multiples of 4 (groups of 4)")
    return args


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so every started process is stopped by the exit stacks.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.profile:
        try:
            asyncio.run(profile(args))
        except KeyboardInterrupt:
            return 130
        return 0
    load0 = os.getloadavg()
    started = time.monotonic()
    try:
        results = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted: every process this run started was stopped", file=sys.stderr)
        return 130
    load1 = os.getloadavg()
    checks = targets(results, args)
    header = (f"signalling benchmark{' (quick)' if args.quick else ''}: {args.clients} sending "
              f"clients, {args.idle_clients} connected for RSS/join, "
              f"{args.seconds:g} s per load"
              f"{f' x{args.repeat} (medians)' if args.repeat > 1 else ''}, generator {args.procs} processes ({loop_name()}); "
              f"machine: {os.cpu_count()} cores, load avg 1 min {load0[0]:.2f} before / "
              f"{load1[0]:.2f} after, {time.monotonic() - started:.0f} s; hub {_git_rev()}")
    print(header)
    print()
    print(render(results, args))
    print()
    print(render_notes(results, checks, args))
    if args.baseline_tree:
        print()
        print(render_baseline(results, args, BASELINE))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "header": header, "machine": {"cores": os.cpu_count(), "load_before": load0,
                                          "load_after": load1},
            "args": {k: v for k, v in vars(args).items()}, "results": results,
            "targets": checks}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
