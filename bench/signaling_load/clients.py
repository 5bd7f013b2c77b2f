"""The load generator of ``bench/signaling.py``: worker processes full of websocket clients.

Each generator process runs one event loop (uvloop when installed) holding its share of the
clients and is driven by the orchestrator over a ``multiprocessing`` pipe (``generator.Generator``
is the orchestrator's handle). Clients come in groups of four: a hub room, or, for PeerJS
(which has no rooms), four ids that only message each other, so both servers see the same
traffic pattern. All four clients of a group live in the same process, which therefore learns
every member's peer id from the join replies without asking the server.

A relayed message carries a 200-byte payload (the hub's ``sdp`` string, PeerJS's
``payload.sdp``) that starts with ``B``, a flag (``s``: sender and receiver on the same hub
worker, ``x``: across workers) and the send time (``time.monotonic_ns()``, one clock for every
process of the machine), so the receiving process measures relay latency without a lookup.

Sends are paced open-loop at a fixed rate per process (every ~2 ms the process sends what is
due), so a slow server shows up as latency and missing deliveries, not as a lower offered rate.
When the generator itself cannot keep up, its sent count falls short of the offered one; the
orchestrator reports that along with the generator's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
from array import array
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from aiohttp import WSMsgType

PAYLOAD_BYTES = 200
#: ``B`` + flag + 19 digits of monotonic ns, then padding up to :data:`PAYLOAD_BYTES`.
_PAD = b"x" * (PAYLOAD_BYTES - 21)
_MARK = b'"sdp":"B'
_TICK_S = 0.002
#: Sends per loop turn before yielding to the readers.
_CHUNK = 256
#: A process starved this long skips the missed sends rather than bursting them.
_MAX_LAG_S = 0.05
#: PeerJS clients send ``HEARTBEAT`` this often; the hub pings its clients every 20 s too.
HEARTBEAT_S = 20.0


@dataclass(frozen=True)
class ClientSpec:
    """One client to connect: where, how it joins, and which server worker it is on."""

    url: str
    join: str | None  # hub: the ``join`` frame; PeerJS: None (the id is in the URL)
    worker: int = 0
    peer_id: str = ""  # PeerJS: the id it registers; hub: learned from ``joined``


@dataclass(eq=False)
class _Client:
    spec: ClientSpec
    group: int
    ws: Any = None
    peer_id: str = ""
    reader: asyncio.Task[None] | None = None
    #: mode -> encoded frame prefixes, one per allowed target (repeated to weight them).
    targets: dict[str, list[bytes]] = field(default_factory=dict)
    closing: bool = False


class _Process:
    """The state of one generator process."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "hub" or "peerjs"
        self.session: aiohttp.ClientSession | None = None
        self.groups: dict[int, list[_Client]] = {}
        self.window = (0, 0)  # receive-time window (monotonic ns) that phases count
        self.lat_same = array("q")
        self.lat_cross = array("q")
        self.received = 0
        self.server_errors = 0
        self.error_codes: dict[str, int] = {}  # error code (hub) or message type (PeerJS)
        self.first_error = ""
        self.dropped = 0  # sockets the server closed on us
        self.tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ connecting

    async def connect(self, groups: dict[int, list[ClientSpec]], concurrency: int,
                      timeout: float) -> dict[str, Any]:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True))
        sem = asyncio.Semaphore(concurrency)
        latencies = array("q")
        errors: list[str] = []

        async def one(client: _Client) -> None:
            async with sem:
                try:
                    latencies.append(await asyncio.wait_for(self._join(client), timeout))
                except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    if client.ws is not None:
                        with contextlib.suppress(Exception):
                            await client.ws.close()
                    client.ws = None

        async def group(members: list[_Client]) -> None:
            # One member after the other: with concurrent joins into one room, a Redis-backed
            # hub worker can keep a stale roster (see docs/benchmarks.md), and the benchmark
            # is about relaying, not about that race.
            for client in members:
                await one(client)

        new: dict[int, list[_Client]] = {
            g: [_Client(spec, g) for spec in specs] for g, specs in groups.items()}
        started = time.monotonic()
        await asyncio.gather(*(group(members) for members in new.values()))
        elapsed = time.monotonic() - started
        for g, members in new.items():
            if any(c.ws is None for c in members):  # a broken group does not send
                for c in members:
                    if c.ws is not None:
                        c.closing = True
                        with contextlib.suppress(Exception):
                            await c.ws.close()
                continue
            self._plan(members)
            for c in members:
                c.reader = asyncio.create_task(self._read(c))
            self.groups[g] = members
        if self.kind == "peerjs" and not any(t.get_name() == "heartbeat" for t in self.tasks):
            self._spawn(self._heartbeats(), "heartbeat")
        return {"latencies": latencies.tobytes(), "errors": errors[:5],
                "failed": len(errors), "elapsed": elapsed}

    async def _join(self, client: _Client) -> int:
        assert self.session is not None
        spec = client.spec
        t0 = time.monotonic_ns()
        ws = await self.session.ws_connect(spec.url, autoping=True, heartbeat=None, compress=0,
                                           decode_text=False)
        client.ws = ws
        if spec.join is not None:
            await ws.send_str(spec.join)
        msg = await ws.receive()
        if msg.type != WSMsgType.TEXT:
            raise RuntimeError(f"closed before join: {msg.type.name} {msg.data!r} {msg.extra!r}")
        reply = json.loads(msg.data)
        if spec.join is not None:
            if reply.get("type") != "joined":
                raise RuntimeError(f"join refused: {reply}")
            client.peer_id = reply["peerId"]
        else:
            if reply.get("type") != "OPEN":
                raise RuntimeError(f"PeerJS refused: {reply}")
            client.peer_id = spec.peer_id
        return time.monotonic_ns() - t0

    def _plan(self, members: list[_Client]) -> None:
        """Every member's frame prefixes per traffic mode."""
        for c in members:
            others = [o for o in members if o is not c]
            same = [o for o in others if o.spec.worker == c.spec.worker]
            cross = [o for o in others if o.spec.worker != c.spec.worker]
            # "mixed": half the messages to a same-worker peer, half across (if both exist).
            mixed = same * max(1, len(cross)) + cross * max(1, len(same)) if same and cross \
                else others
            for mode, targets in (("random", others), ("local", same), ("cross", cross),
                                  ("mixed", mixed)):
                c.targets[mode] = [self._prefix(o.peer_id, o.spec.worker == c.spec.worker)
                                   for o in targets]

    def _prefix(self, to: str, same: bool) -> bytes:
        flag = "s" if same else "x"
        if self.kind == "peerjs":
            return f'{{"type":"OFFER","dst":"{to}","payload":{{"sdp":"B{flag}'.encode()
        return f'{{"type":"offer","to":"{to}","sdp":"B{flag}'.encode()

    @property
    def _suffix(self) -> bytes:
        return _PAD + (b'"}}' if self.kind == "peerjs" else b'"}')

    # ------------------------------------------------------------------ receiving

    async def _read(self, client: _Client) -> None:
        receive = client.ws.receive
        text = WSMsgType.TEXT
        clock = time.monotonic_ns
        while True:
            msg = await receive()
            if msg.type is not text:
                if not client.closing:
                    self.dropped += 1
                    if not self.first_error:
                        self.first_error = f"server closed a socket: {msg.type.name} {msg.data}"
                return
            data: bytes = msg.data
            i = data.find(_MARK)
            if i < 0:
                if b'rror"' in data or b'"EXPIRE"' in data or b'"LEAVE"' in data:
                    self._server_error(data)
                continue
            now = clock()
            self.received += 1
            w0, w1 = self.window
            if w0 <= now < w1:
                lat = now - int(data[i + 9:i + 28])
                if data[i + 8] == 115:  # b"s"
                    self.lat_same.append(lat)
                else:
                    self.lat_cross.append(lat)

    def _server_error(self, data: bytes) -> None:
        self.server_errors += 1
        try:
            frame = json.loads(data)
            code = str(frame.get("code") or frame.get("type"))
        except ValueError:
            code = "?"
        self.error_codes[code] = self.error_codes.get(code, 0) + 1
        if not self.first_error:
            self.first_error = data[:300].decode(errors="replace")

    async def _heartbeats(self) -> None:
        """PeerJS needs a ``HEARTBEAT`` from each client; spread them evenly over HEARTBEAT_S."""
        frame = b'{"type":"HEARTBEAT"}'
        i = 0
        while True:
            clients = [c for members in self.groups.values() for c in members]
            share = max(1, len(clients) // int(HEARTBEAT_S))
            for c in clients[i:i + share]:
                if not c.closing and not c.ws.closed:
                    with contextlib.suppress(Exception):
                        await c.ws.send_frame(frame, WSMsgType.TEXT)
            i = i + share if i + share < len(clients) else 0
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ phases

    async def phase(self, rate: float, start_ns: int, w0: int, w1: int, mode: str,
                    drain_s: float) -> dict[str, Any]:
        """Send ``rate`` msg/s from ``start_ns`` to ``w1``; count what arrives in [w0, w1)."""
        self.lat_same = array("q")
        self.lat_cross = array("q")
        self.window = (w0, w1)
        errors0, dropped0 = self.server_errors, self.dropped
        self.error_codes, self.first_error = {}, ""
        senders = [(c.ws, c.targets[mode]) for members in self.groups.values()
                   for c in members if c.targets.get(mode)]
        cpu: dict[str, float] = {}
        meter = asyncio.create_task(self._cpu_window(w0, w1, cpu))
        sent, in_window, skipped = await self._send(senders, rate, start_ns, w0, w1)
        await meter
        # Let what is in flight arrive; stop early once nothing more comes (bounded).
        deadline = time.monotonic() + drain_s
        last = -1
        while time.monotonic() < deadline and self.received != last:
            last = self.received
            await asyncio.sleep(0.2)
        return {"sent": sent, "sent_in_window": in_window, "skipped": skipped,
                "lat_same": self.lat_same.tobytes(), "lat_cross": self.lat_cross.tobytes(),
                "cpu_s": cpu.get("cpu", 0.0), "senders": len(senders),
                "server_errors": self.server_errors - errors0,
                "dropped": self.dropped - dropped0, "first_error": self.first_error,
                "error_codes": self.error_codes}

    async def _send(self, senders: list[tuple[Any, list[bytes]]], rate: float, start_ns: int,
                    w0: int, w1: int) -> tuple[int, int, int]:
        """Paced sends; returns (sent, sent in [w0, w1), skipped). A process that falls more
        than :data:`_MAX_LAG_S` behind (starved of CPU) skips the backlog instead of bursting
        it, so the offered rate is never exceeded and the skips show the generator stalled."""
        if not senders or rate <= 0:
            await _sleep_until(w1)
            return 0, 0, 0
        suffix = self._suffix
        clock = time.monotonic_ns
        choice = random.choice
        text = WSMsgType.TEXT
        await _sleep_until(start_ns)
        done = sent = in_window = skipped = 0
        per_ns = rate / 1e9
        max_due = max(8, int(rate * _MAX_LAG_S))
        while True:
            now = clock()
            if now >= w1:
                break
            due = int((now - start_ns) * per_ns) - done
            if due > max_due:
                skipped += due - max_due
                done += due - max_due
                due = max_due
            due = min(due, _CHUNK)
            done += due
            for _ in range(due):
                ws, prefixes = choice(senders)
                ts = clock()
                try:
                    await ws.send_frame(choice(prefixes) + b"%019d" % ts + suffix, text)
                except (ConnectionResetError, RuntimeError):
                    continue  # a dropped socket; counted by its reader
                sent += 1
                if w0 <= ts < w1:
                    in_window += 1
            if due < _CHUNK:
                await asyncio.sleep(_TICK_S)
            else:
                await asyncio.sleep(0)
        return sent, in_window, skipped

    @staticmethod
    async def _cpu_window(w0: int, w1: int, out: dict[str, float]) -> None:
        await _sleep_until(w0)
        c0 = time.process_time()
        await _sleep_until(w1)
        out["cpu"] = time.process_time() - c0

    # ------------------------------------------------------------------ closing

    async def close_groups(self, groups: list[int] | None) -> int:
        chosen = list(self.groups) if groups is None else [g for g in groups if g in self.groups]
        clients = [c for g in chosen for c in self.groups.pop(g)]
        # Few at a time: thousands of simultaneous leaves are a storm the benchmark does not
        # measure (a Redis-backed hub times out on its store under it, see docs/benchmarks.md).
        sem = asyncio.Semaphore(8)

        async def one(c: _Client) -> None:
            c.closing = True
            async with sem:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.ws.close(), 5.0)
            if c.reader is not None:
                c.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await c.reader

        await asyncio.gather(*(one(c) for c in clients))
        return len(clients)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.close_groups(None)
        if self.session is not None:
            await self.session.close()
            self.session = None


