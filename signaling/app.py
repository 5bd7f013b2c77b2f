"""The aiohttp application factory: wires settings, store, bus, tokens, hub and API together."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from turn.ice import ice_servers_for

from .admission import IceServersFor
from .api import Api
from .bus import Bus, MemoryBus
from .client_socket import liveness_sweeps, upgrade_handler
from .connections import Connections
from .errors import HubError
from .extras import EXTRAS, missing
from .hub import Hub
from .meetings import MeetingService
from .memory_store import MemoryStore
from .metrics import Metrics
from .mixer import Mixer
from .mixjobs import MemoryMixJobs, MixJobs, RedisMixJobs
from .openapi import build_spec
from .protocol import IceServer
from .recording_storage import open_storage
from .recordings import Recordings
from .redis_bus import RedisBus
from .redis_store import RedisStore, connect
from .scenarios import Scenario, ScenarioError, ScriptCheck, load_scenarios
from .settings import ConfigError, Settings
from .store import Store
from .tapjobs import MemoryTapJobs, RedisTapJobs, TapJobs
from .tasks import cancel_all
from .tokens import TokenService
from .webhook_delivery import DeliveryConfig, WebhookSender
from .webhook_store import MemoryWebhookStore, RedisWebhookStore, WebhookStore
from .webhooks import Signer, Webhooks, endpoint_id
from .workers import PresenceConfig, WorkerRegistry

if TYPE_CHECKING:
    from media.tap.host import TapHost

logger = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
TOKENS_KEY = web.AppKey("tokens", TokenService)
METRICS_KEY = web.AppKey("metrics", Metrics)
STORE_KEY = web.AppKey("store", Store)  # type: ignore[type-abstract]
HUB_KEY = web.AppKey("hub", Hub)
#: Every TCP connection of this worker, counted from accept (read by :class:`server.HubSite`).
CONNECTIONS_KEY = web.AppKey("connections", Connections)

STATIC_DIR = Path(str(resources.files("signaling").joinpath("static")))


def make_ice_servers_for(settings: Settings) -> IceServersFor:
    """The per-user ICE server list: configured STUN, plus TURN with fresh credentials."""
    config = settings.ice_config()

    def for_user(user_id: str) -> list[IceServer]:
        return [IceServer(**entry) for entry in ice_servers_for(user_id, config)]

    return for_user


@dataclass
class LocalUrl:
    """The websocket URL this hub's own tap worker dials (set once the port is bound)."""

    url: str


LOCAL_URL_KEY = web.AppKey("local_url", LocalUrl)
#: Recorded meetings' files and their signed download links.
RECORDINGS_KEY: web.AppKey[Recordings] = web.AppKey("recordings")
MIXER_KEY: web.AppKey[Mixer] = web.AppKey("mixer")
#: The hub's own tap, in its child process (present when ``tap.enabled``).
TAP_HOST_KEY: web.AppKey[TapHost] = web.AppKey("tap_host")


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def local_ws_url(host: str, port: int) -> str:
    """The ``/ws`` URL of a hub listening on ``host:port``, as this machine dials it."""
    connect = _connect_host(host)
    if ":" in connect:  # an IPv6 address
        connect = f"[{connect}]"
    return f"ws://{connect}:{port}/ws"


def _pin_for(host: str) -> tuple[str, ...] | None:
    """The tap of a loopback-only hub keeps its media on loopback too."""
    return ("127.0.0.1",) if _connect_host(host).startswith("127.") else None


def deployment_scenarios(settings: Settings) -> dict[str, Scenario]:
    """The scenarios of ``agent.scenarios_dir`` (empty: the shipped examples), their scripts
    checked by the script brain; a broken file is a :class:`ConfigError` naming it (the hub
    does not start). A hub-only install (no media extra: no agent can run here) checks the
    files' format but not their scripts, and imports nothing of ``media``."""
    check: ScriptCheck | None = None
    if not missing(EXTRAS["media"]):
        from media.agent.script import check_script

        check = check_script
    else:
        logger.info("scenario scripts not checked: the media extra is not installed")
    try:
        return load_scenarios(settings.agent.scenarios_dir or None, check_script=check)
    except ScenarioError as exc:
        raise ConfigError(f"agent.scenarios_dir: {exc}") from None


