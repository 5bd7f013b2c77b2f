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

Each endpoint has its own schedule and a worker claims only from those of the URLs it is
configured with. Events queued for a URL that no worker is configured with any more stay
queued (and count in the gauges) until a worker has it again.

Redis keys, all in one Cluster slot (``{wh}``) so each script runs in one slot:

================================  ======  ================================================
``cr:{wh}:lane:<endpoint>:<mid>``  stream  the lane's events (``id``, ``type``, ``c``, ``b``)
``cr:{wh}:due:<endpoint>``         zset    lane -> when it may next be tried (ms, Redis time)
``cr:{wh}:heads``                  zset    lane -> when its head event happened (ms)
``cr:{wh}:owner``                  hash    lane -> lease owner ``<worker> <token>``
``cr:{wh}:tries``                  hash    lane -> ``<entry> <failed attempts>`` of its head
``cr:{wh}:count``                  hash    endpoint -> events queued for it
``cr:{wh}:took:<mid>``             hash    user id -> who took part (JSON), until the end
================================  ======  ================================================
"""

from __future__ import annotations

import heapq
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

    async def release(self, lease: Lease) -> bool:
        """Hand the lane back at once, its attempt unfinished (this worker is stopping)."""

    async def next_due_ms(self, endpoints: Sequence[str]) -> int | None:
        """When the next lane of ``endpoints`` is due (unix ms; a leased lane when its lease
        runs out), or ``None`` when none of their events waits."""

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
    """:class:`WebhookStore` in this process. ``clock`` (unix ms) is for tests.

    Due lanes come off a heap (entries go stale when a lane is rescheduled and are dropped
    when they surface), so a claim costs O(log lanes) even with a long backlog."""

    def __init__(self, *, max_queued: int = 100_000,
                 clock: Callable[[], int] = _wall_ms) -> None:
        self.max_queued = max_queued
        self._clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._count: dict[str, int] = {}
        self._seq = 0
        self._heap: list[tuple[int, int, str]] = []  # (due ms, push order, lane)
        self._took: dict[str, dict[str, bytes]] = {}

    def _schedule(self, name: str, lane: _Lane, due_ms: int) -> None:
        lane.due_ms = due_ms
        self._seq += 1
        heapq.heappush(self._heap, (due_ms, self._seq, name))
        if len(self._heap) > 4 * len(self._lanes) + 64:  # too many stale entries: rebuild
            self._heap = [(ln.due_ms, i, n) for i, (n, ln) in enumerate(self._lanes.items())]
            heapq.heapify(self._heap)

    def _current(self, entry: tuple[int, int, str]) -> bool:
        lane = self._lanes.get(entry[2])
        return lane is not None and lane.due_ms == entry[0]

    async def enqueue(self, event: QueuedEvent, endpoints: Sequence[str]) -> list[str]:
        refused = []
        for endpoint in endpoints:
            if self._count.get(endpoint, 0) >= self.max_queued:
                refused.append(endpoint)
                continue
            name = f"{endpoint}:{event.meeting_id}"
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = _Lane()
                self._schedule(name, lane, self._clock())
            self._seq += 1
            lane.events.append((self._seq, event))
            self._count[endpoint] = self._count.get(endpoint, 0) + 1
        return refused

    async def claim(self, worker_id: str, endpoints: Sequence[str], lease_ms: int
                    ) -> Lease | None:
        now = self._clock()
        wanted = set(endpoints)
        skipped: list[tuple[int, int, str]] = []
        found: str | None = None
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if not self._current(entry):
                continue
            if entry[2].split(":", 1)[0] not in wanted:
                skipped.append(entry)
                continue
            found = entry[2]
            break
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        if found is None:
            return None
        lane = self._lanes[found]
        entry_seq, event = lane.events[0]
        self._schedule(found, lane, now + lease_ms)
        lane.owner = _token(worker_id)
        attempts = lane.tries[1] if lane.tries[0] == entry_seq else 0
        return Lease(lane=found, endpoint=found.split(":", 1)[0], event=event,
                     entry=str(entry_seq), attempts=attempts, owner=lane.owner)

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
            self._schedule(lease.lane, lane, self._clock())
        else:
            del self._lanes[lease.lane]
        return True

    async def retry(self, lease: Lease, delay_ms: int) -> bool:
        lane = self._held(lease)
        if lane is None:
            return False
        lane.tries = (int(lease.entry), lease.attempts + 1)
        lane.owner = ""
        self._schedule(lease.lane, lane, self._clock() + delay_ms)
        return True

    async def give_up(self, lease: Lease) -> bool:
        return await self.delivered(lease)

    async def release(self, lease: Lease) -> bool:
        return await self.retry(msgspec.structs.replace(lease, attempts=lease.attempts - 1), 0)

    async def next_due_ms(self, endpoints: Sequence[str]) -> int | None:
        while self._heap and not self._current(self._heap[0]):
            heapq.heappop(self._heap)
        wanted = set(endpoints)
        if self._heap and self._heap[0][2].split(":", 1)[0] in wanted:
            return self._heap[0][0]
        return min((lane.due_ms for name, lane in self._lanes.items()
                    if name.split(":", 1)[0] in wanted), default=None)

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
HEADS, OWNER, TRIES, COUNT = (PREFIX + name for name in ("heads", "owner", "tries", "count"))


def due_key(endpoint: str) -> str:
    """An endpoint's schedule: lane -> when it may next be tried. One per endpoint, so lanes
    of an endpoint this worker does not deliver to never stand in front of its own."""
    return f"{PREFIX}due:{endpoint}"


# Every script reads the time from Redis, so workers on machines whose clocks differ share
# one schedule. Lane stream and due keys are built in the scripts from PREFIX: every key
# carries the {wh} tag, so they share the scripts' slot on a Cluster.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS heads count; ARGV prefix max id type meeting created body endpoints...
ENQUEUE = _NOW + """
local refused = {}
for i = 8, #ARGV do
  local ep = ARGV[i]
  if tonumber(redis.call('HGET', KEYS[2], ep) or '0') >= tonumber(ARGV[2]) then
    table.insert(refused, ep)
  else
    local lane = ep .. ':' .. ARGV[5]
    redis.call('XADD', ARGV[1] .. 'lane:' .. lane, '*', 'id', ARGV[3], 'type', ARGV[4],
               'c', ARGV[6], 'b', ARGV[7])
    redis.call('HINCRBY', KEYS[2], ep, 1)
    -- NX: a leased or backed-off lane keeps its time (its head goes first)
    redis.call('ZADD', ARGV[1] .. 'due:' .. ep, 'NX', now, lane)
    redis.call('ZADD', KEYS[1], 'NX', ARGV[6], lane)
  end
