"""Webhooks to the meeting backend, per the Standard Webhooks specification: the events, their
signing, and :class:`Webhooks`, the emitter the hub (and later the recorder) calls.

An event is built once, when it happens: its id (``msg_...``, the ``webhook-id`` every retry
carries, so a receiver de-duplicates on it) and its body (``{"type", "timestamp", "data"}``,
minified JSON) never change afterwards. It is queued in the
:class:`~signaling.webhook_store.WebhookStore`, once per configured URL, and the
:class:`~signaling.webhook_delivery.WebhookSender` delivers it; each attempt is signed afresh
(``webhook-timestamp`` is the attempt's time, as the specification asks).

The emitter never raises into the hub: an event that cannot be queued (store unreachable,
queue full) is logged as an error and counted in ``connvo_webhooks_failed_total``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from .clock import now_ms
from .errors import HubError

if TYPE_CHECKING:
    from .metrics import Metrics
    from .store import Meeting, Room, Seat, Store
    from .webhook_store import WebhookStore

logger = logging.getLogger(__name__)

#: Every event type, and what its ``data`` holds (README "Webhooks" has example payloads).
EVENT_TYPES: Mapping[str, str] = {
    "meeting.started": "the host started a WebRTC meeting: its room is open",
    "participant.joined": "a person took a seat in the room (not a resume)",
    "participant.left": "a person's seat is gone, with the reason",
    "meeting.ended": "the room ended: reason, duration, who took part",
    "transcript.ready": "after meeting.ended, for a transcribed meeting: the segment count",
    "recording.ready": "a recording of the meeting can be downloaded (emitted by the recorder)",
}

#: ``participant.left`` reasons: the hub's removal reason -> the one the backend sees.
LEAVE_REASONS: Mapping[str, str] = {
    "left": "left",                  # the peer sent leave / closed its socket normally
    "kicked": "kicked",              # the host kicked it over the websocket
    "removed": "removed",            # the backend's removeParticipant
    "disconnected": "timeout",       # its socket dropped and it did not resume within the grace
    "replaced": "replaced",          # the same user joined again from another tab or device
    "ended": "ended",                # the room ended with the peer in it
}

#: ``meeting.ended`` reasons: the room's end reason -> the one the backend sees.
END_REASONS: Mapping[str, str] = {"ended by host": "host", "empty": "empty"}

#: A webhook body larger than this is a bug in the caller (the spec recommends < 20 KB).
MAX_BODY_BYTES = 64 * 1024
#: Bytes of ``meeting.ended``'s ``participants`` at most (the rest is left out and
#: ``participantsTruncated`` says so), so the body stays under :data:`MAX_BODY_BYTES`.
PARTICIPANTS_BUDGET = 48 * 1024

_MEETING_ID = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)
_encode = msgspec.json.Encoder()


class WebhookConfigError(ValueError):
    """A webhook URL or secret is not usable (the settings turn it into a ConfigError)."""


def check_url(url: str, *, allow_plain_http: bool = False) -> str:
    """``url`` if it is an absolute ``https://`` URL (``http://`` to loopback, or anywhere with
    ``allow_plain_http``) with a host, no credentials and no fragment."""
    from .settings import is_loopback

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise WebhookConfigError(f"webhooks.urls: {url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError(f"webhooks.urls: {url!r} is not an http(s):// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookConfigError(f"webhooks.urls: {safe_url(url)!r} has credentials in it; "
                                 "receivers authenticate the hub by the signature")
    if parts.fragment:
        raise WebhookConfigError(f"webhooks.urls: {url!r} has a #fragment")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise WebhookConfigError(f"webhooks.urls: {url!r} contains whitespace")
    if parts.scheme == "http" and not allow_plain_http and not is_loopback(parts.hostname):
        raise WebhookConfigError(
            f"webhooks.urls: {url!r} is plain http to another machine: use https, or set "
            "webhooks.allow_plain_http = true")
    return url


def parse_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret: 24 to 64 bytes (the specification's
    range); :class:`WebhookConfigError` otherwise (the message never shows the secret)."""
    if not secret.startswith("whsec_"):
        raise WebhookConfigError("webhooks.secret must be in Standard Webhooks form: whsec_ "
                                 "followed by base64 (make one: connvo-rtc webhook-secret)")
    text = secret[len("whsec_"):]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookConfigError("webhooks.secret: the part after whsec_ is not base64") from None
    if not 24 <= len(key) <= 64:
        raise WebhookConfigError(f"webhooks.secret must decode to 24..64 random bytes, not "
                                 f"{len(key)}")
    return key


