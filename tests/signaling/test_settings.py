"""Settings: defaults, TOML file, ``CONNVO_RTC_*`` environment, overrides, validation."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from signaling.settings import (
    MESH_LIMIT,
    ConfigError,
    Settings,
    as_dict,
    load_settings,
)

SECRET_A = "a" * 32
SECRET_B = "b" * 40
TURN_SECRET = "turn-secret-" + "t" * 32
REPO = Path(__file__).parents[2]


def write(tmp_path: Path, text: str, name: str = "hub.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_a_secret_are_dev_mode() -> None:
    first = load_settings(None, env={})
    second = load_settings(None, env={})
    assert first.dev_mode and first.auth.dev_login
    assert len(first.auth.secrets) == 1 and len(first.auth.secrets[0]) >= 32
    assert first.auth.secrets != second.auth.secrets  # random per run
    assert first.server == Settings().server and first.rooms.capacity == MESH_LIMIT


def test_a_secret_turns_dev_mode_off() -> None:
    settings = load_settings(None, env={"CONNVO_RTC_AUTH_SECRET": SECRET_A})
    assert not settings.dev_mode and not settings.auth.dev_login
    assert settings.auth.secrets == (SECRET_A,)


def test_env_secret_list_and_coercion() -> None:
    settings = load_settings(None, env={
        "CONNVO_RTC_AUTH_SECRET": f" {SECRET_A} ,{SECRET_B},, ",
        "CONNVO_RTC_LIMITS_MAX_FRAME_BYTES": "131072",
        "CONNVO_RTC_LIMITS_MESSAGES_PER_SECOND": "12.5",
        "CONNVO_RTC_SERVER_DEMO": "off",
        "CONNVO_RTC_ICE_STUN_URLS": "stun:a.example:3478,stun:b.example:3478",
        "CONNVO_RTC_LOG_LEVEL": "DEBUG",  # the CLI's, not a settings section: ignored
        "OTHER_VARIABLE": "x",
    })
    assert settings.auth.secrets == (SECRET_A, SECRET_B)
    assert settings.limits.max_frame_bytes == 131072
    assert isinstance(settings.limits.max_frame_bytes, int)
    assert settings.limits.messages_per_second == 12.5
    assert settings.server.demo is False
    assert settings.ice.stun_urls == ("stun:a.example:3478", "stun:b.example:3478")


@pytest.mark.parametrize(("env", "message"), [
    ({"CONNVO_RTC_LIMITS_MAX_FRAME_BYTES": "lots"}, "limits.max_frame_bytes"),
    ({"CONNVO_RTC_LIMITS_MAX_FRAME_BYTES": "1.5"}, "limits.max_frame_bytes"),
    ({"CONNVO_RTC_SERVER_DEMO": "maybe"}, "server.demo"),
    ({"CONNVO_RTC_SERVER_COLOUR": "blue"}, "unknown key server.colour"),
    ({"CONNVO_RTC_LIMITS_MAX_FRAME_BYTES": "100"}, "limits.max_frame_bytes"),
])
def test_env_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, env={"CONNVO_RTC_AUTH_SECRET": SECRET_A, **env})


def test_toml_sections_and_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[server]
port = 9001
public_url = "https://rtc.example.com"
shutdown_timeout_s = 3

[auth]
secrets = ["{SECRET_A}", "{SECRET_B}"]
max_token_ttl_s = 7200

[limits]
max_frame_bytes = 32768

[rooms]
capacity = 3

[ice]
stun_urls = ["stun:stun.example.com:3478"]
turn_urls = ["turn:turn.example.com:3478?transport=udp"]
turn_secrets = ["{TURN_SECRET}"]
""")
    settings = load_settings(path, env={})
    assert settings.server.port == 9001 and settings.server.shutdown_timeout_s == 3.0
    assert isinstance(settings.server.shutdown_timeout_s, float)
    assert settings.server.public_url == "https://rtc.example.com"
    assert settings.auth.secrets == (SECRET_A, SECRET_B) and settings.auth.max_token_ttl_s == 7200
    assert settings.limits.max_frame_bytes == 32768 and settings.rooms.capacity == 3
    assert settings.ice.turn_secrets == (TURN_SECRET,)
    assert not settings.dev_mode
    # environment beats the file, explicit overrides beat both
    settings = load_settings(path, env={"CONNVO_RTC_SERVER_PORT": "9002",
                                        "CONNVO_RTC_ROOMS_CAPACITY": "2"},
                             overrides={"server": {"port": 9003}})
    assert settings.server.port == 9003 and settings.rooms.capacity == 2


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nportt = 1\n", "unknown key server.portt"),
    ("[sever]\nport = 1\n", r"unknown section \[sever\]"),
    ("port = 1\n", r"unknown section \[port\]"),
    ('[server]\nport = "eighty"\n', "server.port"),
    ("[server]\nport = true\n", "server.port"),
    ("[server]\nport = 8080.5\n", "server.port"),
    ("[server]\nport = 70000\n", "server.port must be 0..65535"),
    ('[auth]\nsecrets = "short"\n', "auth secrets must be >= 32 characters"),
    ("[auth]\nsecrets = [1, 2]\n", "auth.secrets"),
    ("[rooms]\ncapacity = 5\n", "rooms.capacity must be 1..4"),
    ("[rooms]\ncapacity = 0\n", "rooms.capacity must be 1..4"),
    ("[auth]\ntoken_ttl_s = 100000\n", "auth.token_ttl_s"),
    ('[ice]\nstun_urls = ["http://x"]\n', "ice.stun_urls"),
    ('[ice]\nturn_urls = ["turn:t.example:3478"]\n', "turn_secrets"),
    ("[server\nport = 1\n", "invalid TOML"),
])
def test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(path, env={})
    assert "\n" not in str(info.value).strip()