end
return refused
"""

#: KEYS heads owner tries; ARGV prefix owner lease_ms endpoints...
#: (the most overdue lane of the given endpoints; lanes found empty are dropped on the way)
CLAIM = _NOW + """
while true do
  local best, best_due, best_key = nil, nil, nil
  for i = 4, #ARGV do
    local key = ARGV[1] .. 'due:' .. ARGV[i]
    local first = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
    if #first > 0 and (best_due == nil or tonumber(first[2]) < best_due) then
      best, best_due, best_key = first[1], tonumber(first[2]), key
    end
  end
  if best == nil then return false end
  local head = redis.call('XRANGE', ARGV[1] .. 'lane:' .. best, '-', '+', 'COUNT', 1)
  if #head == 0 then
    redis.call('ZREM', best_key, best)
    redis.call('ZREM', KEYS[1], best)
    redis.call('HDEL', KEYS[2], best)
    redis.call('HDEL', KEYS[3], best)
  else
    redis.call('ZADD', best_key, now + tonumber(ARGV[3]), best)
    redis.call('HSET', KEYS[2], best, ARGV[2])
    local attempts = 0
    local tries = redis.call('HGET', KEYS[3], best)
    if tries then
      local entry, n = string.match(tries, '^(%S+) (%d+)$')
      if entry == head[1][1] then attempts = tonumber(n) end
    end
    return {best, head[1][1], head[1][2], attempts}
  end
