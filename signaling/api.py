"""The backend-facing HTTP API in the seed documents' style.

``POST /api/run/<module>/<function>`` with body ``{"args": {...}}``; success is
``{"status": "success", "errorMessage": "", "errorData": {}, "value": ...}`` and failure is the
``FailedResponse`` envelope ``{"status": "error", "errorMessage", "errorData": {"code", ...}}``
with HTTP 400/401/403/404/409/429/503 (500 only for bugs). Argument objects are validated by the
structs below before any handler runs; the served OpenAPI spec (:mod:`signaling.openapi`) states
their limits by reading the same structs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from aiohttp import web

from .codes import ErrorCode
from .errors import BadRequest, HubError, NotFound, RateLimited, Unauthenticated
from .meetings import MeetingService, user_id_for_email
from .metrics import Metrics
from .ratelimit import KeyedBuckets
from .settings import Settings
from .store import CURSOR_PATTERN
from .tokens import TokenService, UserIdentity, normalize_email

logger = logging.getLogger(__name__)


# Patterns mean the same to msgspec (Python's ``re.search``) and to the served spec's readers
# (JSON Schema: ECMA-262, also searched), so the spec states exactly what is enforced.
# ``$(?![\s\S])`` is the end of the string: Python's ``$`` alone also matches before a final
# newline (``"meeting_1\n"`` passed as an id). Whitespace is spelled out because ``\s`` is not
# the same set in the two dialects: this is the union of both.
_WS = r"\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_END = r"$(?![\s\S])"
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+" + _END)]
Email = Annotated[str, msgspec.Meta(max_length=254, pattern=f"^[^@{_WS}]+@[^@{_WS}]+{_END}")]
#: At least one character that is not whitespace.
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=f"[^{_WS}]")]
Positive = Annotated[float, msgspec.Meta(ge=0, le=1e13)]
# The seeds type counts as JSON ``number``: 8 and 8.0 are both valid, 8.5 is not.
Count = Annotated[float, msgspec.Meta(ge=1, le=1000, multiple_of=1)]
Seconds = Annotated[float, msgspec.Meta(ge=60, le=1e9, multiple_of=1)]
#: A meeting's longest duration: whole minutes, one minute to a day.
Minutes = Annotated[float, msgspec.Meta(ge=1, le=1440, multiple_of=1)]


class _Args(msgspec.Struct, rename="camel", frozen=True):
    """An endpoint's arguments. An optional argument is given with a value or left out (as the
    seeds' Convex validators have it); ``null`` is refused, so ``None`` here means absent."""

    #: Fields of which exactly one must be given (checked before the handler runs; the spec
    #: states it as ``oneOf``).
    exactly_one: ClassVar[tuple[str, ...]] = ()


class CreateMeetingArgs(_Args, frozen=True):
    title: Title
    description: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    duration: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] | None = None
    max_participants: Count | None = None
    meeting_type: Literal["one-on-one", "small-group", "large-meeting", "webinar"] | None = None
    organizer_id: Id | None = None
    participant_emails: Annotated[list[Email], msgspec.Meta(max_length=100)] = []
    recording_enabled: bool = False
    scheduled_at: Positive | None = None
    transcription_enabled: bool = False
    # Meeting controls (issue 16). Each is optional; left out, the meeting behaves as meetings
    # did before controls existed (everything allowed, no waiting room, no time limit).
    chat_enabled: bool = True
    screen_sharing_enabled: bool = True
    participant_video_enabled: bool = True
    participant_audio_enabled: bool = True
    waiting_room_enabled: bool = False
    auto_admit: bool = False
    max_duration_minutes: Minutes | None = None


#: A scenario id (signaling/scenarios.py ``ID_PATTERN``, anchored as the patterns above are).
ScenarioId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}" + _END)]
#: A person's or persona's name as shown on a tile: 1..64 characters, not only whitespace.
PersonName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=f"[^{_WS}]")]
#: A provider's voice id (ElevenLabs ``6MoEUz34rbRrmmyxgRm4``, Azure ``en-US-JennyNeural``).
VoiceId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}" + _END)]
#: A language by name or tag: ``English``, ``en-US``, ``Brazilian Portuguese``.
Language = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z() _-]{0,63}" + _END)]
#: Seats of a meeting from a scenario: the person and the agent at least, the mesh at most.
ScenarioSeats = Annotated[float, msgspec.Meta(ge=2, le=4, multiple_of=1)]


