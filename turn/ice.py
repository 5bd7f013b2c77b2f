"""ICE server lists per user, in the browser's ``RTCIceServer`` shape.

The hub calls :func:`ice_servers_for` once per join (and for the ICE-servers API) with the user's
id and one :class:`IceConfig` built at start-up::

    config = IceConfig(stun_urls=("stun:turn.example.com:3478",),
                       turn_host="turn.example.com", turns_port=5349,
                       secrets=("new-secret", "old-secret"), ttl_s=3600)
    ice_servers_for("alice", config)
    # [{"urls": ["stun:turn.example.com:3478"]},
    #  {"urls": ["turn:turn.example.com:3478?transport=udp",
    #            "turn:turn.example.com:3478?transport=tcp",
    #            "turns:turn.example.com:5349?transport=tcp"],
    #   "username": "1700003600:alice", "credential": "…"}]

With nothing configured the list is empty: we never hand out a public STUN server the operator did
not choose. For aiortc peers, ``RTCIceServer(**server)`` accepts each dict as is (aiortc uses only
the first STUN and the first TURN URL, which is why UDP comes first).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .credentials import DEFAULT_MAX_TTL_S, check_secrets, check_ttl, issue_credential
from .errors import CredentialError, TurnConfigError

#: Default port for ``stun:`` and ``turn:`` URLs (RFC 7064/7065).
DEFAULT_PORT = 3478
#: Default port for ``stuns:`` and ``turns:`` URLs.
DEFAULT_TLS_PORT = 5349
#: Transports a ``turn:`` URL may name.
TURN_TRANSPORTS = ("udp", "tcp")

_URL_RE = re.compile(
    r"^(?P<scheme>stuns?|turns?):"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>[a-z]+))?$"
)
_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class IceUrl:
    """A parsed ``stun:``/``stuns:``/``turn:``/``turns:`` URL (RFC 7064, RFC 7065)."""

    scheme: str
    """``stun``, ``stuns``, ``turn`` or ``turns``."""
    host: str
    """Host name or IP address, without IPv6 brackets."""
    port: int
    """Port, the scheme's default when the URL names none."""
    transport: str | None
    """``udp`` or ``tcp`` for TURN (``tcp`` for ``turns:``); ``None`` for STUN."""

    @property
    def secure(self) -> bool:
        """Whether the URL runs over TLS (``stuns:``/``turns:``)."""
        return self.scheme.endswith("s")


def _check_host(host: str, url: str) -> str:
    if host.startswith("["):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise TurnConfigError(f"{url!r}: invalid IPv6 address {host}") from None
    labels = host.rstrip(".").split(".")
    if not all(_LABEL_RE.match(label) for label in labels):
        raise TurnConfigError(f"{url!r}: invalid host name {host!r}")
    return host


