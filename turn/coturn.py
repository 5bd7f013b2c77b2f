"""Render a coturn ``turnserver`` configuration file from plain settings.

The rendered file is hardened by default:

- TURN REST auth only (``use-auth-secret``), one ``static-auth-secret=`` line per secret. coturn
  4.6 accepts a credential signed by *any* of them (checked against the installed coturn in
  ``tests/turn``), which is what lets secrets rotate.
- ``denied-peer-ip`` ranges for private, loopback and special-purpose networks so a TURN user
  cannot relay into the server's own network (SSRF through TURN). ``allow_private_peers`` lifts
  the private ranges (LAN deployments), ``allow_loopback_peers`` lifts loopback (tests and
  development only). Link-local ranges stay denied either way: 169.254.169.254 is the cloud
  metadata service.
- ``no-cli``, ``fingerprint``, ``no-multicast-peers``, ``no-tcp-relay`` (browsers never use RFC
  6062 TCP relays), ``no-rfc5780`` (amplification), ``no-software-attribute``.
- Logging to stdout only (``log-file=stdout``, ``simple-log``) so a supervisor forwards it, and
  no pid file (``pidfile=""``).

Secrets must be printable ASCII without whitespace, quotes or backslashes (coturn strips quotes
from values); ``openssl rand -hex 32`` makes a good one. They never appear in reprs or errors.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import TurnConfigError

#: Networks never allowed as relay peers: special-purpose, documentation, reserved, link-local.
ALWAYS_DENIED_NETWORKS: tuple[str, ...] = (
    "0.0.0.0/8",
    "169.254.0.0/16",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:db8::/32",
    "2002::/16",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
)
#: Private networks, denied unless ``allow_private_peers``.
PRIVATE_NETWORKS: tuple[str, ...] = (
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)
#: Loopback networks, denied unless ``allow_loopback_peers``.
LOOPBACK_NETWORKS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

DEFAULT_TLS_PORT = 5349
_FORBIDDEN_IN_SECRET = set("\"'\\")


def _ip(name: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise TurnConfigError(f"{name}: {value!r} is not an IP address") from None


def _ip_or_range(name: str, value: str) -> str:
    first, sep, last = value.partition("-")
    if sep:
        return f"{_ip(name, first)}-{_ip(name, last)}"
    return _ip(name, value)


def _port(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise TurnConfigError(f"{name} must be a port number 1..65535, got {value!r}")
    return value


def _plain_text(name: str, value: str) -> str:
    """A config value: non-empty, no whitespace at the ends, no control characters."""
    if not isinstance(value, str) or not value or value != value.strip():
        raise TurnConfigError(f"{name} must be a non-empty string without surrounding spaces")
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or '"' in value:
        raise TurnConfigError(f"{name} must not contain control characters or quotes")
    return value


def _tuple(name: str, value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise TurnConfigError(f"{name} must be a list of strings, not a single string")
    return tuple(value)


def network_range(cidr: str) -> str:
    """Render a network as coturn's ``first-last`` range (works on every coturn version)."""
    net = ipaddress.ip_network(cidr)
    if net.num_addresses == 1:
        return str(net.network_address)
    return f"{net.network_address}-{net.broadcast_address}"