class CreateFromScenarioArgs(_Args, frozen=True):
    """``createMeetingFromScenario``: the seed's "Create Meeting from Scenario" in our camelCase
    (``seeds/meeting-from-scenario.md``); the meeting controls default as that document says
    (:func:`signaling.controls.scenario_controls`), not as ``createMeeting``'s do."""

    scenario_id: ScenarioId
    #: The person joining (their tile's name).
    name: PersonName
    voice_id: VoiceId | None = None
    voice_provider: Literal["elevenlabs", "azure", "cartesia"] | None = None
    language: Language | None = None
    welcome_message: Annotated[str, msgspec.Meta(min_length=1, max_length=1000,
                                                 pattern=f"[^{_WS}]")] | None = None
    meeting_type: Literal["regular", "end-user"] = "regular"
    end_user_id: Id | None = None
    # Meeting controls: left out, the scenario document's defaults.
    recording_enabled: bool | None = None
    transcription_enabled: bool | None = None
    chat_enabled: bool | None = None
    screen_sharing_enabled: bool | None = None
    participant_video_enabled: bool | None = None
    participant_audio_enabled: bool | None = None
    max_participants: ScenarioSeats | None = None
    waiting_room_enabled: bool | None = None
    auto_admit: bool | None = None
    max_duration_minutes: Minutes | None = None
    # AI configuration: accepted, type-checked and stored; no effect here (docs/agent.md).
    deep_thinking_enabled: bool = False
    live_vision_enabled: bool = False
    gpt_vision_enabled: bool = False
    web_search_enabled: bool = False
    use_own_api_keys: bool = False


class MeetingArgs(_Args, frozen=True):
    meeting_id: Id


class InitializeRoomArgs(_Args, frozen=True):
    meeting_id: Id
    max_participants: Count | None = None


class JoinTokenArgs(_Args, frozen=True):
    meeting_id: Id
    role: Literal["host", "participant", "observer"] | None = None
    ttl_seconds: Seconds | None = None


class RemoveParticipantArgs(_Args, frozen=True):
    exactly_one = ("user_id", "peer_id")
    meeting_id: Id
    user_id: Id | None = None
    peer_id: Id | None = None


class TranscriptArgs(_Args, frozen=True):
    meeting_id: Id
    cursor: Annotated[str, msgspec.Meta(max_length=37, pattern=f"^({CURSOR_PATTERN})?{_END}")] = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class NoArgs(_Args, frozen=True):
    pass


class DevLoginArgs(_Args, frozen=True):
    email: Email
    name: Annotated[str, msgspec.Meta(max_length=64)] = ""


class DevInviteArgs(_Args, frozen=True):
    meeting_id: Id
    ttl_seconds: Seconds | None = None


class DevJoinArgs(_Args, frozen=True):
    invite: Annotated[str, msgspec.Meta(min_length=1, max_length=2_048)]


class MethodNotAllowed(HubError):
    """A known endpoint called with another method than POST (HTTP 405)."""

    code = ErrorCode.METHOD_NOT_ALLOWED
    http_status = 405


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


RUN = "/api/run/meetings"
#: The argument struct of every endpoint (the served spec is derived from these too).
ARGS: dict[str, type[_Args]] = {
    f"{RUN}/lifecycle/createMeeting": CreateMeetingArgs,
    f"{RUN}/lifecycle/startMeeting": MeetingArgs,
    f"{RUN}/lifecycle/endMeeting": MeetingArgs,
    f"{RUN}/webrtc/index/initializeWebRTCRoom": InitializeRoomArgs,
    f"{RUN}/queries/getMeeting": MeetingArgs,
    f"{RUN}/webrtc/index/createJoinToken": JoinTokenArgs,
    f"{RUN}/webrtc/index/removeParticipant": RemoveParticipantArgs,
    f"{RUN}/webrtc/index/getIceServers": NoArgs,
    f"{RUN}/transcripts/getTranscript": TranscriptArgs,
    f"{RUN}/recordings/getRecording": MeetingArgs,
    f"{RUN}/lifecycle/createMeetingFromScenario": CreateFromScenarioArgs,
    f"{RUN}/scenarios/listScenarios": NoArgs,
}
#: Dev mode only (``auth.dev_login``); not in the served spec.
DEV_ARGS: dict[str, type[_Args]] = {
    "/api/dev/login": DevLoginArgs,
    "/api/dev/createInvite": DevInviteArgs,
    "/api/dev/joinByInvite": DevJoinArgs,
    "/api/dev/checkInvite": DevJoinArgs,
}


def configured_limits(settings: Settings) -> dict[str, float]:
    """Upper bounds that are settings rather than constants of the structs, by ``endpoint
    path/argument``: checked with the structs' limits, stated in the served spec."""
    return {f"{RUN}/webrtc/index/createJoinToken/ttlSeconds": settings.auth.max_token_ttl_s,
            # the agent's meetings are hosted here: one mesh room
            f"{RUN}/lifecycle/createMeetingFromScenario/maxParticipants":
                settings.rooms.capacity}


