"""Hub settings: one frozen dataclass tree, loaded once in ``main()``.

Precedence, lowest first: defaults in this file, ``--config FILE`` (TOML, one table per section),
``CONNVO_RTC_<SECTION>_<FIELD>`` environment variables, then command-line flags. Every field is
validated at load; a bad value raises :class:`ConfigError`, which the CLI prints before exiting 1.
``config/connvo-rtc.toml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from turn.errors import TurnConfigError
from turn.ice import IceConfig

from .protocol import MESH_LIMIT
from .s3 import S3Config
from .service_settings import (
    AgentSettings,
    RecordingSettings,
    WebhookSettings,
    agent_problems,
    is_loopback,
    recording_problems,
    s3_config,
    webhook_problems,
)

__all__ = ["AgentSettings", "ConfigError", "RecordingSettings", "Settings", "WebhookSettings",
           "as_dict", "is_loopback", "load_settings", "web_origin"]


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range."""


def web_origin(text: str) -> str | None:
    """``text`` as a browser writes it in an ``Origin`` header (``scheme://host[:port]``, lower
    case, no default port), or None when it is not an origin. ``null`` stays ``null``."""
    text = text.strip()
    if text.lower() == "null":
        return "null"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if (scheme not in ("http", "https") or not host or parts.path not in ("", "/")
            or parts.query or parts.fragment or parts.username is not None):
        return None
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8080
    """TCP port to listen on (0 picks a free one)."""
    public_url: str = ""
    """Base URL clients reach this deployment at (e.g. ``https://rtc.example.com``); used for
    ``wsUrl`` in join-token responses. Empty: derived from the request's Host header."""
    shutdown_timeout_s: float = 5.0
    """Seconds to wait for connections to close on shutdown before cancelling them."""
    demo: bool = True
    """Serve the demo page at ``/`` and the browser client under ``/static/``."""
    workers: int = 1
    """Hub worker processes sharing the port (SO_REUSEPORT); more than 1 needs ``redis.url``."""
    allowed_origins: tuple[str, ...] = ()
    """Origins (``https://app.example.com``) whose pages may open a websocket to ``/ws``; an
    upgrade from another origin gets HTTP 403. A request without ``Origin`` (not from a
    browser) is allowed. Empty: not checked."""
    dev_on_network: bool = False
    """Let dev mode (no auth secret: anyone can get a token) listen on a non-loopback address.
    Without it such a start is a configuration error."""


@dataclass(frozen=True)
class AuthSettings:
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """HS256 secrets: the first signs join tokens, all verify (rotation). Env
    ``CONNVO_RTC_AUTH_SECRET`` (comma-separated). Empty: dev mode with a random secret."""
    jwks: str = ""
    """RS256 user tokens: a JWKS file path or http(s) URL. Empty: RS256 not accepted."""
    user_audience: str = ""
    """Required ``aud`` of user tokens (empty: not checked)."""
    user_issuer: str = ""
    """Required ``iss`` of user tokens (empty: not checked)."""
    token_ttl_s: int = 3600
    """Lifetime of join tokens the hub mints, seconds."""
    max_token_ttl_s: int = 86_400
    """Longest lifetime a join token may have (minted or presented), seconds."""
    dev_login: bool = False
    """Allow ``POST /api/dev/login`` (set automatically in dev mode; never in production)."""