end
"""

#: KEYS heads owner tries count; ARGV prefix lane owner entry
#: (the head was delivered or given up: remove it; the next head is due at once)
REMOVE = _NOW + """
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end
local stream = ARGV[1] .. 'lane:' .. ARGV[2]
local ep = string.match(ARGV[2], '^([^:]+):')
local due = ARGV[1] .. 'due:' .. ep
if redis.call('XDEL', stream, ARGV[4]) == 1 then
  if redis.call('HINCRBY', KEYS[4], ep, -1) <= 0 then redis.call('HDEL', KEYS[4], ep) end
end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #head == 0 then
  redis.call('DEL', stream)
  redis.call('ZREM', due, ARGV[2])
  redis.call('ZREM', KEYS[1], ARGV[2])
else
  redis.call('ZADD', due, now, ARGV[2])
  local fields = head[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'c' then redis.call('ZADD', KEYS[1], fields[i + 1], ARGV[2]) end
  end
end
return 1
"""

#: KEYS owner tries; ARGV prefix lane owner entry attempts delay_ms
RETRY = _NOW + """
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] then return 0 end
local ep = string.match(ARGV[2], '^([^:]+):')
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4] .. ' ' .. ARGV[5])
redis.call('ZADD', ARGV[1] .. 'due:' .. ep, now + tonumber(ARGV[6]), ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
return 1
"""

#: KEYS took; ARGV user info max ttl (who took part, bounded)
NOTE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
    or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
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
        self._note = reg(NOTE)

    @unavailable_on_redis_errors
    async def enqueue(self, event: QueuedEvent, endpoints: Sequence[str]) -> list[str]:
        if not endpoints:
            return []
        refused = await self._enqueue(
            keys=[HEADS, COUNT],
            args=[PREFIX, self.max_queued, event.event_id, event.type, event.meeting_id,
                  event.created_ms, event.body, *endpoints])
        return [ep.decode() for ep in refused]

    @unavailable_on_redis_errors
    async def claim(self, worker_id: str, endpoints: Sequence[str], lease_ms: int
                    ) -> Lease | None:
        if not endpoints:
            return None
        owner = _token(worker_id)
        reply = await self._claim(keys=[HEADS, OWNER, TRIES],
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
        return bool(await self._remove(keys=[HEADS, OWNER, TRIES, COUNT],
                                       args=[PREFIX, lease.lane, lease.owner, lease.entry]))

    @unavailable_on_redis_errors
    async def retry(self, lease: Lease, delay_ms: int) -> bool:
        return bool(await self._retry(keys=[OWNER, TRIES],
                                      args=[PREFIX, lease.lane, lease.owner, lease.entry,
                                            lease.attempts + 1, max(0, int(delay_ms))]))

    async def give_up(self, lease: Lease) -> bool:
        return await self.delivered(lease)

    async def release(self, lease: Lease) -> bool:
        return await self.retry(msgspec.structs.replace(lease, attempts=lease.attempts - 1), 0)

    @unavailable_on_redis_errors
    async def next_due_ms(self, endpoints: Sequence[str]) -> int | None:
        firsts = [await self.client.zrange(due_key(ep), 0, 0, withscores=True)
                  for ep in endpoints]
        return min((int(first[0][1]) for first in firsts if first), default=None)

    @unavailable_on_redis_errors
    async def stats(self) -> QueueStats:
        counts = await self.client.hvals(COUNT)
        first = await self.client.zrange(HEADS, 0, 0, withscores=True)
        return QueueStats(sum(int(c) for c in counts), int(first[0][1]) if first else None)

    @unavailable_on_redis_errors
    async def note_participant(self, meeting_id: str, user_id: str, info: bytes) -> None:
        await self._note(keys=[f"{PREFIX}took:{meeting_id}"],
                         args=[user_id, info, MAX_PARTICIPANTS, self.key_ttl_s])

    @unavailable_on_redis_errors
    async def participants(self, meeting_id: str) -> list[bytes]:
        return list(await self.client.hvals(f"{PREFIX}took:{meeting_id}"))

    @unavailable_on_redis_errors
    async def forget_participants(self, meeting_id: str) -> None:
        await self.client.delete(f"{PREFIX}took:{meeting_id}")

    async def aclose(self) -> None:
        return None  # the client is the hub's, closed with its store