async def _sleep_until(ns: int) -> None:
    delay = (ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


# ---------------------------------------------------------------------- process side


async def _serve(conn: Connection, kind: str) -> None:
    loop = asyncio.get_running_loop()
    state = _Process(kind)
    inbox: asyncio.Queue[Any] = asyncio.Queue(16)  # one command at a time, in practice

    def pump() -> None:  # blocking reads in a thread: the pipe stays a blocking socket
        while True:
            try:
                item = conn.recv()
            except (EOFError, OSError):
                item = ("stop", {})
            loop.call_soon_threadsafe(inbox.put_nowait, item)
            if item[0] == "stop":
                return

    threading.Thread(target=pump, name="commands", daemon=True).start()
    parent = os.getppid()

    async def orphan_watch() -> None:  # never outlive the orchestrator
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        os._exit(1)

    state._spawn(orphan_watch(), "orphan-watch")
    handlers: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {
        "connect": state.connect, "phase": state.phase, "close": state.close_groups}
    try:
        while True:
            command, kwargs = await inbox.get()
            if command == "stop":
                break
            try:
                reply: Any = ("ok", await handlers[command](**kwargs))
            except Exception as exc:  # noqa: BLE001 - reported to the orchestrator, not lost
                reply = ("error", f"{type(exc).__name__}: {exc}")
            conn.send(reply)
    finally:
        await state.aclose()
        with contextlib.suppress(OSError):
            conn.send(("ok", "stopped"))


def process_main(conn: Connection, kind: str) -> None:
    """Entry point of a generator process (started with the ``spawn`` method)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator handles Ctrl-C and stops us
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(conn, kind))
    else:
        uvloop.run(_serve(conn, kind))
