"""``RedisBus``: worker-to-worker delivery over Redis pub/sub.

Each worker subscribes to its own channel ``cr:bus:{<worker>}`` (sharded pub/sub on a Cluster,
so a channel lives on one shard and the bus scales with the cluster). Sending never waits for
Redis: envelopes go into one bounded FIFO per bus, drained by one writer task that pipelines
what has accumulated. One FIFO and one connection keep envelopes from one worker to another in
the order they were sent, which keeps every sender→receiver pair in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .bus import Envelope, Handler, pack, unpack
from .errors import Unavailable
from .tasks import TaskSet, cancel_all

logger = logging.getLogger(__name__)


def channel(worker_id: str) -> str:
    return f"cr:bus:{{{worker_id}}}"


class RedisBus:
    """Point-to-point envelopes between hub workers through Redis."""

    def __init__(self, client: Any, *, cluster: bool = False, queue_size: int = 10_000,
                 batch: int = 1024, linger_s: float = 0.008) -> None:
        self.client = client
        self.cluster = cluster
        self._queue: asyncio.Queue[tuple[str, Envelope]] = asyncio.Queue(queue_size)
        self._batch = batch
        self._linger_s = linger_s
        self._tasks: list[asyncio.Task[None]] = []
        self._local = TaskSet("redis bus", logger=logger)
        self._pubsub: Any = None
        self._worker_id = ""
        self._handler: Handler | None = None
        self.dropped = 0
        self.envelopes_sent = 0
        self.messages_sent = 0

    async def start(self, worker_id: str, handler: Handler) -> None:
        self._worker_id = worker_id
        self._handler = handler
        if self.cluster:
            # Learn the slot map first: a cluster pubsub made before it cannot route.
            await self.client.initialize()
        self._tasks = [
            asyncio.create_task(self._reader(), name=f"bus-reader-{worker_id}"),
            asyncio.create_task(self._writer(), name=f"bus-writer-{worker_id}"),
        ]

    def send(self, worker_id: str, envelope: Envelope) -> None:
        if worker_id == self._worker_id and self._handler is not None:
            self._spawn_local(envelope)  # never happens in the hub; cheap if it does
            return
        try:
            self._queue.put_nowait((channel(worker_id), envelope))
        except asyncio.QueueFull:
            self.dropped += 1
            raise Unavailable("cross-worker queue full (Redis slow or unreachable)") from None

    def _spawn_local(self, envelope: Envelope) -> None:
        assert self._handler is not None
        self._local.spawn(self._handler(envelope), "deliver locally")

    async def _writer(self) -> None:
        """Publish what has accumulated: one message per receiving worker, holding all of its
        envelopes in order, all in one pipeline (one round trip). Under load (the last publish
        was less than ten lingers ago) it waits ``linger_s`` after the first envelope for more,
        so many frames share one message; a quiet bus publishes at once."""
        publish = "spublish" if self.cluster else "publish"
        loop = asyncio.get_running_loop()
        last = -1e9
        while True:
            batches: dict[str, list[Envelope]] = {}
            chan, envelope = await self._queue.get()
            now = loop.time()
            if self._linger_s > 0 and now - last < 10 * self._linger_s \
                    and self._queue.qsize() < self._batch:
                await asyncio.sleep(self._linger_s)
            last = now
            batches[chan] = [envelope]
            count = 1
            while count < self._batch and not self._queue.empty():
                chan, envelope = self._queue.get_nowait()
                batches.setdefault(chan, []).append(envelope)
                count += 1
            messages = [(chan, pack(envelopes)) for chan, envelopes in batches.items()]
            for attempt in range(3):
                try:
                    if len(messages) == 1 or self.cluster:
                        for chan, data in messages:
                            await getattr(self.client, publish)(chan, data)
                    else:
                        pipe = self.client.pipeline(transaction=False)
                        for chan, data in messages:
                            pipe.publish(chan, data)
                        await pipe.execute()
                    self.envelopes_sent += count
                    self.messages_sent += len(messages)
                    break
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    if attempt == 2:
                        self.dropped += count
                        logger.warning("bus: dropped %d envelopes, Redis unreachable: %s",
                                       count, exc)
                    else:
                        await asyncio.sleep(0.2)

    async def _reader(self) -> None:
        """Subscribe and dispatch; resubscribe with back-off when Redis goes away."""
        chan = channel(self._worker_id)
        backoff = 0.2
        while True:
            pubsub = self.client.pubsub()
            self._pubsub = pubsub
            try:
                if self.cluster:
                    await pubsub.ssubscribe(chan)
                else:
                    await pubsub.subscribe(chan)
                backoff = 0.2
                while True:
                    if self.cluster:
                        message = await pubsub.get_sharded_message(
                            ignore_subscribe_messages=True, timeout=1.0)
                    else:  # blocks until a message: no timer per message
                        message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                           timeout=None)
                    if message is None or message.get("type") not in ("message", "smessage"):
                        continue
                    try:
                        envelopes = unpack(message["data"])
                    except (msgspec.DecodeError, TypeError):  # a foreign publisher
                        logger.warning("bus: undecodable envelope on %s", chan)
                        continue
                    for envelope in envelopes:
                        if self._handler is None:
                            break
                        try:
                            await self._handler(envelope)
                        except Exception:  # one bad envelope must not stop the worker's inbox
                            logger.exception("bus: handler failed on a %s envelope",
                                             envelope.kind)
            except asyncio.CancelledError:
                raise
            except (RedisError, RedisClusterException, OSError) as exc:
                logger.warning("bus: subscription to %s lost (%s); retrying in %.1f s", chan,
                               exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def aclose(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []
