"""Where webhook events wait until their receiver took them: ``MemoryWebhookStore`` in one
process (the embedded default: lost on restart), ``RedisWebhookStore`` shared by every worker
and durable as long as Redis is.

Events are kept in *lanes*, one per endpoint and meeting (``<endpoint>:<meeting_id>``), oldest
first. Only a lane's head is ever delivered, and only by the worker holding the lane's lease,
so a meeting's events reach each endpoint in the order they happened, and a receiver failing
on one meeting's events holds up that meeting only.

A lane is in the *due* schedule while it has events, scored by when it may next be tried
(ms). :meth:`WebhookStore.claim` takes a due lane and pushes its score ``lease_ms`` ahead: that
is the lease. The worker then ends the attempt with :meth:`~WebhookStore.delivered`,
:meth:`~WebhookStore.retry` (the score becomes the back-off's end) or
:meth:`~WebhookStore.give_up`; each checks the lease is still the worker's (its owner token),
so a worker that stalled past its lease changes nothing. A worker killed mid-delivery leaves
the lane due again when the lease runs out, and the next worker to claim it redelivers the same
event (same id): delivery is at least once.

Redis keys, all in one Cluster slot (``{wh}``) so each script runs in one slot:

================================  ======  ================================================
``cr:{wh}:lane:<endpoint>:<mid>``  stream  the lane's events (``id``, ``type``, ``c``, ``b``)
``cr:{wh}:due``                    zset    lane -> when it may next be tried (ms, Redis time)
``cr:{wh}:heads``                  zset    lane -> when its head event happened (ms)
``cr:{wh}:owner``                  hash    lane -> lease owner ``<worker> <token>``
``cr:{wh}:tries``                  hash    lane -> ``<entry> <failed attempts>`` of its head
``cr:{wh}:count``                  hash    endpoint -> events queued for it
``cr:{wh}:took:<mid>``             hash    user id -> who took part (JSON), until the end
================================  ======  ================================================
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from .redis_store import unavailable_on_redis_errors
from .webhooks import QueuedEvent

#: People remembered per meeting for ``meeting.ended`` (a bound, not a product limit).
MAX_PARTICIPANTS = 1000


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A claimed lane: its head event, and the proof the claim is ours."""

    lane: str
    endpoint: str
    event: QueuedEvent
    #: The head's position in the lane (a stream entry id in Redis).
    entry: str
    #: Failed attempts at this event so far.
    attempts: int
    owner: str


class QueueStats(msgspec.Struct, frozen=True):
    """Undelivered events (all endpoints), and when the oldest of them happened (unix ms)."""

    pending: int
    oldest_ms: int | None


class WebhookStore(Protocol):
    async def enqueue(self, event: QueuedEvent, endpoints: Sequence[str]) -> list[str]:
        """Append ``event`` to its meeting's lane of every endpoint; the endpoints refused
        because they already hold ``max_queued`` events."""

    async def claim(self, worker_id: str, endpoints: Sequence[str], lease_ms: int
                    ) -> Lease | None:
        """A due lane of one of ``endpoints`` with its head event, leased for ``lease_ms``;
        ``None`` when nothing is due."""

    async def delivered(self, lease: Lease) -> bool:
        """The head was delivered: remove it; False when the lease was no longer ours."""

    async def retry(self, lease: Lease, delay_ms: int) -> bool:
        """The attempt failed: count it and let the lane be tried again in ``delay_ms``."""

    async def give_up(self, lease: Lease) -> bool:
        """Drop the head undelivered (too old, or the receiver said 410 Gone)."""

    async def next_due_ms(self) -> int | None:
        """When the next lane is due (unix ms), or ``None`` when no event waits."""

    async def stats(self) -> QueueStats: ...

    async def note_participant(self, meeting_id: str, user_id: str, info: bytes) -> None:
        """Remember that a person took part in a meeting (for ``meeting.ended``)."""

    async def participants(self, meeting_id: str) -> list[bytes]: ...

    async def forget_participants(self, meeting_id: str) -> None: ...

    async def aclose(self) -> None: ...


def _token(worker_id: str) -> str:
    return f"{worker_id} {secrets.token_hex(8)}"


def _wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Lane:
    events: deque[tuple[int, QueuedEvent]] = field(default_factory=deque)
    due_ms: int = 0
    owner: str = ""
    tries: tuple[int, int] = (0, 0)  # (entry, failed attempts)