def test_validation_errors_from_overrides() -> None:
    with pytest.raises(ConfigError, match=r"rooms.capacity must be 1..4"):
        load_settings(None, env={}, overrides={"rooms": {"capacity": 5},
                                               "auth": {"secrets": SECRET_A}})
    with pytest.raises(ConfigError, match="auth secrets must be >= 32 characters"):
        load_settings(None, env={}, overrides={"auth": {"secrets": f"{SECRET_A},short"}})


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_unreadable_file(tmp_path: Path, kind: str) -> None:
    """Regression (binary): a config file that is not UTF-8 raised UnicodeDecodeError, which the
    CLI does not catch, instead of a ConfigError."""
    path = tmp_path / "hub.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00[server]\x9c")
    with pytest.raises(ConfigError, match="hub.toml") as info:
        load_settings(path, env={})
    assert "None" not in str(info.value)


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    settings = load_settings(None, env={"CONNVO_RTC_AUTH_SECRET": f"{SECRET_A},{SECRET_B}"},
                             overrides={"ice": {"turn_secrets": TURN_SECRET,
                                                "turn_urls": "turn:t.example:3478"}})
    for text in (repr(settings), str(settings), repr(settings.auth), repr(settings.ice),
                 repr(as_dict(settings))):
        for secret in (SECRET_A, SECRET_B, TURN_SECRET):
            assert secret not in text
    data = as_dict(settings)
    assert data["auth"]["secrets"] == ["***", "***"] and data["ice"]["turn_secrets"] == ["***"]
    dev = load_settings(None, env={})
    assert dev.auth.secrets[0] not in repr(dev)


def test_settings_are_frozen() -> None:
    settings = load_settings(None, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server.port = 1  # type: ignore[misc]


def test_documented_config_covers_every_key() -> None:
    """config/connvo-rtc.toml documents every field with its default, and loads as is."""
    path = REPO / "config" / "connvo-rtc.toml"
    data = tomllib.loads(path.read_text())
    defaults = Settings()
    problems = []
    for section in dataclasses.fields(Settings):
        documented = data.get(section.name, {})
        current = getattr(defaults, section.name)
        for f in dataclasses.fields(current):
            if f.name not in documented:
                problems.append(f"{section.name}.{f.name} is not documented")
                continue
            value, expected = documented[f.name], getattr(current, f.name)
            if isinstance(expected, tuple):
                value = tuple(value)
            if value != expected:
                problems.append(f"{section.name}.{f.name}: documented {value!r}, "
                                f"default {expected!r}")
    assert not problems, problems
    settings = load_settings(path, env={})
    assert settings.dev_mode  # the example ships without secrets


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost",
                                  "::ffff:127.0.0.1"])
