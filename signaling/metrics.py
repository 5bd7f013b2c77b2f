"""Prometheus metrics, one registry per app (no process-wide globals)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .connections import RefusalLog
from .protocol import ClientMessage


class Metrics:
    """The hub's metrics. ``peers``/``rooms`` read live counts when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.peers = Gauge("connvo_connected_peers", "Joined websocket peers on this worker",
                           registry=r)
        self.sockets = Gauge("connvo_open_websockets", "Open websockets on this worker",
                             registry=r)
        self.connections = Gauge(
            "connvo_open_connections", "Open TCP connections on this worker, of every kind: "
            "websockets, HTTP, and connections still sending their request head", registry=r)
        self.refused = Counter(
            "connvo_refused_connections", "Connections refused or cut before they were served, "
            "by reason (head-timeout, head-too-large, per-address, server-full, evicted, "
            "websockets-full)", ["reason"], registry=r)
        #: Counts refusals in ``refused`` and logs them at a bounded rate.
        self.refusals = RefusalLog(self.refused)
        self.rooms = Gauge("connvo_active_rooms", "Rooms with peers on this worker", registry=r)
        self.relayed = Counter("connvo_relayed_messages", "Offers, answers and candidates relayed",
                               registry=r)
        self.messages = Counter("connvo_ws_messages", "Websocket messages received, by type",
                                ["type"], registry=r)
        self.errors = Counter("connvo_errors", "Errors sent to clients, by code", ["code"],
                              registry=r)
        self.join_latency = Histogram(
            "connvo_join_latency_seconds", "Time from join frame to joined frame",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        #: The ``messages`` child of every client message type, so the hot path does not
        #: resolve labels per frame.
        self.message_counters = {
            cls: self.messages.labels(type=cls.__struct_config__.tag)
            for cls in ClientMessage.__args__  # type: ignore[attr-defined]
        }
        self.api_requests = Counter("connvo_api_requests", "HTTP API requests by endpoint and status",
                                    ["endpoint", "status"], registry=r)
        self.transcript_dropped = Counter(
            "connvo_transcript_segments_dropped", "Segments of speech a transcription tap "
            "reported it could not transcribe (recogniser behind or restarting), in rooms on "
            "this worker", registry=r)
        self.transcript_status = Counter(
            "connvo_transcript_status", "transcript-status changes the taps reported, by state: "
            "delayed (recogniser behind, partials paused), dropping (speech not transcribed), "
            "live (caught up)", ["state"], registry=r)

        self.webhooks_queued = Counter(
            "connvo_webhooks_queued", "Webhook events this worker queued, one per endpoint",
            registry=r)
        self.webhooks_delivered = Counter(
            "connvo_webhooks_delivered", "Webhook events this worker delivered (a 2xx answer)",
            registry=r)
        self.webhook_attempts_failed = Counter(
            "connvo_webhook_attempts_failed", "Webhook delivery attempts of this worker that "
            "failed (to be retried unless given up), by reason: timeout, connection, http_<status>",
            ["reason"], registry=r)
        self.webhooks_failed = Counter(
            "connvo_webhooks_failed", "Webhook events given up, never delivered, by reason: "
            "expired (still failing after webhooks.max_age_s), gone (HTTP 410), full (queue "
            "full when emitted), unavailable (store unreachable when emitted)", ["reason"],
            registry=r)

    def bind(self, peers: Callable[[], float], sockets: Callable[[], float],
             rooms: Callable[[], float]) -> None:
        """Have the gauges read live values from the hub when scraped."""
        self.peers.set_function(peers)
        self.sockets.set_function(sockets)
        self.rooms.set_function(rooms)

    def bind_connections(self, open_connections: Callable[[], float]) -> None:
        """Have ``connvo_open_connections`` read the live count when scraped."""
        self.connections.set_function(open_connections)

    def bind_bus(self, bus: object) -> None:
        """Expose the Redis bus's own counters (``envelopes_sent``, ``messages_sent``,
        ``dropped``) when scraped: envelopes per message is the batching the bus achieves."""
        self.registry.register(_BusCollector(bus))

    def bind_tap(self, tap: object) -> None:
        """Expose the hub's own tap process (:class:`~media.tap.host.TapHost`: ``warm``,
        ``restarts``, ``claimed``) when scraped."""
        self.registry.register(_TapCollector(tap))

    def bind_webhooks(self, sender: object) -> None:
        """Expose the webhook queue's depth and the age of its oldest undelivered event (read
        from the store every few seconds by :class:`~signaling.webhook_delivery.WebhookSender`,
        for every worker and endpoint) when scraped."""
        self.registry.register(_WebhookCollector(sender))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _BusCollector:
    def __init__(self, bus: object) -> None:
        self.bus = bus

    def collect(self) -> Iterator[CounterMetricFamily]:
        for attr, name, doc in (
                ("envelopes_sent", "connvo_bus_envelopes", "Frames/actions sent to other workers"),
                ("messages_sent", "connvo_bus_messages", "Redis messages carrying them"),
                ("dropped", "connvo_bus_dropped", "Envelopes dropped (bus backed up or Redis down)")):
            yield CounterMetricFamily(name, doc, value=getattr(self.bus, attr, 0))

    def describe(self) -> list[CounterMetricFamily]:
        return []


class _WebhookCollector:
    def __init__(self, sender: object) -> None:
        self.sender = sender

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = getattr(self.sender, "stats", None)
        pending = getattr(stats, "pending", 0)
        oldest = getattr(stats, "oldest_ms", None)
        yield GaugeMetricFamily(
            "connvo_webhooks_pending", "Webhook events queued and not yet delivered (every "
            "worker, every endpoint)", value=float(pending))
        age = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)
        yield GaugeMetricFamily(
            "connvo_webhooks_oldest_pending_seconds", "Age of the oldest undelivered webhook "
            "event (0: none waits)", value=age)

    def describe(self) -> list[GaugeMetricFamily]:
        return []


class _TapCollector:
    def __init__(self, tap: object) -> None:
        self.tap = tap

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "connvo_tap_process_warm", "1 while this hub's tap process runs with its "
            "recognisers started and warm", value=float(bool(getattr(self.tap, "warm", False))))
        yield CounterMetricFamily(
            "connvo_tap_process_restarts", "Times this hub's tap process was started again "
            "after it exited", value=getattr(self.tap, "restarts", 0))
        yield CounterMetricFamily(
            "connvo_tap_jobs_claimed", "Tap jobs this hub's tap process claimed",
            value=getattr(self.tap, "claimed", 0))

    def describe(self) -> list[CounterMetricFamily]:
        return []