class MemoryWebhookStore:
    """:class:`WebhookStore` in this process. ``clock`` (unix ms) is for tests."""

    def __init__(self, *, max_queued: int = 100_000,
                 clock: Callable[[], int] = _wall_ms) -> None:
        self.max_queued = max_queued
        self._clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._count: dict[str, int] = {}
        self._seq = 0
        self._took: dict[str, dict[str, bytes]] = {}

    async def enqueue(self, event: QueuedEvent, endpoints: Sequence[str]) -> list[str]:
        refused = []
        now = self._clock()
        for endpoint in endpoints:
            if self._count.get(endpoint, 0) >= self.max_queued:
                refused.append(endpoint)
                continue
            lane = self._lanes.get(f"{endpoint}:{event.meeting_id}")
            if lane is None:
                lane = self._lanes[f"{endpoint}:{event.meeting_id}"] = _Lane(due_ms=now)
            self._seq += 1
            lane.events.append((self._seq, event))
            self._count[endpoint] = self._count.get(endpoint, 0) + 1
        return refused

    async def claim(self, worker_id: str, endpoints: Sequence[str], lease_ms: int
                    ) -> Lease | None:
        now = self._clock()
        wanted = set(endpoints)
        due = [(lane.due_ms, name) for name, lane in self._lanes.items()
               if lane.due_ms <= now and name.split(":", 1)[0] in wanted]
        if not due:
            return None
        _, name = min(due)
        lane = self._lanes[name]
        entry, event = lane.events[0]
        lane.due_ms = now + lease_ms
        lane.owner = _token(worker_id)
        attempts = lane.tries[1] if lane.tries[0] == entry else 0
        return Lease(lane=name, endpoint=name.split(":", 1)[0], event=event, entry=str(entry),
                     attempts=attempts, owner=lane.owner)

    def _held(self, lease: Lease) -> _Lane | None:
        lane = self._lanes.get(lease.lane)
        if lane is None or lane.owner != lease.owner or not lane.events \
                or str(lane.events[0][0]) != lease.entry:
            return None
        return lane

    async def delivered(self, lease: Lease) -> bool:
        lane = self._held(lease)
        if lane is None:
            return False
        lane.events.popleft()
        self._count[lease.endpoint] -= 1
        if not self._count[lease.endpoint]:
            del self._count[lease.endpoint]
        lane.owner, lane.tries = "", (0, 0)
        if lane.events:
            lane.due_ms = self._clock()
        else:
            del self._lanes[lease.lane]
        return True

    async def retry(self, lease: Lease, delay_ms: int) -> bool:
        lane = self._held(lease)
        if lane is None:
            return False
        lane.tries = (int(lease.entry), lease.attempts + 1)
        lane.due_ms = self._clock() + delay_ms
        lane.owner = ""
        return True

    async def give_up(self, lease: Lease) -> bool:
        return await self.delivered(lease)

    async def next_due_ms(self) -> int | None:
        return min((lane.due_ms for lane in self._lanes.values()), default=None)

    async def stats(self) -> QueueStats:
        heads = [lane.events[0][1].created_ms for lane in self._lanes.values() if lane.events]
        return QueueStats(sum(self._count.values()), min(heads, default=None))

    async def note_participant(self, meeting_id: str, user_id: str, info: bytes) -> None:
        took = self._took.setdefault(meeting_id, {})
        if user_id in took or len(took) < MAX_PARTICIPANTS:
            took[user_id] = info

    async def participants(self, meeting_id: str) -> list[bytes]:
        return list(self._took.get(meeting_id, {}).values())

    async def forget_participants(self, meeting_id: str) -> None:
        self._took.pop(meeting_id, None)

    async def aclose(self) -> None:
        return None


PREFIX = "cr:{wh}:"
DUE, HEADS, OWNER, TRIES, COUNT = (PREFIX + name for name in
                                   ("due", "heads", "owner", "tries", "count"))

# Every script reads the time from Redis, so workers on machines whose clocks differ share
# one schedule. Lane stream keys are built in the scripts from PREFIX (same slot).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS due heads count; ARGV prefix max id type meeting created body endpoints...
ENQUEUE = _NOW + """
local refused = {}
for i = 8, #ARGV do
  local ep = ARGV[i]
  if tonumber(redis.call('HGET', KEYS[3], ep) or '0') >= tonumber(ARGV[2]) then
    table.insert(refused, ep)
  else
    local lane = ep .. ':' .. ARGV[5]
    redis.call('XADD', ARGV[1] .. 'lane:' .. lane, '*', 'id', ARGV[3], 'type', ARGV[4],
               'c', ARGV[6], 'b', ARGV[7])
    redis.call('HINCRBY', KEYS[3], ep, 1)
    redis.call('ZADD', KEYS[1], 'NX', now, lane)
    redis.call('ZADD', KEYS[2], 'NX', ARGV[6], lane)
  end
end
return refused
"""

#: KEYS due heads owner tries count; ARGV prefix owner lease_ms endpoints...
CLAIM = _NOW + """
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local lanes = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 64)
for _, lane in ipairs(lanes) do
  local ep = string.match(lane, '^([^:]+):')
  if ep and wanted[ep] then
    local head = redis.call('XRANGE', ARGV[1] .. 'lane:' .. lane, '-', '+', 'COUNT', 1)
    if #head == 0 then
      redis.call('ZREM', KEYS[1], lane)
      redis.call('ZREM', KEYS[2], lane)
      redis.call('HDEL', KEYS[3], lane)
      redis.call('HDEL', KEYS[4], lane)
    else
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), lane)
      redis.call('HSET', KEYS[3], lane, ARGV[2])
      local attempts = 0
      local tries = redis.call('HGET', KEYS[4], lane)
      if tries then
        local entry, n = string.match(tries, '^(%S+) (%d+)$')
        if entry == head[1][1] then attempts = tonumber(n) end
      end
      return {lane, head[1][1], head[1][2], attempts}
    end
  end
end
return false
"""

