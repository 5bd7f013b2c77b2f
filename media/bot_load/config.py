"""Configuration of a load test: frozen dataclasses of plain values, validated on creation.

Built once from the command line (:mod:`media.bot_load.cli`) or directly by a benchmark or a
test; nothing in :mod:`media.bot_load` reads the hub's settings.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..bots import PROFILES, BotProfile

#: A mesh room holds at most this many peers (DESIGN "Capacity").
MAX_PEERS_PER_ROOM = 4


@dataclass(frozen=True)
class Thresholds:
    """Pass/fail limits; ``None`` means "not checked". A run that misses any limit given here
    exits non-zero (see :mod:`media.bot_load.thresholds`)."""

    min_delivery_pct: float | None = None
    """Media delivery (packets received / expected over the window) must be at least this, %."""
    max_loss_pct: float | None = None
    """RTP packet loss seen by the receivers must be at most this, %."""
    max_errors: int | None = None
    """Total errors counted by the bots (every code) must be at most this."""
    max_failed_bots: int | None = None
    """Bots that ended with an error (or never joined) must be at most this."""
    max_join_p95_s: float | None = None
    """95th percentile of join latency (websocket connect + join), seconds."""
    max_connect_p95_s: float | None = None
    """95th percentile of time to connected (offer -> connected), seconds."""

    def __post_init__(self) -> None:
        for name in ("min_delivery_pct", "max_loss_pct"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 100:
                raise ValueError(f"{name} must be within 0..100, got {value}")
        for name in ("max_errors", "max_failed_bots", "max_join_p95_s", "max_connect_p95_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")


def http_base_for(ws_url: str) -> str:
    """The hub's HTTP base URL for its websocket URL: ``ws://h:p/ws`` -> ``http://h:p``."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"websocket URL must be ws:// or wss://, got {ws_url!r}")
    path = parts.path.removesuffix("/").removesuffix("/ws")
    return f"{scheme}://{parts.netloc}{path}"


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine's loopback (``localhost``, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LoadTestConfig:
    """One load-test run."""

    ws_url: str
    """Hub websocket URL the bots join, e.g. ``ws://127.0.0.1:8080/ws``."""
    api_url: str = ""
    """Hub HTTP base URL for the meeting API; empty derives it from :attr:`ws_url`."""
    user_token: str = field(default="", repr=False)
    """A user JWT (the credential of a meeting organizer): meetings and join tokens are made
    through the API with it."""
    secret: str = field(default="", repr=False)
    """The hub's HS256 auth secret: the organizer's user token and the bots' join tokens are
    minted locally (meetings are still created through the API). With neither credential the
    runner asks a dev-mode hub's ``/api/dev/login``."""
    rooms: int = 1
    """Meetings to create; each gets :attr:`peers_per_room` bots."""
    peers_per_room: int = MAX_PEERS_PER_ROOM
    """Bots per room, 2..4 (the mesh limit)."""
    ramp: float = 5.0
    """Joins per second across all bots (they join room after room)."""
    duration_s: float = 30.0
    """Length of the measurement window, seconds (delivery, loss, CPU are measured over it)."""
    settle_s: float = 5.0
    """Pause between the last join and the window's start, for connections to come up."""
    video: bool = False
    """Bots also send synthetic VP8 video (costly: one encoder per connection)."""
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Bot processes; bots are dealt over them round-robin. Default: one per core."""
    profile: BotProfile = "cheap"
    """``cheap`` bots (pre-encoded Opus, no decoding) or ``naive`` ones (see :mod:`media.bots`)."""
    audio_path: str | None = None
    """Audio file the bots send (looped); ``None`` sends a tone."""
    pin_host_addresses: tuple[str, ...] | None = None
    """Pin the bots' ICE host candidates to these addresses; ``None`` lets aioice discover them.
    The CLI pins ``127.0.0.1`` when the hub URL is a loopback one."""
    relay: bool = False
    """Force TURN-relayed candidates (tests the deployment's TURN, not just the hub)."""
    ice_timeout_s: float = 15.0
    """Offer -> ``connected`` deadline per connection, seconds."""
    api_concurrency: int = 8
    """API requests in flight while creating meetings."""
    progress_interval_s: float = 0.5
    """How often bot processes report their counts (and the timeline gets a point), seconds."""
    worker_log_level: str = "WARNING"
    """Log level inside the bot processes (their log goes to this process' stderr)."""
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        http_base_for(self.ws_url)  # validates the scheme
        if self.api_url and not self.api_url.startswith(("http://", "https://")):
            raise ValueError(f"api_url must be http:// or https://, got {self.api_url!r}")
        if self.rooms < 1:
            raise ValueError("rooms must be at least 1")
        if not 2 <= self.peers_per_room <= MAX_PEERS_PER_ROOM:
            raise ValueError(f"peers_per_room must be within 2..{MAX_PEERS_PER_ROOM}")
        if self.ramp <= 0 or self.duration_s <= 0 or self.settle_s < 0:
            raise ValueError("ramp and duration must be positive, settle not negative")
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
        if self.ice_timeout_s <= 0 or self.api_concurrency < 1 or self.progress_interval_s <= 0:
            raise ValueError("ice_timeout_s, api_concurrency, progress_interval_s out of range")
        for address in self.pin_host_addresses or ():
            ipaddress.ip_address(address)

    @property
    def api_base(self) -> str:
        """HTTP base URL of the hub (``api_url`` or derived from ``ws_url``), no trailing /."""
        return (self.api_url or http_base_for(self.ws_url)).rstrip("/")

    @property
    def bots(self) -> int:
        return self.rooms * self.peers_per_room

    @property
    def ramp_s(self) -> float:
        """From the first join to the last, seconds."""
        return (self.bots - 1) / self.ramp

    @property
    def window_start_s(self) -> float:
        """Window start, seconds after the first join."""
        return self.ramp_s + self.settle_s

    @property
    def window_end_s(self) -> float:
        return self.window_start_s + self.duration_s
