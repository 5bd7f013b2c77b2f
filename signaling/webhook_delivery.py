"""Delivering queued webhook events: :class:`WebhookSender`, one per hub worker.

``concurrency`` loops each claim a due lane (one meeting's events for one endpoint, see
:mod:`~signaling.webhook_store`), ``POST`` its head event signed for this attempt, and record
the outcome: delivered (any 2xx), retried after an exponential back-off with jitter (capped at
``backoff_max_s``; a ``Retry-After`` is honoured up to the cap), or given up (HTTP 410 Gone, or
still failing ``max_age_s`` after the event happened). Redirects are not followed (a 3xx is a
failure: the spec asks the operator to fix the URL). Every attempt is logged with the event id,
type, meeting, endpoint, status and duration, and counted in the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import aiohttp

from .errors import HubError
from .tasks import cancel_all
from .webhook_store import Lease, QueueStats, WebhookStore
from .webhooks import Signer, safe_url

if TYPE_CHECKING:
    from .metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryConfig:
    """How delivery behaves (the ``[webhooks]`` settings, in seconds)."""

    timeout_s: float = 15.0
    """One attempt's limit: connect, send, response."""
    backoff_initial_s: float = 5.0
    """The wait after the first failed attempt; doubled after each further one."""
    backoff_max_s: float = 3600.0
    """The longest wait between attempts."""
    max_age_s: float = 86_400.0
    """An event still failing this long after it happened is given up."""
    lease_s: float = 30.0
    """How long a claimed lane stays this worker's (above ``timeout_s``)."""
    concurrency: int = 4
    """Lanes delivered at once."""
    poll_interval_s: float = 1.0
    """The longest idle wait before looking for due lanes again."""
    stats_interval_s: float = 5.0
    """Seconds between refreshes of the pending / oldest-age gauges."""


def backoff_s(attempts: int, config: DeliveryConfig,
              rand: Callable[[], float] = random.random) -> float:
    """The wait after ``attempts`` failed attempts: ``initial * 2**(attempts-1)`` capped at
    ``backoff_max_s``, then 50..100 % of it at random (so a receiver that failed for everyone
    at once is not retried by everyone at once)."""
    base = config.backoff_initial_s * 2 ** min(max(attempts - 1, 0), 40)
    return min(base, config.backoff_max_s) * (0.5 + 0.5 * rand())


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from now."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


