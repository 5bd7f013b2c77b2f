"""The schedule of a load test and the messages between the runner and its bot processes.

The runner deals bots over ``processes`` worker processes round-robin (so a room's bots sit in
different processes, as different machines would) and gives each bot a join offset: bot ``k``
(room after room) joins ``k / ramp`` seconds after the start. Every bot measures over the same
window, from ``ramp_s + settle_s`` to that plus ``duration_s``.

Wire protocol, one JSON object per line (``msgspec``):

- runner -> worker on stdin: a :class:`WorkerPlan`, then :class:`Start` once every worker is
  ready; closing stdin early means "stop now" (so an interrupted or dead runner never leaves
  bots behind).
- worker -> runner on stdout: :class:`Ready`, then :class:`Progress` every
  ``progress_interval_s``, finally one :class:`Result`. Logs go to stderr.
"""

from __future__ import annotations

import msgspec

from ..bots import BotProfile, BotResult
from .config import LoadTestConfig
from .provision import RoomPlan


class BotPlan(msgspec.Struct, frozen=True, kw_only=True):
    """One bot: which room, with which token, when."""

    index: int
    """Position in the join order (0-based, room after room)."""
    room_id: str
    token: str
    name: str
    expected_peers: int
    """Other bots in its room: the remote peers it should hear."""
    join_offset_s: float
    """Seconds after the start at which it connects."""


class WorkerPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one bot process needs."""

    index: int
    ws_url: str
    profile: BotProfile
    video: bool
    audio_path: str | None
    pin_host_addresses: tuple[str, ...] | None
    relay: bool
    ice_timeout_s: float
    window_start_s: float
    window_end_s: float
    progress_interval_s: float
    log_level: str
    bots: tuple[BotPlan, ...]


class Start(msgspec.Struct, frozen=True, tag="start"):
    """Go: ``t0`` is the start on the wall clock (``time.time()``; one machine, one clock)."""

    t0: float


class Ready(msgspec.Struct, frozen=True, tag="ready"):
    """The worker has imported everything and made its bots."""

    pid: int


class Progress(msgspec.Struct, frozen=True, tag="progress"):
    """Counts of one worker's bots right now."""

    joined: int
    """Bots in the room (joined, not failed, not yet gone)."""
    connected: int
    """Joined bots connected to every other bot of their room."""
    failed: int
    connections: int
    """Connected peer connections seen from this worker's side (each pair counts twice
    across the whole run: once per end)."""
    cpu_s: float
    """CPU seconds (user + system, all threads) this process has used so far."""
    rss_bytes: int
    at: float
    """When these counts were taken (``time.time()``)."""
    loop_lag_ms: float
    """Worst event-loop lag since the previous report: how late a 50 ms timer fired. Large
    values mean this process, not the hub, is the bottleneck."""


class ProcessUsage(msgspec.Struct, frozen=True, kw_only=True):
    """CPU and memory of one bot process."""

    pid: int
    cpu_s: float
    """CPU seconds over the whole process life."""
    window_cpu_s: float
    """CPU seconds inside the measurement window."""
    window_s: float
    """The window as this process measured it, seconds (0 if it never opened)."""
    rss_bytes: int
    """Resident memory at the window's end (or at exit), bytes."""
    rss_peak_bytes: int
    max_loop_lag_ms: float
    """Worst event-loop lag over the whole run, milliseconds."""
    window_loop_lag_ms: float
    """Worst event-loop lag inside the measurement window, milliseconds."""


class Result(msgspec.Struct, frozen=True, tag="result"):
    """The worker's final report."""

    bots: list[BotResult]
    usage: ProcessUsage
    interrupted: bool = False


WorkerMessage = Ready | Progress | Result
RunnerMessage = WorkerPlan | Start

#: Decoders for both directions (a ``WorkerPlan`` is untagged: it is always the first line).
worker_message_decoder = msgspec.json.Decoder(WorkerMessage)
plan_decoder = msgspec.json.Decoder(WorkerPlan)
start_decoder = msgspec.json.Decoder(Start)


def bot_name(room: int, seat: int) -> str:
    return f"bot-{room}.{seat}"


def build_worker_plans(config: LoadTestConfig, rooms: list[RoomPlan]) -> list[WorkerPlan]:
    """Deal the bots of ``rooms`` over ``config.processes`` workers (empty workers dropped)."""
    buckets: list[list[BotPlan]] = [[] for _ in range(config.processes)]
    index = 0
    for room_index, room in enumerate(rooms):
        for seat, token in enumerate(room.tokens):
            buckets[index % config.processes].append(BotPlan(
                index=index, room_id=room.room_id, token=token,
                name=bot_name(room_index, seat), expected_peers=len(room.tokens) - 1,
                join_offset_s=round(index / config.ramp, 4),
            ))
            index += 1
    return [
        WorkerPlan(
            index=i, ws_url=config.ws_url, profile=config.profile, video=config.video,
            audio_path=config.audio_path, pin_host_addresses=config.pin_host_addresses,
            relay=config.relay, ice_timeout_s=config.ice_timeout_s,
            window_start_s=config.window_start_s, window_end_s=config.window_end_s,
            progress_interval_s=config.progress_interval_s, log_level=config.worker_log_level,
            bots=tuple(bots),
        )
        for i, bots in enumerate(b for b in buckets if b)
    ]