@dataclass(frozen=True, slots=True)
class TurnServerConfig:
    """Everything needed to render a ``turnserver`` config. Validated at construction.

    Lists may be any sequence of strings; they are stored as tuples.
    """

    realm: str
    """TURN realm (any stable name, usually the TURN host's domain)."""
    secrets: tuple[str, ...] = field(repr=False)
    """Shared REST secrets, one ``static-auth-secret`` line each; the hub signs with the first."""
    listen_ips: tuple[str, ...] = ("127.0.0.1",)
    """IPs coturn listens on; empty means every interface."""
    port: int = 3478
    """Plain listening port (UDP and TCP)."""
    tls_port: int | None = None
    """TLS listening port; defaults to 5349 when ``cert``/``pkey`` are given."""
    relay_ips: tuple[str, ...] = ()
    """Local IPs relay sockets bind to; empty lets coturn use the client-facing IP."""
    external_ips: tuple[str, ...] = ()
    """``public`` or ``public/private`` mappings when coturn sits behind 1:1 NAT (cloud VMs)."""
    min_port: int = 49152
    """Lowest UDP relay port."""
    max_port: int = 65535
    """Highest UDP relay port."""
    cert: str | None = None
    """PEM certificate (chain) path for TLS; requires ``pkey``."""
    pkey: str | None = None
    """PEM private key path for TLS; requires ``cert``."""
    user_quota: int | None = None
    """Concurrent allocations per username (``user-quota``); ``None``: unlimited."""
    total_quota: int | None = None
    """Concurrent allocations in total (``total-quota``); ``None``: unlimited."""
    max_bps: int | None = None
    """Bandwidth cap per session, bytes per second each way (``max-bps``); ``None``: none."""
    allow_private_peers: bool = False
    """Allow relaying to private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)."""
    allow_loopback_peers: bool = False
    """Allow relaying to loopback. Tests and development only."""
    allowed_peer_ips: tuple[str, ...] = ()
    """Exceptions to the denied ranges (``ip`` or ``ip-ip``), e.g. the server's own private IP."""
    verbose: bool = False
    """Log every session (allocations, 401s); tests use it to read auth failures."""
    userdb: str | None = None
    """SQLite user-db path; keeps coturn away from ``/var/lib/turn`` (the supervisor sets it)."""

    def __post_init__(self) -> None:
        for name in ("listen_ips", "relay_ips", "external_ips", "allowed_peer_ips", "secrets"):
            object.__setattr__(self, name, _tuple(name, getattr(self, name)))
        _plain_text("realm", self.realm)
        if any(c.isspace() for c in self.realm):
            raise TurnConfigError("realm must not contain spaces")
        if not self.secrets:
            raise TurnConfigError("at least one TURN secret is required")
        for index, secret in enumerate(self.secrets):
            if (
                not isinstance(secret, str)
                or not secret
                or not secret.isascii()
                or not secret.isprintable()
                or any(c.isspace() or c in _FORBIDDEN_IN_SECRET for c in secret)
            ):
                raise TurnConfigError(
                    f"secrets[{index}] must be non-empty printable ASCII without spaces, "
                    "quotes or backslashes"
                )
        for ip in self.listen_ips:
            _ip("listen_ips", ip)
        for ip in self.relay_ips:
            _ip("relay_ips", ip)
        for mapping in self.external_ips:
            public, _, private = mapping.partition("/")
            _ip("external_ips", public)
            if private:
                _ip("external_ips", private)
        for value in self.allowed_peer_ips:
            _ip_or_range("allowed_peer_ips", value)
        _port("port", self.port)
        _port("min_port", self.min_port)
        _port("max_port", self.max_port)
        if self.min_port > self.max_port:
            raise TurnConfigError(f"min_port {self.min_port} is above max_port {self.max_port}")
        if (self.cert is None) != (self.pkey is None):
            raise TurnConfigError("cert and pkey must be given together")
        if self.cert is not None and self.pkey is not None:
            _plain_text("cert", self.cert)
            _plain_text("pkey", self.pkey)
        if self.tls_port is not None:
            _port("tls_port", self.tls_port)
            if self.cert is None:
                raise TurnConfigError("tls_port needs cert and pkey")
            if self.tls_port == self.port:
                raise TurnConfigError("tls_port must differ from port")
        for name in ("user_quota", "total_quota", "max_bps"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise TurnConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if self.userdb is not None:
            _plain_text("userdb", self.userdb)

    @property
    def tls_enabled(self) -> bool:
        """Whether coturn will listen for TLS (a certificate is configured)."""
        return self.cert is not None

    @property
    def effective_tls_port(self) -> int | None:
        """The TLS port coturn listens on, or ``None`` without TLS."""
        if not self.tls_enabled:
            return None
        return self.tls_port if self.tls_port is not None else DEFAULT_TLS_PORT

    def denied_networks(self) -> tuple[str, ...]:
        """The networks rendered as ``denied-peer-ip`` lines for this config."""
        networks = list(ALWAYS_DENIED_NETWORKS)
        if not self.allow_private_peers:
            networks += PRIVATE_NETWORKS
        if not self.allow_loopback_peers:
            networks += LOOPBACK_NETWORKS
        return tuple(networks)


def render_turnserver_config(config: TurnServerConfig, *, redact: bool = False) -> str:
    """Return ``turnserver.conf`` text for ``config``.

    With ``redact=True`` each secret is written as ``***`` (for logs and ``--print-config``
    previews); the result is then not usable by coturn.
    """
    lines = [
        "# turnserver.conf generated by connvo-rtc (turn/coturn.py). Contains secrets: mode 0600.",
        "",
        "# Listening",
    ]
    lines += [f"listening-ip={_ip('listen_ips', ip)}" for ip in config.listen_ips]
    lines.append(f"listening-port={config.port}")
    tls_port = config.effective_tls_port
    if tls_port is not None:
        lines += [
            f"tls-listening-port={tls_port}",
            f"cert={config.cert}",
            f"pkey={config.pkey}",
            "no-tlsv1",
            "no-tlsv1_1",
        ]
    else:
        lines += ["no-tls", "no-dtls"]
    lines += ["", "# Relaying"]
    lines += [f"relay-ip={_ip('relay_ips', ip)}" for ip in config.relay_ips]
    lines += [f"external-ip={mapping}" for mapping in config.external_ips]
    lines += [f"min-port={config.min_port}", f"max-port={config.max_port}", "no-tcp-relay"]
    lines += ["", "# Authentication: TURN REST credentials, every secret accepted"]
    lines += [f"realm={config.realm}", "use-auth-secret"]
    lines += [f"static-auth-secret={'***' if redact else secret}" for secret in config.secrets]
    lines.append("stale-nonce=600")
    if config.userdb is not None:
        lines.append(f"userdb={config.userdb}")
    quotas = (
        ("user-quota", config.user_quota),
        ("total-quota", config.total_quota),
        ("max-bps", config.max_bps),
    )
    if any(value is not None for _, value in quotas):
        lines += ["", "# Quotas"]
        lines += [f"{key}={value}" for key, value in quotas if value is not None]
    lines += ["", "# Peers a TURN user may relay to", "no-multicast-peers"]
    if config.allow_loopback_peers:
        lines.append("allow-loopback-peers")
    lines += [f"denied-peer-ip={network_range(net)}" for net in config.denied_networks()]
    lines += [
        f"allowed-peer-ip={_ip_or_range('allowed_peer_ips', value)}"
        for value in config.allowed_peer_ips
    ]
    lines += [
        "",
        "# Hardening",
        "fingerprint",
        "no-cli",
        "no-rfc5780",
        "no-software-attribute",
        "",
        "# Logging to stdout for the supervisor; no pid file",
        "log-file=stdout",
        "simple-log",
        'pidfile=""',
    ]
    if config.verbose:
        lines.append("verbose")
    return "\n".join(lines) + "\n"