class WebhookSender:
    """This worker's delivery loops; ``endpoints`` maps endpoint ids to their URLs."""

    def __init__(self, *, store: WebhookStore, endpoints: Mapping[str, str], signer: Signer,
                 config: DeliveryConfig, worker_id: str, metrics: Metrics | None = None) -> None:
        self.store = store
        self.endpoints = dict(endpoints)
        self.signer = signer
        self.config = config
        self.worker_id = worker_id
        self.metrics = metrics
        #: The last stats read from the store (the gauges read them when scraped).
        self.stats = QueueStats(0, None)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._store_down_logged = False

    def wake(self) -> None:
        """An event was queued here: look now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        # No proxies from the environment (trust_env=False), no cookies kept between
        # receivers: each request goes straight to its configured URL.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            connector=aiohttp.TCPConnector(limit=max(4, self.config.concurrency)))
        self._tasks = [asyncio.create_task(self._loop(i), name=f"webhooks-{i}")
                       for i in range(self.config.concurrency)]
        self._tasks.append(asyncio.create_task(self._stats_loop(), name="webhook-stats"))
        logger.info("webhooks: delivering to %d endpoint(s) with %d loop(s)",
                    len(self.endpoints), self.config.concurrency)

    async def aclose(self) -> None:
        """Stop delivering; an attempt cut short is handed back (or, when that fails, stays
        leased until its lease runs out) and delivered again, same id. Idempotent."""
        await cancel_all(self._tasks)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ loops

    async def _loop(self, index: int) -> None:
        while True:
            try:
                await self._step()
            except Exception:  # a bug or an unexpected Redis reply: keep delivering
                logger.exception("webhooks: delivery loop %d failed; going on", index)
                await asyncio.sleep(self.config.poll_interval_s)

    async def _step(self) -> None:
        """Claim one due lane and attempt its head, or wait for one."""
        try:
            lease = await self.store.claim(self.worker_id, list(self.endpoints),
                                           int(self.config.lease_s * 1000))
            self._store_down_logged = False
        except HubError as exc:
            if not self._store_down_logged:
                self._store_down_logged = True
                logger.warning("webhooks: cannot read the queue: %s", exc.message)
            lease = None
        if lease is None:
            await self._idle()
            return
        self._wake.set()  # there may be more due lanes: let another loop look too
        try:
            await self.attempt(lease)
        except asyncio.CancelledError:
            # Stopping mid-attempt: hand the lane back so another worker need not wait for
            # the lease to run out (it delivers the same event again, same id).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release(lease), 1.0)
            raise
        except HubError as exc:  # the store went away between claim and outcome
            logger.warning("meeting=%s webhook %s: outcome not recorded (%s); it is "
                           "delivered again once the lease runs out", lease.event.meeting_id,
                           lease.event.event_id, exc.message)

    async def _idle(self) -> None:
        wait = self.config.poll_interval_s
        with contextlib.suppress(HubError):
            due = await self.store.next_due_ms(list(self.endpoints))
            if due is not None:
                wait = min(wait, max(0.0, due / 1000 - time.time()) + 0.005)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    async def _stats_loop(self) -> None:
        while True:
            try:
                self.stats = await self.store.stats()
            except HubError:
                pass  # the claim loops say so; the gauges keep their last values
            except Exception:
                logger.exception("webhooks: reading the queue's stats failed")
            await asyncio.sleep(self.config.stats_interval_s)

    # ------------------------------------------------------------------ one attempt

    async def attempt(self, lease: Lease) -> None:
        """Deliver ``lease``'s event once and record the outcome in the store."""
        event = lease.event
        url = self.endpoints[lease.endpoint]
        where = safe_url(url)
        attempt = lease.attempts + 1
        started = time.monotonic()
        status: int | None = None
        error = ""
        retry_after: float | None = None
        timestamp = int(time.time())
        session = self._session
        if session is None:
            raise RuntimeError("WebhookSender.attempt before start()")
        try:
            async with asyncio.timeout(self.config.timeout_s):
                async with session.post(
                        url, data=event.body, allow_redirects=False,
                        headers=self.signer.headers(event.event_id, timestamp, event.body)
                ) as resp:
                    status = resp.status
                    retry_after = retry_after_s(resp.headers)
                    await resp.content.read(65_536)  # a little of the body; the rest is dropped
        except TimeoutError:
            error = f"no response within {self.config.timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        took_ms = (time.monotonic() - started) * 1000
        label = (f"meeting={event.meeting_id} webhook {event.event_id} {event.type} -> {where} "
                 f"attempt {attempt}")
        if status is not None and 200 <= status < 300:
            kept = await self.store.delivered(lease)
            self._count("delivered")
            logger.info("%s: delivered, HTTP %d in %.0f ms", label, status, took_ms)
            if not kept:
                logger.warning("%s: its lease had run out before the answer, so another worker "
                               "may deliver it again (same webhook-id)", label)
            return
        reason = error or f"HTTP {status}"
        self._count("attempt_failed", "timeout" if error.startswith("no response") else
                    "connection" if error else f"http_{status}")
        if status == 410:
            await self.store.give_up(lease)
            self._count("failed", "gone")
            logger.error("%s: HTTP 410 Gone: the receiver wants no more events; this one is "
                         "given up (remove the URL from webhooks.urls)", label)
            return
        age_s = time.time() - event.created_ms / 1000
        if age_s >= self.config.max_age_s:
            await self.store.give_up(lease)
            self._count("failed", "expired")
            logger.error("%s: failed (%s) and is %.1f s old, above webhooks.max_age_s: given "
                         "up; the meeting's next event follows", label, reason, age_s)
            return
        delay = backoff_s(attempt, self.config)
        if retry_after is not None:
            delay = min(max(delay, retry_after), self.config.backoff_max_s)
        await self.store.retry(lease, int(delay * 1000))
        logger.warning("%s: failed (%s) after %.0f ms; next attempt in %.1f s", label, reason,
                       took_ms, delay)

    def _count(self, what: str, reason: str = "") -> None:
        m = self.metrics
        if m is None:
            return
        if what == "delivered":
            m.webhooks_delivered.inc()
        elif what == "attempt_failed":
            m.webhook_attempts_failed.labels(reason=reason).inc()
        else:
            m.webhooks_failed.labels(reason=reason).inc()