def decode_args(raw: dict[str, Any], args_type: type[_Args],
                maximum: dict[str, float] | None = None) -> Any:
    """``raw`` as ``args_type``, or :class:`BadRequest` ``invalid-args``: a value out of its
    limits (the struct's, and ``maximum``: argument -> highest value), a ``null`` argument, or
    not exactly one of ``args_type.exactly_one``."""
    wire = {f.name: f.encode_name for f in msgspec.structs.fields(args_type)}
    for name in wire.values():
        if name in raw and raw[name] is None:
            raise BadRequest(f"invalid args: {name} is null; leave it out instead",
                             code=ErrorCode.INVALID_ARGS)
    try:
        args = msgspec.convert(raw, args_type)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid args: {exc}", code=ErrorCode.INVALID_ARGS) from None
    for name, highest in (maximum or {}).items():
        if raw.get(name, 0) > highest:  # a number: the struct has checked the type
            raise BadRequest(f"invalid args: {name} must be <= {highest:g}",
                             code=ErrorCode.INVALID_ARGS)
    names = args_type.exactly_one
    if names and sum(getattr(args, name) is not None for name in names) != 1:
        raise BadRequest(f"invalid args: give exactly one of "
                         f"{' or '.join(wire[n] for n in names)}", code=ErrorCode.INVALID_ARGS)
    return args


#: (caller — None only on unauthenticated endpoints, args, request) -> value
Handler = Callable[[Any, Any, web.Request], Awaitable[Any]]


def success(value: Any) -> web.Response:
    return web.json_response({"status": "success", "errorMessage": "", "errorData": {},
                              "value": value})


def failure(exc: HubError) -> web.Response:
    return web.json_response(
        {"status": "error", "errorMessage": exc.message,
         "errorData": {"code": exc.code, "retryable": exc.retryable}},
        status=exc.http_status,
    )


