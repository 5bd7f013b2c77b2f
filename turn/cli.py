"""``connvo-rtc turn``: render a coturn config, or run and supervise ``turnserver``.

Settings come from, in increasing priority: defaults, the ``[turn]`` table of ``--config FILE``,
the environment (``CONNVO_RTC_TURN_SECRET``, comma-separated) and command-line flags. Other
tables in the file are ignored, so the hub's config file can carry ``[turn]`` too. Keys of
``[turn]`` (see ``config/turn.example.toml``)::

    realm, secrets, listen_ips, port, tls_port, relay_ips, external_ips, min_port, max_port,
    cert, pkey, user_quota, total_quota, max_bps, allow_private_peers, allow_loopback_peers,
    allowed_peer_ips, verbose, binary

Exit status: 0 after a clean stop, 2 for a bad configuration, 1 when ``turnserver`` cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .coturn import TurnServerConfig, render_turnserver_config
from .errors import TurnConfigError, TurnServerError
from .supervisor import TurnServerSupervisor

logger = logging.getLogger(__name__)

ENV_SECRET = "CONNVO_RTC_TURN_SECRET"
DEFAULT_REALM = "connvo-rtc"

#: ``[turn]`` keys and their kinds: "str", "int", "bool" or "list" (of strings).
CONFIG_KEYS: dict[str, str] = {
    "realm": "str",
    "secrets": "list",
    "listen_ips": "list",
    "port": "int",
    "tls_port": "int",
    "relay_ips": "list",
    "external_ips": "list",
    "min_port": "int",
    "max_port": "int",
    "cert": "str",
    "pkey": "str",
    "user_quota": "int",
    "total_quota": "int",
    "max_bps": "int",
    "allow_private_peers": "bool",
    "allow_loopback_peers": "bool",
    "allowed_peer_ips": "list",
    "verbose": "bool",
    "binary": "str",
}


def _split(values: list[str] | None) -> list[str] | None:
    """Flatten repeatable, comma-separated option values."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def add_parser(subparsers: Any) -> None:
    """Register the ``turn`` subcommand on ``subparsers`` (from ``add_subparsers()``)."""
    p = subparsers.add_parser(
        "turn",
        help="render a coturn config or run a supervised turnserver",
        description="Render a turnserver (coturn) config for TURN REST credentials, or run "
        "turnserver under supervision until SIGINT/SIGTERM.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with a [turn] table")
    p.add_argument("--realm", help=f"TURN realm (default {DEFAULT_REALM})")
    p.add_argument(
        "--listen-ip",
        action="append",
        metavar="IP",
        help="listening IP, repeatable (default 127.0.0.1)",
    )
    p.add_argument("--port", type=int, help="listening port, UDP and TCP (default 3478)")
    p.add_argument(
        "--tls-port", type=int, help="TLS listening port (needs --cert/--pkey; default 5349)"
    )
    p.add_argument("--relay-ip", action="append", metavar="IP", help="relay IP, repeatable")
    p.add_argument(
        "--external-ip", action="append", metavar="PUBLIC[/PRIVATE]", help="NAT mapping, repeatable"
    )
    p.add_argument("--min-port", type=int, help="lowest relay port (default 49152)")
    p.add_argument("--max-port", type=int, help="highest relay port (default 65535)")
    p.add_argument(
        "--secret",
        action="append",
        metavar="SECRET",
        help=f"shared secret(s), repeatable or comma-separated; the first is the hub's signing "
        f"secret (env {ENV_SECRET})",
    )
    p.add_argument("--cert", help="TLS certificate (PEM)")
    p.add_argument("--pkey", help="TLS private key (PEM)")
    p.add_argument("--user-quota", type=int, help="concurrent allocations per username")
    p.add_argument("--total-quota", type=int, help="concurrent allocations in total")
    p.add_argument("--max-bps", type=int, help="bytes per second per session")
    p.add_argument(
        "--allow-loopback-peers",
        action="store_true",
        default=None,
        help="allow relaying to loopback (dev only)",
    )
    p.add_argument(
        "--allow-private-peers",
        action="store_true",
        default=None,
        help="allow relaying to private networks",
    )
    p.add_argument(
        "--verbose-turnserver",
        dest="verbose",
        action="store_true",
        default=None,
        help="log every TURN session",
    )
    p.add_argument("--binary", help="turnserver executable (default: turnserver on PATH)")
    p.add_argument(
        "--print-config", action="store_true", help="print the turnserver config and exit"
    )
    p.add_argument("--redact", action="store_true", help="with --print-config: hide the secrets")
    p.set_defaults(func=run)