#: KEYS due heads owner tries count; ARGV prefix lane owner entry
#: (the head was delivered or given up: remove it; the next head is due at once)
REMOVE = _NOW + """
if redis.call('HGET', KEYS[3], ARGV[2]) ~= ARGV[3] then return 0 end
local stream = ARGV[1] .. 'lane:' .. ARGV[2]
local ep = string.match(ARGV[2], '^([^:]+):')
if redis.call('XDEL', stream, ARGV[4]) == 1 then
  if redis.call('HINCRBY', KEYS[5], ep, -1) <= 0 then redis.call('HDEL', KEYS[5], ep) end
end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #head == 0 then
  redis.call('DEL', stream)
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  local fields = head[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'c' then redis.call('ZADD', KEYS[2], fields[i + 1], ARGV[2]) end
  end
end
return 1
"""

#: KEYS due owner tries; ARGV lane owner entry attempts delay_ms
RETRY = _NOW + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3] .. ' ' .. ARGV[4])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


def _fields(flat: Any) -> dict[bytes, bytes]:
    if isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class RedisWebhookStore:
    """:class:`WebhookStore` in Redis (``client``: ``redis.asyncio``, bytes replies)."""

    def __init__(self, client: Any, *, max_queued: int = 100_000,
                 key_ttl_s: int = 172_800) -> None:
        self.client = client
        self.max_queued = max_queued
        self.key_ttl_s = key_ttl_s
        reg = client.register_script
        self._enqueue = reg(ENQUEUE)
        self._claim = reg(CLAIM)
        self._remove = reg(REMOVE)
        self._retry = reg(RETRY)

    @unavailable_on_redis_errors
    async def enqueue(self, event: QueuedEvent, endpoints: Sequence[str]) -> list[str]:
        if not endpoints:
            return []
        refused = await self._enqueue(
            keys=[DUE, HEADS, COUNT],
            args=[PREFIX, self.max_queued, event.event_id, event.type, event.meeting_id,
                  event.created_ms, event.body, *endpoints])
        return [ep.decode() for ep in refused]

    @unavailable_on_redis_errors
    async def claim(self, worker_id: str, endpoints: Sequence[str], lease_ms: int
                    ) -> Lease | None:
        if not endpoints:
            return None
        owner = _token(worker_id)
        reply = await self._claim(keys=[DUE, HEADS, OWNER, TRIES, COUNT],
                                  args=[PREFIX, owner, lease_ms, *endpoints])
        if not reply:
            return None
        lane, entry, flat, attempts = reply
        lane = lane.decode()
        f = _fields(flat)
        meeting_id = lane.split(":", 1)[1]
        event = QueuedEvent(event_id=f[b"id"].decode(), type=f[b"type"].decode(),
                            meeting_id=meeting_id, body=f[b"b"], created_ms=int(f[b"c"]))
        return Lease(lane=lane, endpoint=lane.split(":", 1)[0], event=event,
                     entry=entry.decode(), attempts=int(attempts), owner=owner)

    @unavailable_on_redis_errors
    async def delivered(self, lease: Lease) -> bool:
        return bool(await self._remove(keys=[DUE, HEADS, OWNER, TRIES, COUNT],
                                       args=[PREFIX, lease.lane, lease.owner, lease.entry]))

    @unavailable_on_redis_errors
    async def retry(self, lease: Lease, delay_ms: int) -> bool:
        return bool(await self._retry(keys=[DUE, OWNER, TRIES],
                                      args=[lease.lane, lease.owner, lease.entry,
                                            lease.attempts + 1, max(0, int(delay_ms))]))

    async def give_up(self, lease: Lease) -> bool:
        return await self.delivered(lease)

    @unavailable_on_redis_errors
    async def next_due_ms(self) -> int | None:
        first = await self.client.zrange(DUE, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    @unavailable_on_redis_errors
    async def stats(self) -> QueueStats:
        counts = await self.client.hvals(COUNT)
        first = await self.client.zrange(HEADS, 0, 0, withscores=True)
        return QueueStats(sum(int(c) for c in counts), int(first[0][1]) if first else None)

    @unavailable_on_redis_errors
    async def note_participant(self, meeting_id: str, user_id: str, info: bytes) -> None:
        key = f"{PREFIX}took:{meeting_id}"
        if await self.client.hlen(key) < MAX_PARTICIPANTS \
                or await self.client.hexists(key, user_id):
            await self.client.hset(key, user_id, info)
            await self.client.expire(key, self.key_ttl_s)

    @unavailable_on_redis_errors
    async def participants(self, meeting_id: str) -> list[bytes]:
        return list(await self.client.hvals(f"{PREFIX}took:{meeting_id}"))

    @unavailable_on_redis_errors
    async def forget_participants(self, meeting_id: str) -> None:
        await self.client.delete(f"{PREFIX}took:{meeting_id}")

    async def aclose(self) -> None:
        return None  # the client is the hub's, closed with its store