class Api:
    """Routes, authentication, validation and the response envelope."""

    def __init__(self, settings: Settings, tokens: TokenService, service: MeetingService,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.tokens = tokens
        self.service = service
        self.metrics = metrics
        rate = settings.limits.api_requests_per_second
        self._buckets = KeyedBuckets(rate, rate * 4)

    def routes(self) -> list[web.RouteDef]:
        s = self.service
        handlers: list[tuple[str, Handler, bool]] = [
            (f"{RUN}/lifecycle/createMeeting", lambda c, a, r: s.create_meeting(c, a), True),
            (f"{RUN}/lifecycle/startMeeting",
             lambda c, a, r: s.start_meeting(c, a.meeting_id), True),
            (f"{RUN}/lifecycle/endMeeting", lambda c, a, r: s.end_meeting(c, a.meeting_id), True),
            (f"{RUN}/webrtc/index/initializeWebRTCRoom",
             lambda c, a, r: s.initialize_room(c, a.meeting_id, _int(a.max_participants)),
             True),
            (f"{RUN}/queries/getMeeting", lambda c, a, r: s.get_meeting(c, a.meeting_id), True),
            (f"{RUN}/webrtc/index/createJoinToken",
             lambda c, a, r: s.create_join_token(c, a.meeting_id, a.role, self.ws_url(r),
                                                 _int(a.ttl_seconds)), True),
            (f"{RUN}/webrtc/index/removeParticipant", self._remove, True),
            (f"{RUN}/webrtc/index/getIceServers", self._ice, True),
            (f"{RUN}/transcripts/getTranscript",
             lambda c, a, r: s.get_transcript(c, a.meeting_id, a.cursor, a.limit), True),
            (f"{RUN}/recordings/getRecording",
             lambda c, a, r: s.get_recording(c, a.meeting_id, self.base_url(r)), True),
            (f"{RUN}/lifecycle/createMeetingFromScenario",
             lambda c, a, r: s.create_from_scenario(c, a, self.ws_url(r)), True),
            (f"{RUN}/scenarios/listScenarios", lambda c, a, r: s.list_scenarios(), True),
        ]
        if self.settings.auth.dev_login:
            # Dev mode only: the demo page's invite links (see MeetingService.create_invite).
            handlers += [
                ("/api/dev/login", self._dev_login, False),
                ("/api/dev/createInvite", self._create_invite, True),
                ("/api/dev/joinByInvite", self._join_by_invite, True),
                # No login: the page checks its link before asking for a name or a camera.
                ("/api/dev/checkInvite", lambda _, a, __: s.check_invite(a.invite), False),
            ]
        endpoints = [(path, ARGS.get(path) or DEV_ARGS[path], handler, auth)
                     for path, handler, auth in handlers]
        known = {path for path, *_ in endpoints}

        async def no_endpoint(request: web.Request) -> web.Response:
            # Registered last: unknown paths and wrong methods get the envelope too, not
            # aiohttp's plain-text 404/405.
            if request.path in known:
                response = failure(MethodNotAllowed(f"{request.method} not allowed; use POST"))
                response.headers["Allow"] = "POST"
                return response
            return failure(NotFound(f"no endpoint {request.path}", code=ErrorCode.UNKNOWN_ENDPOINT))

        return [*(web.post(path, self._wrap(path, args, handler, auth))
                  for path, args, handler, auth in endpoints),
                web.route("*", "/api/run/{tail:.*}", no_endpoint)]

    def base_url(self, request: web.Request) -> str:
        """The hub's own URL as callers see it (``server.public_url``, else the request's)."""
        base = self.settings.server.public_url.rstrip("/")
        return base or f"{'https' if request.secure else 'http'}://{request.host}"

    def ws_url(self, request: web.Request) -> str:
        base = self.settings.server.public_url.rstrip("/")
        if base:
            return base.replace("https://", "wss://").replace("http://", "ws://") + "/ws"
        scheme = "wss" if request.secure else "ws"
        return f"{scheme}://{request.host}/ws"

    async def _remove(self, caller: UserIdentity | None, args: Any, _: web.Request) -> Any:
        assert caller is not None  # auth=True endpoints always have a caller
        return await self.service.remove_participant(caller, args.meeting_id,
                                                     user_id=args.user_id, peer_id=args.peer_id)

    async def _ice(self, caller: UserIdentity | None, _: Any, __: web.Request) -> Any:
        assert caller is not None
        return self.service.ice_servers(caller)

    async def _create_invite(self, caller: UserIdentity | None, args: Any, _: web.Request) -> Any:
        assert caller is not None  # auth=True endpoints always have a caller
        return await self.service.create_invite(caller, args.meeting_id, _int(args.ttl_seconds))

    async def _join_by_invite(self, caller: UserIdentity | None, args: Any,
                              request: web.Request) -> Any:
        assert caller is not None
        return await self.service.join_by_invite(caller, args.invite, self.ws_url(request))

    async def _dev_login(self, _: UserIdentity | None, args: Any, __: web.Request) -> Any:
        email = normalize_email(args.email)
        user_id = user_id_for_email(email)
        name = args.name or email.split("@")[0]
        return {"token": self.tokens.mint_user(user_id, email, name), "userId": user_id,
                "email": email, "name": name}

    def _wrap(self, path: str, args_type: type[_Args], handler: Handler, auth: bool) -> Any:
        endpoint = path.rsplit("/", 1)[-1]
        maximum = {key.rsplit("/", 1)[1]: value
                   for key, value in configured_limits(self.settings).items()
                   if key.rsplit("/", 1)[0] == path}
        decoder = msgspec.json.Decoder(dict[str, Any])

        async def view(request: web.Request) -> web.Response:
            try:
                address = f"ip:{request.remote or '?'}"
                try:
                    caller = await self._caller(request) if auth else None
                except Unauthenticated:
                    # Callers without a valid token are limited by address, so guessing
                    # tokens is throttled like everything else.
                    self._rate_limit(address)
                    raise
                self._rate_limit(f"user:{caller.user_id}" if caller else address)
                body = await self._body(request, decoder)
                raw = body.get("args", None)
                if not isinstance(raw, dict):
                    raise BadRequest("request body must be {\"args\": {...}}")
                args = decode_args(raw, args_type, maximum)
                value = await handler(caller, args, request)
                response = success(value)
            except HubError as exc:
                response = failure(exc)
            except Exception:  # a bug: log it, answer 500 in the same envelope
                logger.exception("%s failed", endpoint)
                response = failure(HubError("internal error"))
            self.metrics.api_requests.labels(endpoint=endpoint, status=response.status).inc()
            return response

        return view

    async def _caller(self, request: web.Request) -> UserIdentity:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("send Authorization: Bearer <user token>")
        return await self.tokens.verify_user(token.strip())

    async def _body(self, request: web.Request, decoder: Any) -> dict[str, Any]:
        limit = self.settings.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BadRequest(f"request body over {limit} bytes", code=ErrorCode.BODY_TOO_LARGE)
        # One read(n) returns only what has arrived so far: keep reading until EOF or the limit.
        data = bytearray()
        while len(data) <= limit:
            chunk = await request.content.read(limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > limit:
            raise BadRequest(f"request body over {limit} bytes", code=ErrorCode.BODY_TOO_LARGE)
        try:
            body = decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            # msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 in a string
            raise BadRequest(f"request body is not a JSON object: {exc}",
                             code=ErrorCode.INVALID_JSON) from None
        return body  # type: ignore[no-any-return]

    def _rate_limit(self, key: str) -> None:
        if not self._buckets.take(key):
            raise RateLimited(f"over {self._buckets.rate:g} requests/s")