@dataclass(frozen=True)
class LimitSettings:
    max_frame_bytes: int = 65_536
    """Largest websocket frame accepted; larger ones close the socket with 1009."""
    max_fragments: int = 128
    """Frames one websocket message may come in (the first included); a message in more closes
    the socket with 1009 (too big to process). Browsers send every message in one frame."""
    messages_per_second: float = 50.0
    """Sustained websocket messages per second per connection. Every frame counts, before
    and after join: a message in fragments counts each, pings and pongs count too."""
    message_burst: int = 200
    """Messages a connection may send at once above the sustained rate (ICE trickle bursts)."""
    abuse_strikes: int = 20
    """Rejected frames (invalid or over the rate) before the socket is closed (4429 / 4400)."""
    join_timeout_s: float = 5.0
    """Seconds a new socket has to send ``join`` before it is closed with 4408."""
    max_connections: int = 10_000
    """Websocket connections one worker accepts; more are closed with 1013."""
    connection_headroom: int = 1_024
    """TCP connections one worker holds beyond ``max_connections``: HTTP (API, ``/healthz``,
    ``/metrics``, a proxy's kept-alive connections) and connections still sending their
    request head, so a worker full of websockets still answers ``/healthz``. At
    ``max_connections + connection_headroom`` the oldest connection still waiting for its head
    is cut for a new one; with none, the new one gets HTTP 503."""
    max_connections_per_address: int = 256
    """TCP connections one client address (an IPv6 /64) holds at once on one worker; more get
    HTTP 429 at accept. Sized for an office behind one NAT address: a few hundred people, each
    with a websocket and the odd HTTP request. 0: no cap."""
    per_address_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1")
    """Addresses or networks (``10.0.0.0/8``) not held to ``max_connections_per_address``: a
    reverse proxy or load balancer whose connections carry many clients. Loopback by default (a
    proxy, health checks or a load test on this machine)."""
    request_head_timeout_s: float = 5.0
    """Seconds a new TCP connection has to send its whole first request head (an HTTP request
    or the websocket upgrade); then it is closed (HTTP 408 if it sent part of one)."""
    keepalive_timeout_s: float = 75.0
    """Seconds a kept-alive HTTP connection may stay idle after a response, or take to send its
    next request head, before it is closed (above nginx's 60 s upstream keepalive)."""
    send_queue_frames: int = 256
    """Frames queued for one client; a client that lets it fill is disconnected (slow consumer)."""
    ping_after_s: float = 20.0
    """Seconds of silence after which the hub pings a client; a client still silent half as
    long again after the ping is dropped (its seat is kept for resume)."""
    liveness_sweep_s: float = 5.0
    """Seconds between liveness sweeps over every socket (one sweep pings and drops; this is
    the resolution of ``ping_after_s``)."""
    api_requests_per_second: float = 20.0
    """HTTP API requests per second per caller (burst 4x)."""
    max_body_bytes: int = 65_536
    """Largest HTTP API request body."""
    max_open_meetings_per_user: int = 50
    """Meetings one user may have open (scheduled or active) at once; ``createMeeting`` above it
    is refused with HTTP 409 ``meeting-quota`` until one ends (0: no limit)."""


@dataclass(frozen=True)
class RoomSettings:
    capacity: int = MESH_LIMIT
    """Non-tap peers per mesh room (at most 4)."""
    resume_grace_s: float = 20.0
    """Seconds a dropped peer keeps its seat and ``peerId`` waiting for ``resume``."""
    closing_grace_s: float = 5.0
    """Seconds the seat of a page that said ``leave {closing: true}`` (closed or reloaded) is
    kept for a reload to resume it (never longer than ``resume_grace_s``)."""
    empty_timeout_s: float = 300.0
    """Seconds an active room may stay empty before it ends."""
    chat_max_chars: int = 2_000
    """Longest chat message."""
    waiting_timeout_s: float = 600.0
    """Seconds a peer may wait in a waiting room (``waitingRoomEnabled``) for a host to let it
    in; then it is closed with 4408 ``waiting-timeout``."""
    max_waiting: int = 20
    """People who may wait in one room's waiting room at once; one more is closed with 4409
    ``waiting-room-full``."""
    ending_warning_s: float = 60.0
    """Seconds before a meeting's ``maxDurationMinutes`` run out at which everyone in the room
    gets ``room-ending {endsAt}``."""
    duration_minute_s: float = 60.0
    """Seconds in one minute of ``maxDurationMinutes``: 60. Tests and demos shorten it to see a
    meeting reach its deadline quickly; never change it in production."""


@dataclass(frozen=True)
class IceSettings:
    stun_urls: tuple[str, ...] = ()
    """STUN URLs handed to every peer (``stun:host:port``). Empty: none (no public defaults)."""
    turn_urls: tuple[str, ...] = ()
    """TURN URLs (``turn:host:3478?transport=udp``, ``turns:host:5349``) handed with credentials."""
    turn_host: str = ""
    """Host name or IP browsers reach coturn at; adds ``turn:HOST:turn_port`` over UDP and TCP."""
    turn_port: int = 3478
    """coturn's plain port (UDP and TCP) for URLs derived from ``turn_host``."""
    turns_port: int = 0
    """coturn's TLS port; when non-zero adds ``turns:HOST:PORT?transport=tcp``."""
    turn_secrets: tuple[str, ...] = field(default=(), repr=False)
    """coturn ``static-auth-secret`` values: the first signs, all are accepted by coturn."""
    turn_ttl_s: int = 3600
    """Lifetime of TURN credentials, seconds."""
    turn_max_ttl_s: int = 86_400
    """Longest TURN credential lifetime allowed."""