def make_webhooks(settings: Settings, store: Store, redis_client: Any, metrics: Metrics,
                  worker_id: str) -> tuple[Webhooks, WebhookSender | None]:
    """The emitter and this worker's sender; with no ``webhooks.urls`` an emitter that does
    nothing and no sender. Events wait in Redis when the hub has Redis, else in memory."""
    config = settings.webhooks
    if not config.urls:
        return Webhooks(), None
    queue: WebhookStore
    if redis_client is not None:
        queue = RedisWebhookStore(redis_client, max_queued=config.max_queued,
                                  key_ttl_s=settings.redis.key_ttl_s)
    else:
        queue = MemoryWebhookStore(max_queued=config.max_queued)
    endpoints = {endpoint_id(url): url for url in config.urls}
    sender = WebhookSender(
        store=queue, endpoints=endpoints, signer=Signer(config.secret), worker_id=worker_id,
        metrics=metrics, config=DeliveryConfig(
            timeout_s=config.timeout_s, backoff_initial_s=config.backoff_initial_s,
            backoff_max_s=config.backoff_max_s, max_age_s=config.max_age_s,
            lease_s=config.lease_s, concurrency=config.concurrency,
            poll_interval_s=config.poll_interval_s,
            stats_interval_s=min(5.0, max(config.poll_interval_s, 0.2))))
    metrics.bind_webhooks(sender)
    webhooks = Webhooks(store=queue, endpoints=tuple(endpoints), state=store, metrics=metrics,
                        on_queued=sender.wake)
    return webhooks, sender


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    bus: Bus | None = None,
    worker_id: str | None = None,
    inline_tap: bool = False,
) -> web.Application:
    """Build the hub application. ``store``/``bus`` default to in-memory ones.

    With ``tap.enabled`` the hub's tap worker runs in a child process
    (:class:`~media.tap.host.TapHost`). ``inline_tap`` runs it on the hub's own event loop
    instead, as it ran before it had a process: only for benchmarks and tests that look
    inside the tap (never ``serve``: its audio work then delays the hub's signalling)."""
    scenarios = deployment_scenarios(settings)  # first: a broken file stops the start here
    app = web.Application(client_max_size=settings.limits.max_body_bytes)
    tokens = TokenService(
        secrets=settings.auth.secrets, max_ttl_s=settings.auth.max_token_ttl_s,
        default_ttl_s=settings.auth.token_ttl_s, jwks=settings.auth.jwks,
        user_audience=settings.auth.user_audience, user_issuer=settings.auth.user_issuer,
    )
    worker_id = worker_id or f"w_{os.getpid()}_{secrets.token_hex(3)}"
    redis_client: Any = None
    if store is None and settings.redis.url:
        redis_client = connect(settings.redis.url, cluster=settings.redis.cluster,
                               timeout_s=settings.redis.timeout_s)
        cluster = settings.redis.cluster or "+cluster://" in settings.redis.url
        store = RedisStore(redis_client, key_ttl_s=settings.redis.key_ttl_s)
        bus = RedisBus(redis_client, cluster=cluster,
                       linger_s=settings.redis.bus_linger_ms / 1000)
    store = store if store is not None else MemoryStore(key_ttl_s=settings.redis.key_ttl_s)
    bus = bus if bus is not None else MemoryBus()
    metrics = Metrics()
    ice_servers_for = make_ice_servers_for(settings)
    tap_jobs: TapJobs
    mix_jobs: MixJobs
    registry: WorkerRegistry | None = None
    if redis_client is not None:
        tap_jobs = RedisTapJobs(redis_client, reclaim_after_s=settings.tap.reclaim_after_s,
                                key_ttl_s=settings.redis.key_ttl_s)
        mix_jobs = RedisMixJobs(redis_client,
                                reclaim_after_s=settings.recording.mix_reclaim_after_s,
                                key_ttl_s=settings.redis.key_ttl_s)
        registry = WorkerRegistry(
            redis_client, store, worker_id,
            PresenceConfig(heartbeat_s=settings.redis.heartbeat_s,
                           dead_after_s=settings.redis.dead_after_s,
                           reap_interval_s=settings.redis.reap_interval_s,
                           resume_grace_s=settings.rooms.resume_grace_s),
        )
    else:
        tap_jobs = MemoryTapJobs(reclaim_after_s=settings.tap.reclaim_after_s)
        mix_jobs = MemoryMixJobs(reclaim_after_s=settings.recording.mix_reclaim_after_s)
    webhooks, sender = make_webhooks(settings, store, redis_client, metrics, worker_id)
    hub = Hub(
        settings=settings, store=store, bus=bus, tokens=tokens, ice_servers_for=ice_servers_for,
        metrics=metrics, worker_id=worker_id, tap_jobs=tap_jobs, registry=registry,
        webhooks=webhooks,
    )
    # With port 0 this is a placeholder: server.run (or the test hub) sets the bound port.
    local_url = LocalUrl(local_ws_url(settings.server.host, settings.server.port))
    tap: Any = None  # TapHost (a child process), or a TapWorker with inline_tap
    if settings.tap.enabled:
        from media.tap.config import TapConfig

        tap_config = TapConfig(recognizer=settings.tap.recognizer,
                               processes=settings.tap.processes,
                               reclaim_after_s=settings.tap.reclaim_after_s,
                               max_backlog_s=settings.tap.max_backlog_s,
                               pin_host_addresses=_pin_for(settings.server.host),
                               recording_dir=str(Path(settings.recording.dir).resolve()),
                               recording_s3=settings.s3_config(),
                               agent=dataclasses.asdict(settings.agent))
        if inline_tap:
            from media.tap.worker import TapWorker

            tap = TapWorker(tap_jobs, hub_url=lambda: local_url.url,
                            worker_id=f"tap-{worker_id}", config=tap_config)
        else:
            from media.tap.host import TapHost

            tap = TapHost(tap_jobs, config=tap_config, worker_id=f"tap-{worker_id}",
                          hub_url=lambda: local_url.url,
                          stop_timeout_s=settings.server.shutdown_timeout_s)
            app[TAP_HOST_KEY] = tap
            metrics.bind_tap(tap)
    metrics.bind(lambda: hub.peer_count, lambda: hub.socket_count, lambda: hub.room_count)
    connections = Connections.from_limits(settings.limits, metrics.refusals)
    metrics.bind_connections(lambda: connections.open)
    if isinstance(bus, RedisBus):
        metrics.bind_bus(bus)
    async def on_room_active(meeting: Any, room: Any) -> None:
        await hub.transcripts.ensure_tap(room)

    storage = open_storage(Path(settings.recording.dir).resolve(), settings.s3_config())
    recordings = Recordings(storage, secrets=settings.auth.secrets,
                            url_ttl_s=settings.recording.url_ttl_s,
                            stale_after_s=settings.recording.stale_after_s, store=store,
                            mix_jobs=mix_jobs)
    mixer = Mixer(storage, mix_jobs, worker_id=worker_id, webhooks=webhooks,
                  concurrency=settings.recording.mix_concurrency,
                  cpu_s=settings.recording.mix_cpu_s,
                  stale_after_s=settings.recording.stale_after_s,
                  reclaim_after_s=settings.recording.mix_reclaim_after_s)
    hub.lifecycle.on_room_ended = recordings.room_ended
    service = MeetingService(settings=settings, store=store, rooms=hub.lifecycle, tokens=tokens,
                             ice_servers_for=ice_servers_for, on_room_active=on_room_active,
                             webhooks=webhooks, recordings=recordings,
                             scenarios=scenarios)
    api = Api(settings, tokens, service, metrics)
    app[SETTINGS_KEY] = settings
    app[TOKENS_KEY] = tokens
    app[METRICS_KEY] = metrics
    app[STORE_KEY] = store
    app[HUB_KEY] = hub
    app[CONNECTIONS_KEY] = connections
    app[LOCAL_URL_KEY] = local_url

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        pinger = asyncio.create_task(liveness_sweeps(hub), name="ws-liveness")
        if registry is not None:
            await registry.start(hub.lifecycle.on_reaped, hub.tick)
        if tap is not None:
            await tap.start()
        await storage.start()
        await mixer.start()
        if sender is not None:
            await sender.start()
        logger.info("hub worker %s started (%s state%s)", hub.worker_id,
                    "Redis" if redis_client is not None else "in-memory",
                    "" if tap is None else ", in-process tap" if inline_tap
                    else ", tap in a child process")
        yield
        await cancel_all([pinger])
        if sender is not None:
            await sender.aclose()
        if tap is not None:
            await tap.aclose()
        await mixer.aclose()  # a mix cut short is released to another worker
        await storage.aclose()  # uploads get a last chance; the rest stays in the spool
        if registry is not None:
            await registry.aclose()
        await bus.aclose()
        await store.aclose()
        metrics.refusals.close()

    async def on_shutdown(app: web.Application) -> None:
        if tap is not None:  # first, while the hub still relays its last finals
            await tap.aclose()
        await hub.aclose(settings.server.shutdown_timeout_s)

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        try:
            await store.ping()
        except HubError as exc:
            return web.json_response({"status": "unavailable", "reason": exc.message},
                                     status=503)
        return web.json_response({"status": "ready", "worker": hub.worker_id})

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    async def openapi_view(_: web.Request) -> web.Response:
        return web.json_response(build_spec(settings))

    app.router.add_get("/ws", upgrade_handler(hub))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/api/openapi.json", openapi_view)
    app.router.add_routes(api.routes())
    app.router.add_get("/recordings/{meeting_id}/{name}", recordings.download)
    app[RECORDINGS_KEY] = recordings
    app[MIXER_KEY] = mixer
    if settings.server.demo and STATIC_DIR.is_dir():
        async def index(_: web.Request) -> web.FileResponse:
            return web.FileResponse(STATIC_DIR / "index.html")

        app.router.add_get("/", index)
        app.router.add_static("/static/", STATIC_DIR)
    return app
