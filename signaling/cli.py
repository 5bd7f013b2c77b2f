"""``connvo-rtc``: the command line.

``serve`` runs the hub, ``token`` mints a join token, ``webhook-secret`` makes a webhook
signing secret, ``turn`` renders/runs coturn. Bad settings
print one clear line and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .settings import ConfigError, Settings, load_settings

logger = logging.getLogger("connvo_rtc")


def _serve_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    server: dict[str, Any] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    if args.public_url is not None:
        server["public_url"] = args.public_url
    if args.workers is not None:
        server["workers"] = args.workers
    if args.dev_on_network:
        server["dev_on_network"] = True
    if server:
        overrides["server"] = server
    auth: dict[str, Any] = {}
    if args.auth_secret is not None:
        auth["secrets"] = args.auth_secret
    if args.jwks is not None:
        auth["jwks"] = args.jwks
    if auth:
        overrides["auth"] = auth
    redis: dict[str, Any] = {}
    if args.redis is not None:
        redis["url"] = args.redis
    if args.redis_cluster:
        redis["cluster"] = True
    if redis:
        overrides["redis"] = redis
    if args.no_tap:
        overrides["tap"] = {"enabled": False}
    return overrides


def _has_password(url: str) -> bool:
    """Whether a Redis URL carries a password (``redis://:pw@host``, ``redis://u:pw@host``,
    ``?password=pw``)."""
    try:
        parts = urlsplit(url)
        return bool(parts.password) or bool(parse_qs(parts.query).get("password"))
    except ValueError:
        return False


def _dev_banner(settings: Settings) -> None:
    bar = "!" * 78
    logger.warning(bar)
    logger.warning("DEV MODE: no auth secret configured (--auth-secret / CONNVO_RTC_AUTH_SECRET).")
    logger.warning("A random secret was generated for this run; tokens die with the process.")
    logger.warning("POST /api/dev/login hands a user token to anyone who asks. Never expose this.")
    logger.warning(bar)


def serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config, overrides=_serve_overrides(args))
    except ConfigError as exc:
        print(f"connvo-rtc: configuration error: {exc}", file=sys.stderr)
        return 1
    if settings.tap.enabled:  # the hub's tap (its child process) is an aiortc peer: the tap extra
        from .extras import missing, tap_modules

        if absent := missing(tap_modules(settings.tap.recognizer)):
            print(f"connvo-rtc: the transcription tap needs {', '.join(absent)}: "
                  "install connvo-rtc[tap] or pass --no-tap", file=sys.stderr)
            return 1
    from .connections import ensure_fd_limit

    try:  # before workers start: they inherit a raised limit
        ensure_fd_limit(settings.limits)
    except ConfigError as exc:
        print(f"connvo-rtc: configuration error: {exc}", file=sys.stderr)
        return 1
    if args.redis is not None and _has_password(args.redis) and args.worker_index is None:
        logger.warning("--redis carries a password, which anyone on this machine can read in "
                       "`ps`: give the URL in CONNVO_RTC_REDIS_URL or [redis] url of --config")
    if settings.server.workers > 1 and args.worker_index is None:
        from .multiworker import run_workers

        if settings.dev_mode:
            print("connvo-rtc: configuration error: --workers > 1 needs an auth secret shared "
                  "by the workers (--auth-secret or CONNVO_RTC_AUTH_SECRET)", file=sys.stderr)
            return 1
        return run_workers(sys.argv[1:], settings.server.workers,
                           stop_timeout_s=settings.server.shutdown_timeout_s + 10)
    try:
        # Imported only once the settings are good: a bad config fails fast.
        from .app import create_app
        from .server import run

        app = create_app(settings)
    except ConfigError as exc:
        print(f"connvo-rtc: configuration error: {exc}", file=sys.stderr)
        return 1
    if settings.dev_mode:
        _dev_banner(settings)
    host, port = settings.server.host, settings.server.port

    def listening(bound: int) -> None:
        shown = f"[{host}]" if ":" in host else host or "0.0.0.0"
        logger.info("connvo-rtc hub on http://%s:%d (demo page at /, API spec at "
                    "/api/openapi.json)", shown, bound)

    try:  # uvloop when installed (a dependency on Linux): a cheaper event loop per message
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    run(app, host, port, shutdown_timeout=settings.server.shutdown_timeout_s,
        reuse_port=True if settings.server.workers > 1 else None, on_listening=listening)
    return 0


def token(args: argparse.Namespace) -> int:
    from .errors import HubError
    from .tokens import TokenService

    secrets = args.secret or os.environ.get("CONNVO_RTC_AUTH_SECRET", "")
    secret_list = tuple(s.strip() for s in secrets.split(",") if s.strip())
    if not secret_list:
        print("connvo-rtc token: give --secret or set CONNVO_RTC_AUTH_SECRET", file=sys.stderr)
        return 1
    service = TokenService(secrets=secret_list, max_ttl_s=args.max_ttl,
                           default_ttl_s=min(3600, args.max_ttl))
    try:
        jwt, expires = service.mint_join(args.room, args.user, args.role, name=args.name or "",
                                         ttl_s=args.ttl)
    except HubError as exc:
        print(f"connvo-rtc token: {exc.message}", file=sys.stderr)
        return 1
    print(jwt)
    if args.verbose:
        print(f"room={args.room} user={args.user} role={args.role} expires={expires}",
              file=sys.stderr)
    return 0


def webhook_secret(args: argparse.Namespace) -> int:
    from .webhooks import new_secret

    print(new_secret())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connvo-rtc", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default=os.environ.get("CONNVO_RTC_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the signalling hub")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8080)")
    p.add_argument("--config", help="TOML config file (see config/connvo-rtc.toml)")
    p.add_argument("--auth-secret", help="comma-separated HS256 secrets; the first signs "
                   "(env CONNVO_RTC_AUTH_SECRET)")
    p.add_argument("--jwks", help="JWKS file or URL for RS256 user tokens")
    p.add_argument("--public-url", help="base URL clients reach this hub at (for wsUrl)")
    p.add_argument("--redis", help="shared state: redis://, rediss:// or redis+cluster:// URL "
                   "(one with a password: env CONNVO_RTC_REDIS_URL instead, --redis shows in ps)")
    p.add_argument("--redis-cluster", action="store_true", help="the --redis URL is a Cluster")
    p.add_argument("--workers", type=int, help="worker processes on the port (needs --redis)")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dev-on-network", action="store_true",
                   help="let dev mode (no auth secret: anyone can get a token) listen on a "
                        "non-loopback --host")
    p.add_argument("--no-tap", action="store_true",
                   help="no transcription tap process of this hub (run `connvo-rtc tap` workers "
                        "instead)")
    p.set_defaults(func=serve)

    t = sub.add_parser("token", help="mint a join token for a room")
    t.add_argument("--secret", help="HS256 secret(s), comma-separated (env CONNVO_RTC_AUTH_SECRET)")
    t.add_argument("--room", required=True, help="room id")
    t.add_argument("--user", required=True, help="user id")
    t.add_argument("--role", default="participant", choices=["host", "participant", "observer"])
    t.add_argument("--name", help="display name")
    t.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    t.add_argument("--max-ttl", type=int, default=86_400, help="refuse TTLs above this")
    t.add_argument("-v", "--verbose", action="store_true")
    t.set_defaults(func=token)

    w = sub.add_parser("webhook-secret", help="print a new webhook signing secret (whsec_...) "
                       "for webhooks.secret / CONNVO_RTC_WEBHOOKS_SECRET")
    w.set_defaults(func=webhook_secret)

    # Subcommands owned by the other packages register themselves; one whose extra is not
    # installed stands in with the command to install it.
    import importlib

    from .extras import EXTRAS, add_unavailable_command

    for module, command, extra in (("turn.cli", "turn", ""),
                                   ("media.bot_load.cli", "loadtest", "loadtest"),
                                   ("media.tap.cli", "tap", "tap")):
        try:
            importlib.import_module(module).add_parser(sub)
        except ModuleNotFoundError as exc:
            absent = (exc.name or "").split(".")[0]
            if extra and absent in EXTRAS[extra]:
                add_unavailable_command(sub, command, extra, absent)
            elif exc.name is None or not module.startswith(exc.name):
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = args.func(args)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