@dataclass(frozen=True)
class RedisSettings:
    url: str = ""
    """``redis://host:6379/0``, ``rediss://`` (TLS) or ``redis+cluster://host:port`` for a
    Cluster. Empty: in-memory state (one worker only)."""
    cluster: bool = False
    """Treat ``url`` as a Redis Cluster seed node (same as the ``redis+cluster://`` scheme)."""
    timeout_s: float = 2.0
    """Socket timeout for Redis calls: while Redis is unreachable, joins and API calls fail fast
    with ``unavailable`` (HTTP 503) instead of hanging."""
    key_ttl_s: int = 172_800
    """Room, meeting and presence keys expire this long after their last change."""
    heartbeat_s: float = 2.0
    """Seconds between worker heartbeats."""
    dead_after_s: float = 10.0
    """A worker whose heartbeat is this old is dead: its peers leave their rooms."""
    reap_interval_s: float = 2.5
    """Seconds between dead-worker reaper passes; worst case to ``peer-left`` after a worker dies
    is ``dead_after_s + reap_interval_s`` (12.5 s by default)."""
    bus_linger_ms: float = 8.0
    """Under load (frames crossed workers within the last ten lingers), a frame for a peer on
    another worker waits up to this long for others, so they cross Redis as one message: fewer
    round trips and wake-ups per frame. A quiet bus publishes at once. 0: never wait."""


@dataclass(frozen=True)
class TapSettings:
    enabled: bool = True
    """Run a transcription tap worker for this hub, in a child process it starts, restarts and
    stops (``serve --no-tap`` turns it off; standalone workers: ``connvo-rtc tap``). Jobs are
    queued either way."""
    recognizer: str = "pocketsphinx"
    """Speech recogniser back-end by name (see docs/transcription.md)."""
    processes: int = 1
    """Recogniser processes (each decodes on its own core, off the event loop)."""
    reclaim_after_s: float = 10.0
    """A tap job whose worker stopped renewing it this long is given to another worker."""
    max_backlog_s: float = 15.0
    """Seconds of speech one recogniser process may fall behind before new segments are
    dropped (the room is told); at a fifth of it partials stop until it catches up."""


