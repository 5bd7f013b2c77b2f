"""``RedisStore``: room, meeting and presence state in Redis (single server or Cluster).

Every key of a meeting and its room carries the same hash tag, ``{<hex>}`` from
``meeting_<hex>`` / ``room_<hex>``, so every multi-key script runs in one slot on a Cluster.
Operations that must be atomic across workers (admission, resume, state transitions) are Lua
scripts: Redis runs each one alone, so 200 workers racing for the last seat see one winner.

Keys (``T`` is the meeting's tag; TTLs are refreshed whenever the room changes):

========================  ======  ==========================================================
``cr:{T}:meeting``        hash    ``data`` (the meeting's fixed fields, JSON) + ``state``,
                                  ``room_id``, ``updated_at``, ``started_at``
``cr:{T}:room``           string  the room (JSON)
``cr:{T}:seats``          hash    peer id -> seat (JSON)
``cr:{T}:banned``         set     user ids removed by the host
``cr:{T}:waiting``        hash    peer id -> waiting-room entry (a seat not yet given, JSON)
``cr:{T}:presence``       hash    user id -> ``joined`` / ``left``
``cr:{T}:transcript``     stream  final transcript segments in the order they were stored
``cr:open:<user>``        zset    the user's open (scheduled or active) meetings, scored by
                                  when their meeting key expires (the per-user quota)
========================  ======  ==========================================================

Expiry: each key expires ``key_ttl_s`` after its last write, and a meeting's state change
(started, ended) renews every key of the meeting, so a concluded or cancelled meeting and all of
its state stay readable for ``key_ttl_s`` and then go; a meeting that never starts goes
``key_ttl_s`` after it was created. ``MemoryStore`` applies the same policy.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import redis_scripts as lua
from .codes import ErrorCode, meeting_state_code
from .errors import BadRequest, Conflict, Forbidden, NotFound, RoomEnded, RoomFull, Unavailable
from .protocol import MediaState
from .store import (
    CURSOR_PATTERN,
    DEFAULT_KEY_TTL_S,
    OPEN_STATES,
    Admission,
    Meeting,
    MeetingState,
    Presence,
    Room,
    Seat,
    Segment,
    quota_refusal,
)

logger = logging.getLogger(__name__)

#: A transcript cursor: a stream entry id (``<ms>-<seq>``, ASCII digits only).
_CURSOR = re.compile(CURSOR_PATTERN, re.ASCII)

P = ParamSpec("P")
R = TypeVar("R")


def open_key(user_id: str) -> str:
    """The key of a user's open meetings (the quota). Its own slot on a Cluster: only
    single-key scripts touch it."""
    return f"cr:open:{user_id}"


def tag_of(entity_id: str) -> str:
    """The hash tag shared by a meeting and its room: ``meeting_ab12`` / ``room_ab12`` -> ab12."""
    return entity_id.split("_", 1)[1] if "_" in entity_id else entity_id


def _keys(entity_id: str) -> dict[str, str]:
    t = tag_of(entity_id)
    return {name: f"cr:{{{t}}}:{name}" for name in
            ("meeting", "room", "seats", "banned", "presence", "transcript", "waiting")}


def unavailable_on_redis_errors(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn a lost Redis into :class:`Unavailable` (HTTP 503 / close 1013), failing fast."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError) as exc:
            raise Unavailable(f"state store unreachable: {type(exc).__name__}") from None

    return wrapper


_meeting_fixed = msgspec.json.Encoder()
_seat_dec = msgspec.json.Decoder(Seat)
_room_dec = msgspec.json.Decoder(Room)
_segment_dec = msgspec.json.Decoder(Segment)
_json = msgspec.json.Encoder()


def _decode_seat(raw: bytes | str) -> Seat:
    return _seat_dec.decode(raw)


class RedisStore:
    """:class:`~signaling.store.Store` on Redis; ``client`` is a ``redis.asyncio`` Redis or
    RedisCluster (``decode_responses=False``)."""

    def __init__(self, client: Any, *, key_ttl_s: int = DEFAULT_KEY_TTL_S) -> None:
        self.client = client
        self.key_ttl_s = key_ttl_s
        reg = client.register_script
        self._admit = reg(lua.ADMIT)
        self._reattach = reg(lua.REATTACH)
        self._detach = reg(lua.DETACH)
        self._remove = reg(lua.REMOVE)
        self._media = reg(lua.MEDIA)
        self._end_room = reg(lua.END_ROOM)
        self._transition = reg(lua.TRANSITION)
        self._attach_room = reg(lua.ATTACH_ROOM)
        self._reserve_open = reg(lua.RESERVE_OPEN)
        self._renew_open = reg(lua.RENEW_OPEN)
        self._knock = reg(lua.KNOCK)
        self._unknock = reg(lua.UNKNOCK)

    @unavailable_on_redis_errors
    async def ping(self) -> None:
        await self.client.ping()

    # ------------------------------------------------------------------ meetings

    @unavailable_on_redis_errors
    async def create_meeting(self, meeting: Meeting, *, max_open: int = 0) -> None:
        k = _keys(meeting.meeting_id)["meeting"]
        counted = 0
        if meeting.state in OPEN_STATES:
            # Check and count in one script; the meeting key is in another slot, so a worker
            # dying between the two leaves a count that lapses with its score (key_ttl_s).
            counted = await self._reserve_open(
                keys=[open_key(meeting.organizer_id)],
                args=[meeting.meeting_id, max_open, self.key_ttl_s])
            if counted == 0:
                raise quota_refusal(max_open)
        fixed = msgspec.structs.replace(meeting, state="scheduled", room_id=None, started_at=None)
        created = await self.client.hsetnx(k, "data", _json.encode(fixed))
        if not created:
            if counted == 1:
                await self.client.zrem(open_key(meeting.organizer_id), meeting.meeting_id)
            raise Conflict(f"meeting {meeting.meeting_id} exists")
        await self.client.hset(k, mapping={"state": meeting.state,
                                           "updated_at": meeting.updated_at})
        await self.client.expire(k, self.key_ttl_s)

    @unavailable_on_redis_errors
    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        fields = await self.client.hgetall(_keys(meeting_id)["meeting"])
        if not fields or b"data" not in fields:
            return None
        meeting = msgspec.json.decode(fields[b"data"], type=Meeting)
        started = fields.get(b"started_at")
        room_id = fields.get(b"room_id")
        return msgspec.structs.replace(
            meeting, state=fields[b"state"].decode(), updated_at=int(fields[b"updated_at"]),
            started_at=int(started) if started else None,
            room_id=room_id.decode() if room_id else None,
        )

    @unavailable_on_redis_errors
    async def transition_meeting(
        self, meeting_id: str, state: MeetingState, *, from_states: tuple[MeetingState, ...],
        now_ms: int,
    ) -> Meeting:
        k = _keys(meeting_id)
        result = await self._transition(
            keys=[k[name] for name in ("meeting", "room", "seats", "banned", "presence",
                                       "transcript", "waiting")],
            args=[state, ",".join(from_states), now_ms, self.key_ttl_s])
        if result[0] == b"err":
            if result[1] == b"not-found":
                raise NotFound(f"no meeting {meeting_id}")
            current = result[2].decode()
            raise Conflict(f"meeting is {current}, cannot become {state}",
                           code=meeting_state_code(current))
        meeting = await self.get_meeting(meeting_id)
        if meeting is None:  # expired between the two calls
            raise NotFound(f"no meeting {meeting_id}")
        if meeting.state in OPEN_STATES:
            await self._renew_open(keys=[open_key(meeting.organizer_id)],
                                   args=[meeting_id, self.key_ttl_s])
        else:
            await self.client.zrem(open_key(meeting.organizer_id), meeting_id)
        return meeting

    @unavailable_on_redis_errors
    async def attach_room(self, room: Room) -> Room:
        k = _keys(room.meeting_id)
        if tag_of(room.room_id) != tag_of(room.meeting_id):
            raise ValueError("a room's id must carry its meeting's tag (room_<hex>)")
        result = await self._attach_room(
            keys=[k["meeting"], k["room"]],
            args=[_json.encode(room), room.room_id, self.key_ttl_s],
        )
        if result[0] == b"err":
            raise NotFound(f"no meeting {room.meeting_id}")
        return _room_dec.decode(result[1])

    # ------------------------------------------------------------------ rooms

    @unavailable_on_redis_errors
    async def get_room(self, room_id: str) -> Room | None:
        raw = await self.client.get(_keys(room_id)["room"])
        return None if raw is None else _room_dec.decode(raw)

    @unavailable_on_redis_errors
    async def end_room(self, room_id: str, reason: str, *, now_ms: int) -> Room | None:
        k = _keys(room_id)
        raw = await self._end_room(keys=[k["room"], k["seats"], k["waiting"]],
                                   args=[reason, now_ms])
        return None if not raw else _room_dec.decode(raw)

    # ------------------------------------------------------------------ seats

    @unavailable_on_redis_errors
    async def admit(self, seat: Seat) -> Admission:
        k = _keys(seat.room_id)
        result = await self._admit(
            keys=[k["room"], k["seats"], k["banned"], k["presence"]],
            args=[seat.peer_id, seat.user_id, seat.role, _json.encode(seat), self.key_ttl_s],
        )
        if result[0] == b"err":
            code = result[1].decode()
            if code == "not-found":
                raise NotFound(f"no room {seat.room_id}")
            if code == "room-ended":
                raise RoomEnded("the room has ended")
            if code == "removed":
                raise Forbidden("you were removed from this room by the host", code=ErrorCode.REMOVED)
            if code == "tap-present":
                raise RoomFull("the room already has a transcription tap")
            raise RoomFull(f"the room is full ({result[2].decode()} peers)")
        n_replaced = int(result[1])
        replaced = tuple(_decode_seat(raw) for raw in result[2:2 + n_replaced])
        seats = sorted((_decode_seat(raw) for raw in result[2 + n_replaced:]),
                       key=lambda s: (s.joined_at, s.peer_id))
        return Admission(seat, replaced, tuple(seats))

    @unavailable_on_redis_errors
    async def reattach(
        self, room_id: str, peer_id: str, resume_hash: str, user_id: str, worker_id: str
    ) -> Seat | None:
        raw = await self._reattach(keys=[_keys(room_id)["seats"]],
                                   args=[peer_id, resume_hash, user_id, worker_id])
        return None if not raw else _decode_seat(raw)

    @unavailable_on_redis_errors
    async def detach(self, room_id: str, peer_id: str, *, now_ms: int,
                     worker_id: str = "") -> Seat | None:
        raw = await self._detach(keys=[_keys(room_id)["seats"]],
                                 args=[peer_id, now_ms, worker_id])
        return None if not raw else _decode_seat(raw)

    @unavailable_on_redis_errors
    async def remove_seat(
        self, room_id: str, peer_id: str, *, only_if_detached_since: int | None = None,
        only_if_worker: str | None = None,
    ) -> Seat | None:
        since = "" if only_if_detached_since is None else str(only_if_detached_since)
        raw = await self._remove(keys=[_keys(room_id)["seats"]],
                                 args=[peer_id, since, only_if_worker or ""])
        return None if not raw else _decode_seat(raw)

    @unavailable_on_redis_errors
    async def update_media(self, room_id: str, peer_id: str, media: MediaState) -> Seat | None:
        raw = await self._media(keys=[_keys(room_id)["seats"]],
                                args=[peer_id, _json.encode(media)])
        return None if not raw else _decode_seat(raw)

    @unavailable_on_redis_errors
    async def seats(self, room_id: str) -> list[Seat]:
        values = await self.client.hvals(_keys(room_id)["seats"])
        return sorted((_decode_seat(v) for v in values), key=lambda s: (s.joined_at, s.peer_id))

    @unavailable_on_redis_errors
    async def ban(self, room_id: str, user_id: str) -> None:
        k = _keys(room_id)["banned"]
        await self.client.sadd(k, user_id)
        await self.client.expire(k, self.key_ttl_s)

    # ------------------------------------------------------------------ the waiting room

    @unavailable_on_redis_errors
    async def knock(self, entry: Seat, *, max_waiting: int) -> tuple[Seat, ...]:
        k = _keys(entry.room_id)
        result = await self._knock(
            keys=[k["room"], k["banned"], k["waiting"]],
            args=[entry.peer_id, entry.user_id, _json.encode(entry), max_waiting,
                  self.key_ttl_s])
        if result[0] == b"err":
            code = result[1].decode()
            if code == "not-found":
                raise NotFound(f"no room {entry.room_id}")
            if code == "room-ended":
                raise RoomEnded("the room has ended")
            if code == "removed":
                raise Forbidden("you were removed from this room by the host",
                                code=ErrorCode.REMOVED)
            raise RoomFull(f"{max_waiting} people are waiting to be let in already",
                           code=ErrorCode.WAITING_ROOM_FULL)
        return tuple(_decode_seat(raw) for raw in result[1:])

    @unavailable_on_redis_errors
    async def unknock(self, room_id: str, peer_id: str) -> Seat | None:
        raw = await self._unknock(keys=[_keys(room_id)["waiting"]], args=[peer_id])
        return None if not raw else _decode_seat(raw)

    @unavailable_on_redis_errors
    async def knocking(self, room_id: str) -> list[Seat]:
        values = await self.client.hvals(_keys(room_id)["waiting"])
        return sorted((_decode_seat(v) for v in values), key=lambda s: (s.joined_at, s.peer_id))

    # ------------------------------------------------------------------ presence

    @unavailable_on_redis_errors
    async def set_presence(self, meeting_id: str, user_id: str, presence: Presence) -> None:
        k = _keys(meeting_id)["presence"]
        await self.client.hset(k, user_id, presence)
        await self.client.expire(k, self.key_ttl_s)

    @unavailable_on_redis_errors
    async def presence(self, meeting_id: str, user_id: str) -> Presence | None:
        raw = await self.client.hget(_keys(meeting_id)["presence"], user_id)
        return None if raw is None else raw.decode()  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ transcripts

    @unavailable_on_redis_errors
    async def append_segment(self, meeting_id: str, segment: Segment) -> None:
        key = _keys(meeting_id)["transcript"]
        await self.client.xadd(key, {"s": _json.encode(segment)})
        await self.client.expire(key, self.key_ttl_s)

    @unavailable_on_redis_errors
    async def segments(self, meeting_id: str, *, after: str = "", limit: int = 100
                       ) -> tuple[list[Segment], str]:
        key = _keys(meeting_id)["transcript"]
        if after and not _CURSOR.fullmatch(after):
            raise BadRequest("invalid cursor", code=ErrorCode.INVALID_CURSOR)
        start = f"({after}" if after else "-"
        try:
            entries = await self.client.xrange(key, min=start, max="+", count=limit + 1)
        except ResponseError:
            raise BadRequest("invalid cursor", code=ErrorCode.INVALID_CURSOR) from None
        page = entries[:limit]
        segments = [_segment_dec.decode(fields[b"s"]) for _, fields in page]
        more = len(entries) > limit
        return segments, (page[-1][0].decode() if more and page else "")

    async def aclose(self) -> None:
        try:
            await self.client.aclose()
        except (RedisConnectionError, OSError):  # closing a client whose server is gone
            pass


def connect(url: str, *, cluster: bool = False, timeout_s: float = 2.0) -> Any:
    """A ``redis.asyncio`` client for ``redis://``, ``rediss://`` or a Cluster (``cluster=True``
    or a ``redis+cluster://`` / ``rediss+cluster://`` URL). Timeouts are short so a lost Redis
    fails fast instead of hanging joins."""
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        cluster = True
        url = url.replace("+cluster", "", 1)
    options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                               "health_check_interval": 10}
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, max_connections=512, **options)
    # A blocking pool: a join storm waits (bounded by the timeout) for a free connection
    # instead of failing with "Too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=128, timeout=timeout_s,
                                                   **options)
    return aioredis.Redis.from_pool(pool)


__all__ = ["DEFAULT_KEY_TTL_S", "RedisStore", "ResponseError", "connect", "open_key", "tag_of",
           "unavailable_on_redis_errors"]
