"""Join storm and relay latency: memory (1 worker) vs Redis (1 worker) vs Redis (2 workers).

    .venv/bin/python -m bench.join_storm [--rooms 100] [--concurrency 100] [--relay-seconds 5]
    .venv/bin/python -m bench.join_storm ... --failover 3 [--dead-after 10 --reap-interval 2.5]

Starts a real redis-server and real hub processes on loopback, creates ``rooms`` meetings, then
fires ``4 * rooms`` joins (``concurrency`` in flight) and times each join from the ``join`` frame
to ``joined``. Then it measures relay latency (offer frame sent -> received by the other peer)
between peers on the same worker and on two workers. Prints one table; ``--json FILE`` writes
the figures. The load generator runs in this process; its CPU time is printed so you can tell
when it, not the hub, was the limit.

``--failover N`` adds N trials of ``kill -9`` of a worker holding two peers of a room (Redis, two
workers, the given presence settings; default: the hub's defaults): seconds from the kill until
the peer on the other worker has seen ``peer-left`` for both, against the documented worst case
``dead_after_s + reap_interval_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

if not __package__:  # run as a file: bench/signaling.py would shadow the signaling package
    sys.exit("run it as a module from the repository root: .venv/bin/python -m bench.join_storm")

from signaling import protocol as p
from signaling.settings import RedisSettings
from signaling.testing.hub_process import HubProcess
from signaling.testing.meetings import join_token, start_meeting
from signaling.testing.ports import free_port
from signaling.testing.redis_server import run_redis

ENV = {"CONNVO_RTC_LIMITS_API_REQUESTS_PER_SECOND": "100000",
       "CONNVO_RTC_LIMITS_MESSAGES_PER_SECOND": "100000",
       "CONNVO_RTC_LIMITS_MESSAGE_BURST": "100000", "CONNVO_RTC_LOG_LEVEL": "WARNING",
       "CONNVO_RTC_TAP_ENABLED": "false",
       "CONNVO_RTC_LIMITS_MAX_OPEN_MEETINGS_PER_USER": "0"}  # every room: one organizer


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


@contextlib.asynccontextmanager
async def hubs(redis_url: str | None, count: int) -> AsyncIterator[list[HubProcess]]:
    procs = []
    for _ in range(count):
        h = HubProcess(free_port(), redis_url or "", env=dict(ENV))
        if redis_url is None:  # in-memory: no --redis flag
            h.extra = ()
        procs.append(h)
    try:
        for h in procs:
            if redis_url is None:
                _start_memory(h)
            else:
                h.start()
        await asyncio.gather(*(h.wait_ready() for h in procs))
        yield procs
    finally:
        for h in procs:
            h.cleanup()


def _start_memory(h: HubProcess) -> None:
    import subprocess
    import tempfile

    from signaling.testing.hub import SECRET

    fd, h.log_path = tempfile.mkstemp(prefix="bench-hub-", suffix=".log")
    h.proc = subprocess.Popen(
        [sys.executable, "-m", "signaling.cli", "serve", "--port", str(h.port)],
        stdout=fd, stderr=fd, env={**os.environ, "CONNVO_RTC_AUTH_SECRET": SECRET, **h.env})
    os.close(fd)


async def join_storm(workers: list[HubProcess], rooms: int, concurrency: int
                     ) -> tuple[list[float], float, list[Any]]:
    async with aiohttp.ClientSession() as session:
        room_ids = [(await start_meeting(workers[0].base_url, session=session))[1]
                    for _ in range(rooms)]
    plan = [(room_ids[i // 4], f"u{i}", workers[i % len(workers)]) for i in range(rooms * 4)]
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    sockets: list[Any] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def one(room_id: str, user: str, worker: HubProcess) -> None:
        async with sem:
            ws = await session.ws_connect(worker.ws_url)
            token = join_token(room_id, user)
            t0 = time.perf_counter()
            await ws.send_str(json.dumps({"type": "join", "token": token}))
            while True:
                msg = await ws.receive()
                m = p.decode_server(msg.data)
                if isinstance(m, p.Joined):
                    break
                if isinstance(m, p.Error):
                    raise RuntimeError(m)  # noqa: TRY004 - the hub refused the join
            latencies.append(time.perf_counter() - t0)
            sockets.append((ws, m))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(*x) for x in plan))
    elapsed = time.perf_counter() - t0
    return latencies, len(plan) / elapsed, [session, sockets]


async def relay_latency(a_url: str, b_url: str, seconds: float, rate: float) -> list[float]:
    """One pair in its own room: a sends offers to b at ``rate``/s; returns latencies (s)."""
    async with aiohttp.ClientSession() as session:
        base = a_url.replace("ws://", "http://").rsplit("/ws", 1)[0]
        _, room_id = await start_meeting(base, invite=("bob",), session=session)
        a = await session.ws_connect(a_url)
        b = await session.ws_connect(b_url)
        await a.send_str(json.dumps({"type": "join", "token": join_token(room_id, "host",
                                                                        "host")}))
        ja = p.decode_server((await a.receive()).data)
        await b.send_str(json.dumps({"type": "join", "token": join_token(room_id, "bob")}))
        jb = p.decode_server((await b.receive()).data)
        assert isinstance(ja, p.Joined) and isinstance(jb, p.Joined)
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def reader() -> None:
            while True:
                msg = await b.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                m = p.decode_server(msg.data)
                if isinstance(m, p.OfferFrom):
                    latencies.append(time.perf_counter() - float(m.sdp.split()[1]))

        task = asyncio.create_task(reader())
        payload = "x" * 160
        while time.perf_counter() < stop:
            await a.send_str(json.dumps({"type": "offer", "to": jb.peer_id,
                                         "sdp": f"v=0 {time.perf_counter():.9f} {payload}"}))
            await asyncio.sleep(1 / rate)
        await asyncio.sleep(0.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await a.close()
        await b.close()
        return latencies


async def _join(ws: aiohttp.ClientWebSocketResponse, room_id: str, user: str,
                role: str = "participant") -> None:
    await ws.send_str(json.dumps({"type": "join", "token": join_token(room_id, user, role)}))
    while True:
        match p.decode_server((await ws.receive(10)).data):
            case p.Joined():
                return
            case p.Error() as error:
                raise RuntimeError(f"{user} was refused: {error.code}")


async def failover(redis_url: str, trials: int, dead_after_s: float,
                   reap_interval_s: float) -> list[float]:
    """Per trial: seconds from ``kill -9`` of the worker holding bob and carol until the host,
    on the other worker, has been told ``peer-left`` for both."""
    env = {**ENV, "CONNVO_RTC_REDIS_DEAD_AFTER_S": str(dead_after_s),
           "CONNVO_RTC_REDIS_REAP_INTERVAL_S": str(reap_interval_s),
           "CONNVO_RTC_REDIS_HEARTBEAT_S": str(min(RedisSettings.heartbeat_s, dead_after_s / 4))}
    took: list[float] = []
    for _ in range(trials):
        w1, w2 = (HubProcess(free_port(), redis_url, env=env) for _ in range(2))
        try:
            for w in (w1, w2):
                w.start()
            await asyncio.gather(w1.wait_ready(), w2.wait_ready())
            _, room_id = await start_meeting(w1.base_url, invite=("bob", "carol"))
            async with aiohttp.ClientSession() as session:
                host = await session.ws_connect(w1.ws_url)
                await _join(host, room_id, "host", "host")
                # bob and carol stay connected until the kill (a closed socket is a drop).
                held = [await session.ws_connect(w2.ws_url) for _ in range(2)]
                for ws, user in zip(held, ("bob", "carol"), strict=True):
                    await _join(ws, room_id, user)
                killed = time.perf_counter()
                w2.kill(signal.SIGKILL)
                left = 0
                while left < 2:
                    msg = await host.receive(dead_after_s + reap_interval_s + 30)
                    left += isinstance(p.decode_server(msg.data), p.PeerLeft)
                took.append(time.perf_counter() - killed)
        finally:
            w1.cleanup()
            w2.cleanup()
    return took


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with run_redis() as redis:
        for name, url, count in (("memory, 1 worker", None, 1), ("Redis, 1 worker", redis.url, 1),
                                 ("Redis, 2 workers", redis.url, 2)):
            async with hubs(url, count) as workers:
                cpu0 = resource.getrusage(resource.RUSAGE_SELF)
                lat, rate, (session, sockets) = await join_storm(workers, args.rooms,
                                                                 args.concurrency)
                cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                for ws, _ in sockets:
                    await ws.close()
                await session.close()
                row: dict[str, Any] = {
                    "joins": len(lat), "join_p50_ms": pct(lat, 50) * 1e3,
                    "join_p99_ms": pct(lat, 99) * 1e3, "joins_per_s": rate,
                    "generator_cpu_s": (cpu1.ru_utime + cpu1.ru_stime)
                    - (cpu0.ru_utime + cpu0.ru_stime),
                }
                same = await relay_latency(workers[0].ws_url, workers[0].ws_url,
                                           args.relay_seconds, args.relay_rate)
                row["relay_same_p50_ms"] = pct(same, 50) * 1e3
                row["relay_same_p99_ms"] = pct(same, 99) * 1e3
                if count == 2:
                    cross = await relay_latency(workers[0].ws_url, workers[1].ws_url,
                                                args.relay_seconds, args.relay_rate)
                    row["relay_cross_p50_ms"] = pct(cross, 50) * 1e3
                    row["relay_cross_p99_ms"] = pct(cross, 99) * 1e3
                results[name] = row
        if args.failover:
            took = await failover(redis.url, args.failover, args.dead_after, args.reap_interval)
            results["failover"] = {"trials": len(took), "peer_left_after_s": took,
                                   "bound_s": args.dead_after + args.reap_interval}
    return results


def table(results: dict[str, Any]) -> str:
    cols = [("joins/s", "joins_per_s", "{:.0f}"), ("join p50 ms", "join_p50_ms", "{:.1f}"),
            ("join p99 ms", "join_p99_ms", "{:.1f}"),
            ("relay same-worker p50/p99 ms", ("relay_same_p50_ms", "relay_same_p99_ms"),
             "{:.2f} / {:.2f}"),
            ("relay cross-worker p50/p99 ms", ("relay_cross_p50_ms", "relay_cross_p99_ms"),
             "{:.2f} / {:.2f}"),
            ("generator CPU s", "generator_cpu_s", "{:.1f}")]
    lines = ["| configuration | " + " | ".join(c[0] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, row in results.items():
        cells = []
        for _, key, fmt in cols:
            if isinstance(key, tuple):
                cells.append(fmt.format(*(row[k] for k in key)) if key[0] in row else "-")
            else:
                cells.append(fmt.format(row[key]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--relay-seconds", type=float, default=5.0)
    parser.add_argument("--relay-rate", type=float, default=200.0, help="offers per second")
    parser.add_argument("--failover", type=int, default=0, metavar="N",
                        help="kill -9 trials (0: none)")
    parser.add_argument("--dead-after", type=float, default=RedisSettings.dead_after_s,
                        help="redis.dead_after_s for --failover, s")
    parser.add_argument("--reap-interval", type=float, default=RedisSettings.reap_interval_s,
                        help="redis.reap_interval_s for --failover, s")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    fail = results.pop("failover", None)
    print(f"join storm: {args.rooms} rooms x 4 joins, {args.concurrency} in flight; relay: "
          f"{args.relay_rate:g} offers/s for {args.relay_seconds:g} s; machine: "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(table(results))
    if fail is not None:
        took = fail["peer_left_after_s"]
        print(f"kill -9 of a worker -> peer-left on the other ({fail['trials']} trials): "
              f"median {statistics.median(took):.2f} s, max {max(took):.2f} s; bound "
              f"dead_after_s + reap_interval_s = {fail['bound_s']:g} s")
        results["failover"] = fail
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