@dataclass(frozen=True)
class Settings:
    """Everything the hub reads at start."""

    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    rooms: RoomSettings = RoomSettings()
    ice: IceSettings = IceSettings()
    redis: RedisSettings = RedisSettings()
    tap: TapSettings = TapSettings()
    recording: RecordingSettings = RecordingSettings()  # noqa: RUF009 - frozen
    webhooks: WebhookSettings = WebhookSettings()  # noqa: RUF009 - frozen
    agent: AgentSettings = AgentSettings()  # noqa: RUF009 - frozen

    @property
    def dev_mode(self) -> bool:
        """True when no auth secret was configured (a random one is generated at start)."""
        return self.auth.dev_login

    def validate(self) -> Settings:
        """Check ranges; return self or raise :class:`ConfigError`."""
        checks: list[tuple[bool, str]] = [
            (0 <= self.server.port <= 65535, "server.port must be 0..65535"),
            (1 <= self.server.workers <= 64, "server.workers must be 1..64"),
            (self.server.port != 0 or self.server.workers == 1,
             "server.port 0 (any free port) needs server.workers = 1: workers share one port"),
            (not self.dev_mode or self.server.dev_on_network or is_loopback(self.server.host),
             (f"dev mode (no auth secret: anyone can get a token) listens on loopback only, "
              f"not on {self.server.host or 'every address'}: set an auth secret "
              "(CONNVO_RTC_AUTH_SECRET) or pass --dev-on-network (server.dev_on_network)")),
            (self.server.workers == 1 or bool(self.redis.url),
             "server.workers > 1 needs redis.url: workers share state through Redis"),
            (self.redis.timeout_s > 0, "redis.timeout_s must be > 0"),
            (self.redis.key_ttl_s >= 3600, "redis.key_ttl_s must be >= 3600"),
            (0 < self.redis.heartbeat_s < self.redis.dead_after_s,
             "redis.heartbeat_s must be > 0 and < redis.dead_after_s"),
            (self.redis.reap_interval_s > 0, "redis.reap_interval_s must be > 0"),
            (0 <= self.redis.bus_linger_ms <= 100, "redis.bus_linger_ms must be 0..100"),
            (1 <= self.tap.processes <= 64, "tap.processes must be 1..64"),
            (2 <= self.tap.reclaim_after_s <= 15, "tap.reclaim_after_s must be 2..15"),
            (0.5 <= self.tap.max_backlog_s <= 120, "tap.max_backlog_s must be 0.5..120"),
            (not self.redis.url or self.redis.url.startswith(
                ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://", "unix://")),
             "redis.url must be redis://, rediss://, redis+cluster:// or unix://"),
            (self.server.shutdown_timeout_s > 0, "server.shutdown_timeout_s must be > 0"),
            (1 <= self.rooms.capacity <= MESH_LIMIT, f"rooms.capacity must be 1..{MESH_LIMIT}"),
            (self.rooms.resume_grace_s >= 0, "rooms.resume_grace_s must be >= 0"),
            (self.rooms.closing_grace_s >= 0, "rooms.closing_grace_s must be >= 0"),
            (self.rooms.empty_timeout_s > 0, "rooms.empty_timeout_s must be > 0"),
            (1 <= self.rooms.chat_max_chars <= 4000, "rooms.chat_max_chars must be 1..4000"),
            (self.rooms.waiting_timeout_s > 0, "rooms.waiting_timeout_s must be > 0"),
            (1 <= self.rooms.max_waiting <= 1000, "rooms.max_waiting must be 1..1000"),
            (self.rooms.ending_warning_s >= 0, "rooms.ending_warning_s must be >= 0"),
            (0 < self.rooms.duration_minute_s <= 60, "rooms.duration_minute_s must be 0..60"),
            (1024 <= self.limits.max_frame_bytes <= 4 << 20, "limits.max_frame_bytes 1 KiB..4 MiB"),
            (1 <= self.limits.max_fragments <= 4096, "limits.max_fragments must be 1..4096"),
            (self.limits.messages_per_second > 0, "limits.messages_per_second must be > 0"),
            (self.limits.message_burst >= 1, "limits.message_burst must be >= 1"),
            (self.limits.abuse_strikes >= 1, "limits.abuse_strikes must be >= 1"),
            (self.limits.join_timeout_s > 0, "limits.join_timeout_s must be > 0"),
            (self.limits.max_connections >= 1, "limits.max_connections must be >= 1"),
            (self.limits.connection_headroom >= 1, "limits.connection_headroom must be >= 1"),
            (self.limits.max_connections_per_address >= 0,
             "limits.max_connections_per_address must be >= 0 (0: no cap)"),
            (0 < self.limits.request_head_timeout_s <= 300,
             "limits.request_head_timeout_s must be > 0 and <= 300"),
            (self.limits.keepalive_timeout_s > 0, "limits.keepalive_timeout_s must be > 0"),
            (self.limits.send_queue_frames >= 8, "limits.send_queue_frames must be >= 8"),
            (0 < self.limits.liveness_sweep_s <= self.limits.ping_after_s,
             "limits.liveness_sweep_s must be > 0 and <= limits.ping_after_s"),
            (self.limits.api_requests_per_second > 0, "limits.api_requests_per_second > 0"),
            (self.limits.max_body_bytes >= 1024, "limits.max_body_bytes must be >= 1024"),
            (self.limits.max_open_meetings_per_user >= 0,
             "limits.max_open_meetings_per_user must be >= 0 (0: no limit)"),
            (60 <= self.auth.token_ttl_s <= self.auth.max_token_ttl_s,
             "auth.token_ttl_s must be 60..auth.max_token_ttl_s"),
            (len(self.auth.secrets) > 0, "auth.secrets must not be empty"),
            (all(len(s) >= 32 for s in self.auth.secrets), "auth secrets must be >= 32 characters"),
            (60 <= self.ice.turn_ttl_s <= self.ice.turn_max_ttl_s,
             "ice.turn_ttl_s must be 60..ice.turn_max_ttl_s"),
            (not (self.ice.turn_urls or self.ice.turn_host) or bool(self.ice.turn_secrets),
             "ice.turn_urls / ice.turn_host need ice.turn_secrets"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for net in self.limits.per_address_exempt:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"limits.per_address_exempt: {net!r} is not an address or "
                                  "network") from None
        for origin in self.server.allowed_origins:
            if web_origin(origin) is None:
                raise ConfigError(f"server.allowed_origins: {origin!r} is not an origin "
                                  "(scheme://host[:port], e.g. https://app.example.com)")
        for url in self.ice.stun_urls:
            if not url.startswith(("stun:", "stuns:")):
                raise ConfigError(f"ice.stun_urls: {url!r} is not a stun: URL")
        for url in self.ice.turn_urls:
            if not url.startswith(("turn:", "turns:")):
                raise ConfigError(f"ice.turn_urls: {url!r} is not a turn: URL")
        self.ice_config()  # raises ConfigError on a bad TURN/STUN setup
        for problems in (recording_problems(self.recording), webhook_problems(self.webhooks),
                         agent_problems(self.agent)):
            if problems:
                raise ConfigError(problems[0])
        return self

    def s3_config(self) -> S3Config | None:
        """The bucket recordings go to (``recording.storage = "s3"``), else None."""
        return s3_config(self.recording)

    def ice_config(self) -> IceConfig:
        """The ``turn`` package's view of the ICE settings."""
        try:
            return IceConfig(
                stun_urls=self.ice.stun_urls, turn_urls=self.ice.turn_urls,
                turn_host=self.ice.turn_host, turn_port=self.ice.turn_port,
                turns_port=self.ice.turns_port or None, secrets=self.ice.turn_secrets,
                ttl_s=self.ice.turn_ttl_s, max_ttl_s=self.ice.turn_max_ttl_s,
            )
        except TurnConfigError as exc:
            raise ConfigError(str(exc)) from None


_SECTIONS = {f.name: f.type for f in fields(Settings)}
_FOREIGN_SECTIONS = {"turn", "loadtest"}
_ENV_ALIASES = {"CONNVO_RTC_AUTH_SECRET": ("auth", "secrets")}


def _coerce(section: str, name: str, hint: Any, value: Any) -> Any:
    where = f"{section}.{name}"
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            # int(8080.5) would silently truncate a TOML float; only whole numbers are ints
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
        if hint == tuple[str, ...]:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {getattr(hint, '__name__', hint)}")
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover - a coding error


def _apply(settings: Settings, overrides: Mapping[str, Mapping[str, Any]], origin: str) -> Settings:
    sections: dict[str, Any] = {}
    for section, values in overrides.items():
        if section in _FOREIGN_SECTIONS:
            continue  # read by other commands sharing the file (``connvo-rtc turn``)
        if section not in _SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        current = getattr(settings, section)
        hints = get_type_hints(type(current))
        changes = {}
        for name, value in values.items():
            if name not in hints:
                raise ConfigError(f"{origin}: unknown key {section}.{name}")
            changes[name] = _coerce(section, name, hints[name], value)
        sections[section] = replace(current, **changes)
    return replace(settings, **sections)


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build settings from defaults, a TOML file, the environment and explicit overrides.

    With no auth secret anywhere, a random one is generated and ``auth.dev_login`` is switched on:
    the hub runs in dev mode and logs that loudly.
    """
    settings = Settings()
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"cannot read config file {path}: not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        settings = _apply(settings, data, str(path))
    env = os.environ if env is None else env
    from_env: dict[str, dict[str, Any]] = {}
    for key, value in env.items():
        if not key.startswith("CONNVO_RTC_"):
            continue
        if key in _ENV_ALIASES:
            section, name = _ENV_ALIASES[key]
        else:
            rest = key[len("CONNVO_RTC_"):].lower()
            section, _, name = rest.partition("_")
            if section not in _SECTIONS:
                continue  # other tools' variables (e.g. CONNVO_RTC_TURN_SECRET for `turn`)
        from_env.setdefault(section, {})[name] = value
    if from_env:
        settings = _apply(settings, from_env, "environment")
    if overrides:
        settings = _apply(settings, overrides, "command line")
    if not settings.auth.secrets:
        import secrets as _secrets

        settings = replace(
            settings,
            auth=replace(settings.auth, secrets=(_secrets.token_urlsafe(32),), dev_login=True),
        )
    return settings.validate()


def as_dict(settings: Settings) -> dict[str, Any]:
    """Settings as plain data with secrets masked (for ``/debug`` and start-up logs): every
    field declared ``repr=False`` (auth secrets, TURN secrets, webhook secrets, the S3 secret
    key, the agent's API keys)."""
    data = dataclasses.asdict(settings)
    for section in fields(settings):
        for f in fields(getattr(settings, section.name)):
            if f.repr:
                continue
            value = data[section.name][f.name]
            data[section.name][f.name] = (["***"] * len(value) if isinstance(value, (list, tuple))
                                          else "***" if value else "")
    return data
