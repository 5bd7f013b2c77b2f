"""turnserver config rendering: secret rotation lines, peer restrictions, TLS, validation."""

from __future__ import annotations

import pytest

from turn.coturn import (
    LOOPBACK_NETWORKS,
    PRIVATE_NETWORKS,
    TurnServerConfig,
    network_range,
    render_turnserver_config,
)
from turn.errors import TurnConfigError

SECRETS = ("alpha-secret", "beta-secret", "gamma-secret")


def lines_of(config: TurnServerConfig, **kwargs: bool) -> list[str]:
    return render_turnserver_config(config, **kwargs).splitlines()


def test_one_static_auth_secret_line_per_secret_in_order() -> None:
    lines = lines_of(TurnServerConfig(realm="example.com", secrets=SECRETS))
    assert "use-auth-secret" in lines
    assert [line for line in lines if line.startswith("static-auth-secret=")] == [
        "static-auth-secret=alpha-secret",
        "static-auth-secret=beta-secret",
        "static-auth-secret=gamma-secret",
    ]
    assert "realm=example.com" in lines
    assert not any(line.startswith(("user=", "lt-cred-mech", "no-auth")) for line in lines)


def test_hardening_and_logging_defaults() -> None:
    lines = lines_of(TurnServerConfig(realm="example.com", secrets=SECRETS))
    for expected in (
        "no-cli",
        "fingerprint",
        "no-multicast-peers",
        "no-tcp-relay",
        "log-file=stdout",
        "simple-log",
        'pidfile=""',
        "listening-ip=127.0.0.1",
        "listening-port=3478",
        "min-port=49152",
        "max-port=65535",
        "no-tls",
        "no-dtls",
    ):
        assert expected in lines
    assert "allow-loopback-peers" not in lines
    assert "verbose" not in lines


def test_private_and_loopback_peers_denied_by_default() -> None:
    lines = lines_of(TurnServerConfig(realm="example.com", secrets=SECRETS))
    for expected in (
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=100.64.0.0-100.127.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=0.0.0.0-0.255.255.255",
        "denied-peer-ip=::1",
        "denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "denied-peer-ip=fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ):
        assert expected in lines


def test_allow_loopback_peers_lifts_only_loopback() -> None:
    lines = lines_of(TurnServerConfig(realm="r", secrets=SECRETS, allow_loopback_peers=True))
    assert "allow-loopback-peers" in lines
    for net in LOOPBACK_NETWORKS:
        assert f"denied-peer-ip={network_range(net)}" not in lines
    for net in PRIVATE_NETWORKS:
        assert f"denied-peer-ip={network_range(net)}" in lines


def test_allow_private_peers_lifts_private_but_not_link_local() -> None:
    lines = lines_of(TurnServerConfig(realm="r", secrets=SECRETS, allow_private_peers=True))
    for net in PRIVATE_NETWORKS:
        assert f"denied-peer-ip={network_range(net)}" not in lines
    assert "denied-peer-ip=169.254.0.0-169.254.255.255" in lines  # cloud metadata service
    assert "denied-peer-ip=127.0.0.0-127.255.255.255" in lines
    assert "allow-loopback-peers" not in lines


def test_allowed_peer_exceptions() -> None:
    lines = lines_of(
        TurnServerConfig(
            realm="r", secrets=SECRETS, allowed_peer_ips=("10.0.0.5", "10.1.0.1-10.1.0.9")
        )
    )
    assert "allowed-peer-ip=10.0.0.5" in lines
    assert "allowed-peer-ip=10.1.0.1-10.1.0.9" in lines


def test_tls_listener_with_cert() -> None:
    config = TurnServerConfig(realm="r", secrets=SECRETS, cert="/etc/c.pem", pkey="/etc/k.pem")
    lines = lines_of(config)
    assert {"tls-listening-port=5349", "cert=/etc/c.pem", "pkey=/etc/k.pem"} <= set(lines)
    assert "no-tls" not in lines
    config = TurnServerConfig(realm="r", secrets=SECRETS, cert="/c", pkey="/k", tls_port=443)
    assert "tls-listening-port=443" in lines_of(config)


def test_listeners_relays_quotas() -> None:
    config = TurnServerConfig(
        realm="r",
        secrets=SECRETS,
        listen_ips=("10.0.0.2", "::1"),
        port=3479,
        relay_ips=("10.0.0.2",),
        external_ips=("203.0.113.9/10.0.0.2",),
        min_port=50000,
        max_port=50100,
        user_quota=10,
        total_quota=100,
        max_bps=64000,
        verbose=True,
        userdb="/tmp/x/turndb",
    )
    lines = lines_of(config)
    for expected in (
        "listening-ip=10.0.0.2",
        "listening-ip=::1",
        "listening-port=3479",
        "relay-ip=10.0.0.2",
        "external-ip=203.0.113.9/10.0.0.2",
        "min-port=50000",
        "max-port=50100",
        "user-quota=10",
        "total-quota=100",
        "max-bps=64000",
        "verbose",
        "userdb=/tmp/x/turndb",
    ):
        assert expected in lines


def test_secrets_hidden_from_repr_and_redacted_rendering() -> None:
    config = TurnServerConfig(realm="r", secrets=SECRETS)
    assert not any(secret in repr(config) for secret in SECRETS)
    text = render_turnserver_config(config, redact=True)
    assert not any(secret in text for secret in SECRETS)
    assert text.count("static-auth-secret=***") == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secrets": ()}, "at least one"),
        ({"secrets": "single"}, "single string"),
        ({"secrets": ("has space",)}, r"secrets\[0\]"),
        ({"secrets": ("fine-secret", 'quo"te')}, r"secrets\[1\]"),
        ({"secrets": ("new\nline",)}, r"secrets\[0\]"),
        ({"realm": ""}, "realm"),
        ({"realm": "two words"}, "realm"),
        ({"realm": "x\nuser=evil:pw"}, "realm"),
        ({"listen_ips": ("localhost",)}, "listen_ips"),
        ({"relay_ips": ("1.2.3",)}, "relay_ips"),
        ({"port": 0}, "port"),
        ({"min_port": 60000, "max_port": 50000}, "min_port"),
        ({"cert": "/c"}, "together"),
        ({"tls_port": 5349}, "cert"),
        ({"cert": "/c", "pkey": "/k", "tls_port": 3478}, "differ"),
        ({"user_quota": -1}, "user_quota"),
        ({"external_ips": ("nat",)}, "external_ips"),
        ({"cert": "/c\nno-auth", "pkey": "/k"}, "cert"),
    ],
)
def test_invalid_configs_rejected_without_leaking_secrets(
    kwargs: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"realm": "r", "secrets": ("top-secret",), **kwargs}
    with pytest.raises(TurnConfigError, match=message) as info:
        TurnServerConfig(**values)  # type: ignore[arg-type]
    assert "top-secret" not in str(info.value)
    for secret in values["secrets"] if isinstance(values["secrets"], tuple) else ():
        assert secret not in str(info.value)