def parse_ice_url(url: str) -> IceUrl:
    """Parse and validate one ICE server URL; raise :class:`TurnConfigError`.

    Accepts ``stun:host[:port]``, ``stuns:host[:port]``, ``turn:host[:port][?transport=udp|tcp]``
    and ``turns:host[:port][?transport=tcp]`` (browsers do not do TURN over DTLS).
    """
    if not isinstance(url, str):
        raise TurnConfigError(f"ICE URL must be a string, not {type(url).__name__}")
    match = _URL_RE.match(url)
    if match is None:
        raise TurnConfigError(
            f"{url!r} is not a valid ICE URL (expected stun:, stuns:, turn: or turns: "
            "followed by host[:port])"
        )
    scheme = match["scheme"]
    host = _check_host(match["host"], url)
    secure = scheme.endswith("s")
    port = int(match["port"]) if match["port"] else (DEFAULT_TLS_PORT if secure else DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise TurnConfigError(f"{url!r}: port {port} is out of range")
    transport = match["transport"]
    if scheme.startswith("stun"):
        if transport is not None:
            raise TurnConfigError(f"{url!r}: STUN URLs take no ?transport=")
    elif transport is None:
        transport = "tcp" if secure else "udp"
    elif transport not in TURN_TRANSPORTS:
        raise TurnConfigError(f"{url!r}: transport must be udp or tcp")
    elif secure and transport != "tcp":
        raise TurnConfigError(f"{url!r}: turns: runs over TLS, so only ?transport=tcp")
    return IceUrl(scheme=scheme, host=host, port=port, transport=transport)


def _str_tuple(name: str, value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise TurnConfigError(f"{name} must be a list of strings, not a single string")
    return tuple(value)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class IceServer:
    """One entry of an ICE server list; :meth:`to_dict` gives the browser's shape."""

    urls: tuple[str, ...]
    """URLs sharing the credentials below."""
    username: str | None = None
    """TURN username, ``None`` for STUN."""
    credential: str | None = field(default=None, repr=False)
    """TURN password, ``None`` for STUN. Never logged."""

    def to_dict(self) -> dict[str, Any]:
        """``{"urls": [...], "username": ..., "credential": ...}`` (no keys for STUN creds)."""
        data: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            data["username"] = self.username
        if self.credential is not None:
            data["credential"] = self.credential
        return data


@dataclass(frozen=True, slots=True)
class IceConfig:
    """Where peers find STUN/TURN and how their TURN credentials are signed.

    TURN URLs come from ``turn_urls`` and/or from ``turn_host`` with its ports; both may be
    combined (explicit URLs first). Lists may be given as any sequence; they are stored as tuples.
    Invalid values raise :class:`TurnConfigError` at construction.
    """

    stun_urls: tuple[str, ...] = ()
    """``stun:``/``stuns:`` URLs handed to every peer. Empty: no STUN (never a public default)."""
    turn_urls: tuple[str, ...] = ()
    """Explicit ``turn:``/``turns:`` URLs (e.g. behind a load balancer), handed with credentials."""
    turn_host: str = ""
    """Public host name or IP of coturn as browsers reach it; empty: derive no TURN URLs."""
    turn_port: int = DEFAULT_PORT
    """coturn's plain listening port (UDP and TCP) for URLs derived from ``turn_host``."""
    turn_transports: tuple[str, ...] = TURN_TRANSPORTS
    """Which of ``udp``/``tcp`` to advertise on ``turn_port``, in this order of preference."""
    turns_port: int | None = None
    """coturn's TLS port; when set, a ``turns:host:port?transport=tcp`` URL is added. TLS must
    then be configured on coturn (``cert``/``pkey``)."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """coturn ``static-auth-secret`` values; the first signs. Required when any TURN URL is set."""
    ttl_s: int = 3600
    """Lifetime of each issued TURN credential, seconds."""
    max_ttl_s: int = DEFAULT_MAX_TTL_S
    """Upper bound for ``ttl_s``, seconds."""

    def __post_init__(self) -> None:
        for name in ("stun_urls", "turn_urls", "turn_transports", "secrets"):
            object.__setattr__(self, name, _str_tuple(name, getattr(self, name)))
        for url in self.stun_urls:
            if not parse_ice_url(url).scheme.startswith("stun"):
                raise TurnConfigError(f"stun_urls: {url!r} is not a stun:/stuns: URL")
        for url in self.turn_urls:
            if not parse_ice_url(url).scheme.startswith("turn"):
                raise TurnConfigError(f"turn_urls: {url!r} is not a turn:/turns: URL")
        for transport in self.turn_transports:
            if transport not in TURN_TRANSPORTS:
                raise TurnConfigError(f"turn_transports: {transport!r} is not udp or tcp")
        for name in ("turn_port", "turns_port"):
            port = getattr(self, name)
            if port is not None and (
                isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
            ):
                raise TurnConfigError(f"{name} must be a port number 1..65535, got {port!r}")
        if self.turn_host:
            # Validates the host through the same parser as explicit URLs.
            parse_ice_url(f"turn:{_url_host(self.turn_host)}:{self.turn_port}")
            if not self.turn_transports and self.turns_port is None:
                raise TurnConfigError("turn_host is set but no transport and no turns_port")
        try:
            if self.turn_configured:
                check_secrets(self.secrets)
            check_ttl(self.ttl_s, self.max_ttl_s)
        except CredentialError as exc:
            raise TurnConfigError(f"ice: {exc.message}") from None

    @property
    def turn_configured(self) -> bool:
        """Whether any TURN URL is configured."""
        return bool(self.turn_urls or self.turn_host)

    def all_turn_urls(self) -> tuple[str, ...]:
        """Explicit TURN URLs, then those derived from ``turn_host`` (UDP, TCP, TLS)."""
        urls = list(self.turn_urls)
        if self.turn_host:
            host = _url_host(self.turn_host)
            urls += [f"turn:{host}:{self.turn_port}?transport={t}" for t in self.turn_transports]
            if self.turns_port is not None:
                urls.append(f"turns:{host}:{self.turns_port}?transport=tcp")
        return tuple(dict.fromkeys(urls))


def ice_servers(user_id: str, config: IceConfig, now: float | None = None) -> tuple[IceServer, ...]:
    """Build the ICE servers for ``user_id``: STUN first, then TURN with a fresh credential.

    ``now`` (Unix seconds) defaults to the current time. Raises
    :class:`~turn.errors.CredentialError` for an unusable user id (only when TURN is configured).
    """
    servers: list[IceServer] = []
    if config.stun_urls:
        servers.append(IceServer(urls=config.stun_urls))
    turn_urls = config.all_turn_urls()
    if turn_urls:
        cred = issue_credential(
            user_id, config.secrets, ttl_s=config.ttl_s, max_ttl_s=config.max_ttl_s, now=now
        )
        servers.append(
            IceServer(urls=turn_urls, username=cred.username, credential=cred.credential)
        )
    return tuple(servers)


def ice_servers_for(
    user_id: str, config: IceConfig, now: float | None = None
) -> list[dict[str, Any]]:
    """:func:`ice_servers` as JSON-ready dicts ``{"urls", "username", "credential"}``."""
    return [server.to_dict() for server in ice_servers(user_id, config, now)]