def load_turn_table(path: str | Path) -> dict[str, Any]:
    """Read the ``[turn]`` table of a TOML file (empty if absent).

    Raises :class:`TurnConfigError` for an unreadable file, bad TOML or a bad key or value.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TurnConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TurnConfigError(f"{path}: invalid TOML: {exc}") from None
    table = data.get("turn", {})
    if not isinstance(table, dict):
        raise TurnConfigError(f"{path}: [turn] must be a table")
    return _check_table(table, str(path))


def _check_table(table: Mapping[str, Any], origin: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in table.items():
        kind = CONFIG_KEYS.get(key)
        if kind is None:
            raise TurnConfigError(
                f"{origin}: unknown key turn.{key} (known: {', '.join(CONFIG_KEYS)})"
            )
        if kind == "list" and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
        }[kind]
        if not ok:
            # Never echo the value: it may be a secret.
            raise TurnConfigError(f"{origin}: turn.{key} must be {_KIND_NAMES[kind]}")
        result[key] = tuple(value) if kind == "list" else value
    return result


_KIND_NAMES = {
    "str": "a string",
    "int": "an integer",
    "bool": "true or false",
    "list": "a list of strings",
}


def build_config(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[TurnServerConfig, str]:
    """Merge file, environment and flags into a config and the binary name.

    Raises :class:`TurnConfigError` with a message fit for the user.
    """
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_turn_table(args.config))
    env_secrets = _split([env[ENV_SECRET]]) if env.get(ENV_SECRET) else None
    if env_secrets:
        values["secrets"] = tuple(env_secrets)
    flags: dict[str, Any] = {
        "realm": args.realm,
        "secrets": _split(args.secret),
        "listen_ips": _split(args.listen_ip),
        "port": args.port,
        "tls_port": args.tls_port,
        "relay_ips": _split(args.relay_ip),
        "external_ips": _split(args.external_ip),
        "min_port": args.min_port,
        "max_port": args.max_port,
        "cert": args.cert,
        "pkey": args.pkey,
        "user_quota": args.user_quota,
        "total_quota": args.total_quota,
        "max_bps": args.max_bps,
        "allow_loopback_peers": args.allow_loopback_peers,
        "allow_private_peers": args.allow_private_peers,
        "verbose": args.verbose,
        "binary": args.binary,
    }
    for key, value in flags.items():
        if value is not None:
            values[key] = tuple(value) if isinstance(value, list) else value
    binary = values.pop("binary", "turnserver")
    values.setdefault("realm", DEFAULT_REALM)
    if not values.get("secrets"):
        raise TurnConfigError(
            f"no TURN secret: pass --secret, set {ENV_SECRET} or put secrets in the [turn] table"
        )
    return TurnServerConfig(**values), binary


def run(args: argparse.Namespace) -> int:
    """Entry point of ``connvo-rtc turn``: print the config, or supervise ``turnserver``."""
    try:
        config, binary = build_config(args, os.environ)
    except TurnConfigError as exc:
        print(f"connvo-rtc turn: error: {exc.message}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(render_turnserver_config(config, redact=args.redact))
        return 0
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    try:
        return asyncio.run(serve(config, binary=binary))
    except TurnServerError as exc:
        print(f"connvo-rtc turn: error: {exc.message}", file=sys.stderr)
        return 1


async def serve(config: TurnServerConfig, *, binary: str = "turnserver") -> int:
    """Supervise ``turnserver`` until SIGINT or SIGTERM; return the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with TurnServerSupervisor(config, binary=binary) as supervisor:
            try:
                pid = await supervisor.wait_ready(timeout=10.0)
            except TurnServerError as exc:
                logger.error("%s", exc.message)
            else:
                logger.info(
                    "turnserver (pid %d) listening on %s port %d%s",
                    pid,
                    ", ".join(config.listen_ips) or "all interfaces",
                    config.port,
                    f", TLS port {config.effective_tls_port}" if config.tls_enabled else "",
                )
            await stop.wait()
            logger.info("signal received, stopping turnserver")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m turn.cli turn ...``); ``connvo-rtc turn`` is the usual one."""
    parser = argparse.ArgumentParser(prog="connvo-rtc")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
