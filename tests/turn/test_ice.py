"""ICE server lists: browser shape, nothing when unconfigured, URL validation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from turn.errors import CredentialError, TurnConfigError
from turn.ice import IceConfig, IceServer, ice_servers, ice_servers_for, parse_ice_url

NOW = 1_700_000_000
SECRETS = ("sign-me", "older")


def test_unconfigured_is_empty() -> None:
    """No configuration must never mean a public STUN server."""
    assert ice_servers_for("alice", IceConfig(), now=NOW) == []


def test_stun_only() -> None:
    config = IceConfig(
        stun_urls=["stun:stun.example.com:3478", "stuns:stun.example.com"]  # type: ignore[arg-type]
    )
    assert ice_servers_for("alice", config, now=NOW) == [
        {"urls": ["stun:stun.example.com:3478", "stuns:stun.example.com"]}
    ]


def test_turn_from_host_udp_and_tcp_without_tls() -> None:
    config = IceConfig(turn_host="turn.example.com", secrets=SECRETS, ttl_s=600)
    servers = ice_servers_for("alice", config, now=NOW)
    assert len(servers) == 1
    server = servers[0]
    assert set(server) == {"urls", "username", "credential"}
    assert server["urls"] == [
        "turn:turn.example.com:3478?transport=udp",
        "turn:turn.example.com:3478?transport=tcp",
    ]
    assert not any(url.startswith("turns:") for url in server["urls"])
    assert server["username"] == f"{NOW + 600}:alice"
    expected = base64.b64encode(
        hmac.new(b"sign-me", server["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert server["credential"] == expected
    json.dumps(servers)  # JSON-ready as is


def test_turns_only_with_tls_port() -> None:
    config = IceConfig(
        stun_urls=("stun:turn.example.com",),
        turn_host="turn.example.com",
        turn_port=3479,
        turns_port=443,
        secrets=SECRETS,
    )
    stun, turn = ice_servers_for("bob", config, now=NOW)
    assert stun == {"urls": ["stun:turn.example.com"]}
    assert turn["urls"] == [
        "turn:turn.example.com:3479?transport=udp",
        "turn:turn.example.com:3479?transport=tcp",
        "turns:turn.example.com:443?transport=tcp",
    ]


def test_tls_only_transports() -> None:
    config = IceConfig(turn_host="10.0.0.5", turn_transports=(), turns_port=5349, secrets=SECRETS)
    (turn,) = ice_servers_for("bob", config, now=NOW)
    assert turn["urls"] == ["turns:10.0.0.5:5349?transport=tcp"]


def test_ipv6_host_is_bracketed() -> None:
    config = IceConfig(turn_host="2001:db8::1", turn_transports=("udp",), secrets=SECRETS)
    (turn,) = ice_servers_for("bob", config, now=NOW)
    assert turn["urls"] == ["turn:[2001:db8::1]:3478?transport=udp"]


def test_explicit_turn_urls_first_and_deduplicated() -> None:
    config = IceConfig(
        turn_urls=("turn:lb.example.com:3478?transport=udp", "turn:a.example.com"),
        turn_host="lb.example.com",
        turn_transports=("udp",),
        secrets=SECRETS,
    )
    (turn,) = ice_servers_for("bob", config, now=NOW)
    assert turn["urls"] == ["turn:lb.example.com:3478?transport=udp", "turn:a.example.com"]


def test_user_id_is_encoded_in_username() -> None:
    config = IceConfig(turn_urls=("turn:t.example.com",), secrets=SECRETS)
    (turn,) = ice_servers_for("ev:il\r\nid", config, now=NOW)
    assert turn["username"] == f"{NOW + 3600}:ev%3Ail%0D%0Aid"


def test_bad_user_id_raises_credential_error() -> None:
    config = IceConfig(turn_urls=("turn:t.example.com",), secrets=SECRETS)
    with pytest.raises(CredentialError):
        ice_servers_for("", config, now=NOW)


def test_structs_and_repr_hide_secrets_and_credentials() -> None:
    config = IceConfig(turn_urls=("turn:t.example.com",), secrets=("very-secret-value",))
    assert "very-secret-value" not in repr(config)
    (server,) = ice_servers("alice", config, now=NOW)
    assert isinstance(server, IceServer)
    assert server.credential is not None and server.credential not in repr(server)
    assert server.to_dict()["credential"] == server.credential


def test_lists_are_stored_as_tuples() -> None:
    config = IceConfig(stun_urls=["stun:a.example.com"], secrets=["x"])  # type: ignore[arg-type]
    assert config.stun_urls == ("stun:a.example.com",)
    assert config.secrets == ("x",)
    hash(config)


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "transport"),
    [
        ("stun:example.com", "stun", "example.com", 3478, None),
        ("stuns:example.com", "stuns", "example.com", 5349, None),
        ("turn:1.2.3.4:3479", "turn", "1.2.3.4", 3479, "udp"),
        ("turn:example.com?transport=tcp", "turn", "example.com", 3478, "tcp"),
        ("turns:example.com", "turns", "example.com", 5349, "tcp"),
        ("turn:[::1]:3478?transport=udp", "turn", "::1", 3478, "udp"),
    ],
)
def test_parse_ice_url(url: str, scheme: str, host: str, port: int, transport: str | None) -> None:
    parsed = parse_ice_url(url)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.transport) == (
        scheme,
        host,
        port,
        transport,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "stun.example.com:3478",
        "stun:",
        "stun:example.com?transport=udp",
        "turn:example.com?transport=sctp",
        "turns:example.com?transport=udp",
        "turn:example.com:99999",
        "turn:exa mple.com",
        "turn:[not-ipv6]:3478",
        "turn://example.com",
    ],
)
def test_bad_urls_rejected(url: str) -> None:
    with pytest.raises(TurnConfigError):
        parse_ice_url(url)


def test_url_list_fields_validate_scheme() -> None:
    with pytest.raises(TurnConfigError, match="not a stun"):
        IceConfig(stun_urls=("turn:example.com",))
    with pytest.raises(TurnConfigError, match="not a turn"):
        IceConfig(turn_urls=("stun:example.com",), secrets=SECRETS)
    with pytest.raises(TurnConfigError, match="single string"):
        IceConfig(stun_urls="stun:example.com")  # type: ignore[arg-type]


def test_turn_needs_secrets() -> None:
    with pytest.raises(TurnConfigError, match="secret"):
        IceConfig(turn_host="turn.example.com")
    with pytest.raises(TurnConfigError, match="secret"):
        IceConfig(turn_urls=("turn:turn.example.com",))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl_s": 0},
        {"ttl_s": 100, "max_ttl_s": 50},
        {"turn_port": 0},
        {"turns_port": 70000},
        {"turn_transports": ("sctp",)},
        {"turn_host": "bad host"},
        {"turn_transports": ()},
    ],
)
def test_bad_config_rejected(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"turn_host": "turn.example.com", "secrets": SECRETS}
    with pytest.raises(TurnConfigError):
        IceConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_aiortc_accepts_the_dicts() -> None:
    from aiortc import RTCIceServer

    config = IceConfig(stun_urls=("stun:127.0.0.1:3478",), turn_host="127.0.0.1", secrets=SECRETS)
    servers = [RTCIceServer(**entry) for entry in ice_servers_for("alice", config, now=NOW)]
    assert servers[1].username == f"{NOW + 3600}:alice"