def test_dev_mode_may_listen_on_any_loopback_address(host: str) -> None:
    settings = load_settings(None, env={}, overrides={"server": {"host": host}})
    assert settings.dev_mode and settings.server.host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.20", "rtc.example.com"])
def test_dev_mode_refuses_a_network_address_unless_forced(host: str) -> None:
    """Dev mode (no auth secret: anyone can get a token) started on 0.0.0.0 without a word.
    It is a configuration error now, unless ``server.dev_on_network`` (--dev-on-network)."""
    with pytest.raises(ConfigError, match="dev mode .* listens on loopback only") as info:
        load_settings(None, env={}, overrides={"server": {"host": host}})
    assert "--dev-on-network" in str(info.value)
    forced = load_settings(None, env={"CONNVO_RTC_SERVER_DEV_ON_NETWORK": "1"},
                           overrides={"server": {"host": host}})
    assert forced.dev_mode and forced.server.dev_on_network
    with_secret = load_settings(None, env={"CONNVO_RTC_AUTH_SECRET": SECRET_A},
                                overrides={"server": {"host": host}})
    assert not with_secret.dev_mode


def test_the_redis_url_comes_from_the_environment() -> None:
    """A password in ``--redis`` shows in ``ps``; ``CONNVO_RTC_REDIS_URL`` keeps it out."""
    url = "rediss://hub:s3cret@redis.internal:6380/0"
    settings = load_settings(None, env={"CONNVO_RTC_AUTH_SECRET": SECRET_A,
                                        "CONNVO_RTC_REDIS_URL": url})
    assert settings.redis.url == url


def test_connection_limits_and_origins_are_checked() -> None:
    base = {"auth": {"secrets": SECRET_A}}
    settings = load_settings(None, env={"CONNVO_RTC_LIMITS_PER_ADDRESS_EXEMPT": "10.0.0.0/8,"
                                        "2001:db8::/48", "CONNVO_RTC_SERVER_ALLOWED_ORIGINS":
                                        "https://app.example.com,http://localhost:3000"},
                             overrides=base)
    assert settings.limits.per_address_exempt == ("10.0.0.0/8", "2001:db8::/48")
    assert settings.server.allowed_origins == ("https://app.example.com", "http://localhost:3000")
    for section, values, message in (
            ("limits", {"per_address_exempt": "10.0.0.0/33"}, "limits.per_address_exempt"),
            ("limits", {"max_connections_per_address": -1}, "max_connections_per_address"),
            ("limits", {"request_head_timeout_s": 0}, "request_head_timeout_s"),
            ("limits", {"connection_headroom": 0}, "connection_headroom"),
            ("limits", {"keepalive_timeout_s": 0}, "keepalive_timeout_s"),
            ("server", {"allowed_origins": "app.example.com"}, "server.allowed_origins"),
            ("server", {"allowed_origins": "https://app.example.com/path"},
             "server.allowed_origins"),
            ("server", {"port": 0, "workers": 2}, "server.port 0")):
        with pytest.raises(ConfigError, match=message):
            load_settings(None, env={"CONNVO_RTC_REDIS_URL": "redis://r:6379/0"},
                          overrides={**base, section: values})


def test_every_secret_is_masked_in_the_settings_dump() -> None:
    """Regression: ``as_dict`` masked a hand-kept list of secrets, and the agent's API keys
    (``agent.llm_api_key``, ``agent.azure_key``), added later, were dumped in clear text."""
    from signaling.settings import as_dict, load_settings

    settings = load_settings(None, env={
        "CONNVO_RTC_AGENT_LLM_API_KEY": "sk-live-llm", "CONNVO_RTC_AGENT_AZURE_KEY": "az-key",
        "CONNVO_RTC_RECORDING_S3_SECRET_KEY": "s3-secret",
        "CONNVO_RTC_AUTH_SECRET": "a" * 40})
    dumped = repr(as_dict(settings))
    for secret in ("sk-live-llm", "az-key", "s3-secret", "a" * 40):
        assert secret not in dumped
    assert as_dict(settings)["agent"]["azure_key"] == "***"