def check_secret(secret: str) -> None:
    parse_secret(secret)


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def endpoint_id(url: str) -> str:
    """The short, stable name of an endpoint in the store (a URL's hash: queued events follow
    the URL, not its position in the list)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def safe_url(url: str) -> str:
    """``url`` for a log line: scheme, host, port and path (no query, no credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Signer:
    """Signs one attempt: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` per secret,
    space-separated (rotation), as the ``webhook-signature`` header."""

    def __init__(self, secrets_: Sequence[str]) -> None:
        self._keys = [parse_secret(s) for s in secrets_]
        if not self._keys:
            raise WebhookConfigError("webhooks need at least one secret")

    def __repr__(self) -> str:
        return f"Signer({len(self._keys)} secret(s))"

    def sign(self, msg_id: str, timestamp_s: int, body: bytes) -> str:
        signed = f"{msg_id}.{timestamp_s}.".encode() + body
        return " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            for key in self._keys)

    def headers(self, msg_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
        """Every header of one attempt."""
        return {"content-type": "application/json", "user-agent": "connvo-rtc-webhooks/1",
                "webhook-id": msg_id, "webhook-timestamp": str(timestamp_s),
                "webhook-signature": self.sign(msg_id, timestamp_s, body)}


class QueuedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event as queued: its id, type, meeting, the exact body every attempt sends, and
    when it happened (unix ms)."""

    event_id: str
    type: str
    meeting_id: str
    body: bytes
    created_ms: int


def new_event_id() -> str:
    # token_urlsafe has no '.', which would make "{id}.{timestamp}.{body}" ambiguous
    return "msg_" + secrets.token_urlsafe(18)


def iso_ms(ms: int) -> str:
    """Unix ms as the specification's timestamp: ``2026-12-06T02:20:00.123Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def build_event(type_: str, meeting_id: str, data: Mapping[str, Any], *,
                at_ms: int | None = None) -> QueuedEvent:
    """The event with a new id and its body; ``ValueError`` for an unknown type, a bad
    meeting id or a body above :data:`MAX_BODY_BYTES`."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type_!r}")
    if not _MEETING_ID.fullmatch(meeting_id):
        raise ValueError(f"bad meeting id {meeting_id!r}")
    at = now_ms() if at_ms is None else at_ms
    body = _encode.encode({"type": type_, "timestamp": iso_ms(at), "data": dict(data)})
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"{type_} body of {len(body)} bytes is above {MAX_BODY_BYTES}")
    return QueuedEvent(event_id=new_event_id(), type=type_, meeting_id=meeting_id, body=body,
                       created_ms=at)


def _person(seat: Seat) -> dict[str, Any]:
    return {"peerId": seat.peer_id, "userId": seat.user_id, "name": seat.name,
            "role": seat.role}


class Webhooks:
    """The emitter: builds events and queues them for every configured endpoint.

    With no endpoints (the default) every method returns at once. ``on_queued`` wakes this
    worker's sender, so an event goes out without waiting for the next poll.
    """

    def __init__(self, *, store: WebhookStore | None = None, endpoints: Sequence[str] = (),
                 state: Store | None = None, metrics: Metrics | None = None,
                 on_queued: Callable[[], None] | None = None) -> None:
        self.store = store
        #: Endpoint ids (:func:`endpoint_id`) every event is queued for.
        self.endpoints = tuple(endpoints)
        self.state = state
        self.metrics = metrics
        self.on_queued = on_queued

    @property
    def enabled(self) -> bool:
        return self.store is not None and bool(self.endpoints)

    async def emit(self, type_: str, meeting_id: str, data: Mapping[str, Any], *,
                   at_ms: int | None = None) -> str | None:
        """Queue one event for every endpoint; its id, or ``None`` when webhooks are off or
        it could not be queued (logged and counted). The API other parts (the recorder's
        ``recording.ready``) call: ``data`` is the event's ``data`` object (camelCase keys),
        ``meetingId`` is added."""
        if not self.enabled or self.store is None:
            return None
        event = build_event(type_, meeting_id, {"meetingId": meeting_id, **data}, at_ms=at_ms)
        try:
            refused = await self.store.enqueue(event, self.endpoints)
        except HubError as exc:
            self._failed("unavailable", len(self.endpoints))
            logger.error("meeting=%s webhook %s %s NOT queued: %s", meeting_id, event.event_id,
                         type_, exc.message)
            return None
        if refused:
            self._failed("full", len(refused))
            logger.error("meeting=%s webhook %s %s NOT queued for %d endpoint(s): queue full "
                         "(webhooks.max_queued)", meeting_id, event.event_id, type_,
                         len(refused))
        queued = len(self.endpoints) - len(refused)
        if queued:
            if self.metrics is not None:
                self.metrics.webhooks_queued.inc(queued)
            logger.info("meeting=%s webhook %s %s queued", meeting_id, event.event_id, type_)
            if self.on_queued is not None:
                self.on_queued()
        return event.event_id

    def _failed(self, reason: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.webhooks_failed.labels(reason=reason).inc(n)

    async def _safe(self, what: str, coro: Any) -> None:
        """Run an emit; a webhook problem never breaks the room it reports on."""
        try:
            await coro
        except Exception:  # a bug here must not fail a join, a leave or an end
            logger.exception("webhook %s could not be emitted", what)

    # ------------------------------------------------------------------ the hub's events

    async def meeting_started(self, meeting: Meeting, room: Room) -> None:
        if not self.enabled:
            return
        await self._safe("meeting.started", self.emit("meeting.started", meeting.meeting_id, {
            "roomId": room.room_id, "title": meeting.title, "organizerId": meeting.organizer_id,
            "startedAt": meeting.started_at, "videoProvider": meeting.video_provider,
            "features": {"chat": room.features.chat,
                         "screenSharing": room.features.screen_sharing,
                         "transcription": room.features.transcription,
                         "recording": room.features.recording,
                         "maxParticipants": room.features.max_participants},
        }, at_ms=meeting.started_at))

    async def participant_joined(self, room: Room, seat: Seat,
                                 replaced: Iterable[Seat] = ()) -> None:
        """A new seat (not a resume). Seats of the same user it replaced leave first."""
        if not self.enabled or seat.role == "tap":
            return
        for old in replaced:
            await self.participant_left(room, old, "replaced")
        if self.store is not None:
            await self._safe("participant record", self.store.note_participant(
                room.meeting_id, seat.user_id, _encode.encode(
                    {"userId": seat.user_id, "name": seat.name, "role": seat.role})))
        await self._safe("participant.joined", self.emit(
            "participant.joined", room.meeting_id,
            {"roomId": room.room_id, **_person(seat), "joinedAt": seat.joined_at},
            at_ms=seat.joined_at or None))

    async def participant_left(self, room: Room, seat: Seat, reason: str) -> None:
        if not self.enabled or seat.role == "tap":
            return
        await self._safe("participant.left", self.emit(
            "participant.left", room.meeting_id,
            {"roomId": room.room_id, **_person(seat), "reason": LEAVE_REASONS.get(reason, reason),
             "joinedAt": seat.joined_at, "leftAt": now_ms()}))

    async def room_ended(self, room: Room, seats: Sequence[Seat]) -> None:
        """The room ended (``room`` as ended): everyone still in it leaves (``ended``), then
        ``meeting.ended`` and, for a transcribed meeting, ``transcript.ready``."""
        if not self.enabled:
            return
        for seat in seats:
            await self.participant_left(room, seat, "ended")
        await self._safe("meeting.ended", self._meeting_ended(room))

    async def _meeting_ended(self, room: Room) -> None:
        ended = room.ended_at or now_ms()
        meeting = await self.state.get_meeting(room.meeting_id) if self.state else None
        started = meeting.started_at if meeting is not None else None
        took_part: list[bytes] = []
        if self.store is not None:
            took_part = await self.store.participants(room.meeting_id)
        listed, size = [], 0
        for raw in took_part:  # as many as fit the body's budget (a bound, never reached at 4)
            size += len(raw) + 1
            if size > PARTICIPANTS_BUDGET:
                break
            listed.append(msgspec.json.decode(raw))
        await self.emit("meeting.ended", room.meeting_id, {
            "roomId": room.room_id, "reason": END_REASONS.get(room.end_reason, room.end_reason),
            "state": meeting.state if meeting is not None else "concluded",
            "startedAt": started, "endedAt": ended,
            "durationSeconds": round(max(0, ended - started) / 1000, 3) if started else 0,
            "participants": listed, "participantCount": len(took_part),
            "participantsTruncated": len(listed) < len(took_part),
        }, at_ms=ended)
        if room.features.transcription and self.state is not None:
            count, cursor = 0, ""
            while True:
                page, cursor = await self.state.segments(room.meeting_id, after=cursor,
                                                         limit=1000)
                count += len(page)
                if not cursor:
                    break
            await self.emit("transcript.ready", room.meeting_id, {
                "roomId": room.room_id, "segmentCount": count,
                "transcriptPath": "/api/run/meetings/transcripts/getTranscript"})
        if self.store is not None:
            await self.store.forget_participants(room.meeting_id)


#: Webhooks off: what the hub's parts hold when none are configured.
NO_WEBHOOKS = Webhooks()
