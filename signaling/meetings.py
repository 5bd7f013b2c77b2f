"""The meeting service behind the HTTP API: who may do what to which meeting and room.

Roles come from the meeting: its organizer is the host, its invited emails are participants,
everyone else is refused. Values returned here are the seed documents' ``value`` objects.

Dev mode only (``auth.dev_login``): the host may mint an expiring *invite link* secret, and anyone
logged in who holds it gets a participant join token (the demo page's "send the link" flow).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import jwt
import msgspec

from .admission import IceServersFor
from .clock import now_ms
from .codes import ErrorCode, meeting_state_code
from .controls import MeetingControls, scenario_controls
from .errors import BadRequest, Conflict, Forbidden, NotFound, RoomEnded, Unauthenticated
from .lifecycle import RoomLifecycle
from .protocol import MESH_LIMIT, AgentSpec, Features, IceServer
from .recordings import Recordings
from .scenarios import Scenario
from .settings import Settings
from .store import Meeting, MeetingState, Room, Store, provider_for
from .tokens import TokenService, UserIdentity, normalize_email
from .webhooks import NO_WEBHOOKS, Webhooks

logger = logging.getLogger(__name__)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def room_id_for(meeting_id: str) -> str:
    """A meeting's room id carries the meeting's own suffix, so a Redis Cluster keeps both in
    one hash slot (see ``redis_store``)."""
    return "room_" + meeting_id.split("_", 1)[-1]


def user_id_for_email(email: str) -> str:
    """A stable user id for dev logins (real deployments take ``sub`` from their IdP). Emails
    are normalised ASCII-only (:func:`~signaling.tokens.normalize_email`): with ``str.lower()``
    ``\u212aate@example.com`` logged in as ``kate@example.com``'s user."""
    return "user_" + hashlib.sha256(normalize_email(email).encode()).hexdigest()[:16]


#: ``createMeetingFromScenario``'s AI configuration flags (argument fields, stored as given;
#: no effect here: see docs/agent.md "API").
AI_FLAGS = ("deep_thinking_enabled", "live_vision_enabled", "gpt_vision_enabled",
            "web_search_enabled", "use_own_api_keys")

#: Audience of dev-mode invite links (never accepted as a join or user token).
INVITE_AUDIENCE = "connvo-rtc:invite"
#: Default lifetime of a dev-mode invite link, seconds.
INVITE_TTL_S = 86_400
#: Longest lifetime a dev-mode invite link may have, seconds.
INVITE_MAX_TTL_S = 7 * 86_400


def mint_invite(secret: str, meeting_id: str, ttl_s: int = INVITE_TTL_S,
                now: float | None = None) -> tuple[str, int]:
    """A dev-mode invite link secret for one meeting: ``(token, expires_at_unix)``.

    Whoever holds it (and is logged in) may join the meeting as a participant until it
    expires; see :meth:`MeetingService.join_by_invite`. Only served when ``auth.dev_login`` is on.
    """
    issued = int(time.time() if now is None else now)
    claims = {"iss": "connvo-rtc", "aud": INVITE_AUDIENCE, "mid": meeting_id, "iat": issued,
              "exp": issued + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256"), issued + ttl_s


def verify_invite(secrets_: Sequence[str], token: str) -> str:
    """The meeting id an invite is for; :class:`Unauthenticated` with ``invite-expired`` or
    ``bad-invite`` otherwise."""
    for secret in secrets_:
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], audience=INVITE_AUDIENCE,
                                issuer="connvo-rtc", leeway=10,
                                options={"require": ["exp", "iat", "mid"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("this invite link has expired", code=ErrorCode.INVITE_EXPIRED) from None
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            break
        meeting_id = claims.get("mid")
        if isinstance(meeting_id, str) and meeting_id:
            return meeting_id
        break
    raise Unauthenticated("this invite link is not valid", code=ErrorCode.BAD_INVITE)


def room_url(ws_url: str, room_id: str, token: str) -> str:
    """The link that opens the hub's page (``/``, at the same place as ``/ws``: on
    ``server.public_url`` when set) straight into ``room_id`` with ``token``. The token rides in
    the fragment, which browsers never send to a server (no access log or proxy sees it)."""
    base = ws_url.removesuffix("/ws")
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if base.startswith(ws):
            base = http + base[len(ws):]
    return f"{base}/?{urlencode({'room': room_id})}#{urlencode({'token': token})}"


def ice_dicts(servers: list[IceServer]) -> list[dict[str, Any]]:
    out = []
    for server in servers:
        entry: dict[str, Any] = {"urls": server.urls}
        if server.username is not None:
            entry["username"] = server.username
        if server.credential is not None:
            entry["credential"] = server.credential
        out.append(entry)
    return out


class MeetingService:
    """Meetings, rooms and join tokens for API callers."""

    def __init__(self, *, settings: Settings, store: Store, rooms: RoomLifecycle, tokens: TokenService,
                 ice_servers_for: IceServersFor,
                 on_room_active: Callable[[Meeting, Room], Any] | None = None,
                 webhooks: Webhooks = NO_WEBHOOKS,
                 recordings: Recordings | None = None,
                 scenarios: dict[str, Scenario] | None = None) -> None:
        self.settings = settings
        #: The deployment's scenarios by id, loaded once at start (``agent.scenarios_dir``).
        self.scenarios = scenarios or {}
        #: Recorded meetings' files and download links.
        self.recordings = recordings
        self.store = store
        self.rooms = rooms
        self.tokens = tokens
        self.ice_servers_for = ice_servers_for
        self.on_room_active = on_room_active
        self.webhooks = webhooks

    # ------------------------------------------------------------------ access

    async def _meeting(self, meeting_id: str) -> Meeting:
        meeting = await self.store.get_meeting(meeting_id)
        if meeting is None:
            raise NotFound(f"no meeting {meeting_id}", code=ErrorCode.MEETING_NOT_FOUND)
        return meeting

    @staticmethod
    def role_of(meeting: Meeting, caller: UserIdentity) -> str | None:
        """``host`` (by ``sub``), ``participant`` (by a verified email on the invitation list,
        compared ASCII-case-insensitively, see :func:`~signaling.tokens.normalize_email`) or
        ``None``."""
        if caller.user_id == meeting.organizer_id:
            return "host"
        email = normalize_email(caller.email)
        if email and email in meeting.participant_emails:
            return "participant"
        return None

    def _require_role(self, meeting: Meeting, caller: UserIdentity, *roles: str) -> str:
        role = self.role_of(meeting, caller)
        if role is None:
            raise Forbidden("you are not invited to this meeting", code=ErrorCode.NOT_INVITED)
        if roles and role not in roles:
            raise Forbidden(f"only the {' or '.join(roles)} may do this", code=ErrorCode.HOST_ONLY)
        return role

    # ------------------------------------------------------------------ seed endpoints

    async def create_meeting(self, caller: UserIdentity, args: Any) -> dict[str, Any]:
        if args.organizer_id is not None and args.organizer_id != caller.user_id:
            raise Forbidden("organizerId must be the caller", code=ErrorCode.ORGANIZER_MISMATCH)
        emails = tuple(dict.fromkeys(normalize_email(e) for e in args.participant_emails))
        controls = MeetingControls(
            recording=args.recording_enabled, transcription=args.transcription_enabled,
            chat=args.chat_enabled, screen_sharing=args.screen_sharing_enabled,
            participant_video=args.participant_video_enabled,
            participant_audio=args.participant_audio_enabled,
            waiting_room=args.waiting_room_enabled, auto_admit=args.auto_admit,
            max_duration_minutes=_int(args.max_duration_minutes),
        )
        ts = now_ms()
        meeting = Meeting(
            meeting_id=new_id("meeting"), title=args.title.strip(), organizer_id=caller.user_id,
            organizer_email=normalize_email(caller.email), description=args.description,
            participant_emails=emails, meeting_type=args.meeting_type,
            max_participants=int(args.max_participants or MESH_LIMIT),
            scheduled_at=args.scheduled_at, duration=args.duration, created_at=ts,
            updated_at=ts, **_control_fields(controls),
        )
        meeting = msgspec.structs.replace(meeting, provider=provider_for(
            meeting.people, _int(args.max_participants), self.settings.rooms.capacity))
        await self.store.create_meeting(
            meeting, max_open=self.settings.limits.max_open_meetings_per_user)
        logger.info("meeting=%s created by user=%s (%d invited, provider %s)",
                    meeting.meeting_id, caller.user_id, len(emails), meeting.video_provider)
        return {
            "meetingId": meeting.meeting_id,
            "webrtcReady": meeting.video_provider == "webrtc",
            "videoProvider": meeting.video_provider,
            "features": {"recording": meeting.recording, "transcription": meeting.transcription,
                         "maxParticipants": meeting.max_participants},
        }

    async def start_meeting(self, caller: UserIdentity, meeting_id: str) -> dict[str, Any]:
        meeting = await self._meeting(meeting_id)
        self._require_role(meeting, caller, "host")
        meeting, room = await self._start(meeting_id)
        if room is None:
            return {"success": True, "videoProvider": "getstream", "webrtcReady": False}
        return {
            "success": True, "videoProvider": "webrtc", "webrtcReady": True,
            "roomInfo": {"roomId": room.room_id,
                         "iceServers": ice_dicts(self.ice_servers_for(caller.user_id))},
        }

    async def _start(self, meeting_id: str) -> tuple[Meeting, Room | None]:
        """The meeting becomes active and its room opens (``None``: not a ``webrtc`` meeting):
        its deadline is watched, its server peer's job queued (``on_room_active``)."""
        meeting = await self.store.transition_meeting(
            meeting_id, "active", from_states=("scheduled",), now_ms=now_ms())
        if meeting.video_provider != "webrtc":
            return meeting, None
        room = await self._ensure_room(meeting, None)
        if self.rooms.deadlines is not None:  # this worker ends it on time, whoever joins
            await self.rooms.deadlines.watch(room)
        logger.info("meeting=%s started, room=%s", meeting_id, room.room_id)
        await self.webhooks.meeting_started(meeting, room)
        return meeting, room

    async def initialize_room(self, caller: UserIdentity, meeting_id: str,
                              max_participants: int | None) -> dict[str, Any]:
        meeting = await self._meeting(meeting_id)
        self._require_role(meeting, caller)
        if meeting.state in ("concluded", "cancelled"):
            raise RoomEnded(f"the meeting is {meeting.state}", code=meeting_state_code(meeting.state))
        wanted = max_participants or meeting.max_participants
        if meeting.video_provider != "webrtc" or wanted > MESH_LIMIT:
            # Not ours to host; report the size asked for, not our mesh room's capacity.
            features = _features_dict(self._features(meeting, wanted)) | {"maxParticipants": wanted}
            return {"success": False, "provider": "getstream", "roomId": "",
                    "features": features, "iceServers": []}
        room = await self._ensure_room(meeting, max_participants)
        return {
            "success": True, "provider": "webrtc", "roomId": room.room_id,
            "features": _features_dict(room.features),
            "iceServers": ice_dicts(self.ice_servers_for(caller.user_id)),
        }

    async def get_meeting(self, caller: UserIdentity, meeting_id: str) -> dict[str, Any]:
        meeting = await self._meeting(meeting_id)
        role = self._require_role(meeting, caller)
        seats = await self.store.seats(meeting.room_id) if meeting.room_id else []
        people = [s for s in seats if s.role != "tap"]
        presence = await self.store.presence(meeting_id, caller.user_id) or "invited"
        value: dict[str, Any] = {
            "_id": meeting.meeting_id, "_creationTime": meeting.created_at,
            "organizerId": meeting.organizer_id, "title": meeting.title,
            "state": meeting.state,
            "participantCount": len({s.user_id for s in people}),
            "activeWebRTCSessions": sum(1 for s in people if s.connected),
            "webrtcEnabled": meeting.video_provider == "webrtc",
            "userRole": role, "userPresence": presence,
            "createdAt": meeting.created_at, "updatedAt": meeting.updated_at,
        }
        for key, attr in (("description", "description"), ("scheduledAt", "scheduled_at"),
                          ("duration", "duration")):
            if getattr(meeting, attr) is not None:
                value[key] = getattr(meeting, attr)
        if meeting.room_id:
            value["roomId"] = meeting.room_id
        if meeting.agent is not None:  # the seed's value schema allows more properties
            value["agent"] = agent_dict(meeting.agent)
        return value

    # ------------------------------------------------------------------ scenarios

    async def list_scenarios(self) -> dict[str, Any]:
        """The scenarios this deployment provides (``meetings/scenarios/listScenarios``)."""
        return {"scenarios": [s.summary() for s in self.scenarios.values()]}

    async def create_from_scenario(self, caller: UserIdentity, args: Any,
                                   ws_url: str) -> dict[str, Any]:
        """``createMeetingFromScenario``: a meeting whose room has the scenario's AI persona,
        started at once (the agent's job is queued), and a join token for the person.

        ``regular`` meetings are the caller's own: the caller is the organizer and the person
        joins as its ``host`` (they may end it; participant controls bind anyone else).
        ``end-user`` meetings are made by a backend for an end user: the caller organizes (and
        is host through the API), the person joins as a ``participant``, so the participant
        controls apply to them (with a waiting room and no ``autoAdmit``, they wait for a host).
        The end user's user id is ``endUserId`` when given, else the caller's (a ``regular``
        meeting only stores ``endUserId``)."""
        scenario = self.scenarios.get(args.scenario_id)
        if scenario is None:
            raise NotFound(f"no scenario {args.scenario_id!r} in this deployment (see "
                           "meetings/scenarios/listScenarios)", code=ErrorCode.SCENARIO_NOT_FOUND)
        end_user = args.meeting_type == "end-user"
        controls = scenario_controls(scenario.call_duration, **{
            name: value for name, value in (
                ("recording", args.recording_enabled),
                ("transcription", args.transcription_enabled), ("chat", args.chat_enabled),
                ("screen_sharing", args.screen_sharing_enabled),
                ("participant_video", args.participant_video_enabled),
                ("participant_audio", args.participant_audio_enabled),
                ("waiting_room", args.waiting_room_enabled), ("auto_admit", args.auto_admit),
                ("max_duration_minutes", _int(args.max_duration_minutes)))
            if value is not None})
        # Checked against rooms.capacity before this (api.configured_limits).
        seats = _int(args.max_participants) or self.settings.rooms.capacity
        persona = scenario.persona
        agent = AgentSpec(
            scenario_id=scenario.id, name=persona.name,
            voice_id=args.voice_id or persona.voice_id,
            voice_provider=args.voice_provider or persona.voice_provider,
            language=args.language or persona.language,
            welcome_message=(args.welcome_message or persona.welcome_message).strip())
        ts = now_ms()
        meeting = Meeting(
            meeting_id=new_id("meeting"), title=scenario.title, organizer_id=caller.user_id,
            organizer_email=normalize_email(caller.email), description=scenario.description,
            meeting_type=args.meeting_type, max_participants=seats, provider="webrtc",
            created_at=ts, updated_at=ts, agent=agent, end_user_id=args.end_user_id,
            ai_config={name: bool(getattr(args, name)) for name in AI_FLAGS},
            **_control_fields(controls))
        await self.store.create_meeting(
            meeting, max_open=self.settings.limits.max_open_meetings_per_user)
        meeting, room = await self._start(meeting.meeting_id)
        assert room is not None  # provider "webrtc": the room is ours
        meeting = msgspec.structs.replace(meeting, room_id=room.room_id)
        if end_user:
            person = UserIdentity(user_id=args.end_user_id or caller.user_id,
                                  name=args.name.strip())
        else:
            person = UserIdentity(user_id=caller.user_id, email=caller.email,
                                  name=args.name.strip())
        join = await self._join_token_for(meeting, person, "participant" if end_user else "host",
                                          ws_url, None)
        logger.info("meeting=%s from scenario %s by user=%s: room=%s, agent %s",
                    meeting.meeting_id, scenario.id, caller.user_id, room.room_id, agent.name)
        return {"meetingId": meeting.meeting_id, "roomId": room.room_id,
                "roomUrl": join["roomUrl"], "roomToken": join["token"], "wsUrl": ws_url,
                "role": join["role"], "expiresAt": join["expiresAt"],
                "startedAt": meeting.started_at, "serverTime": now_ms(),
                "agent": agent_dict(agent)}

    # ------------------------------------------------------------------ our additions

    async def create_join_token(self, caller: UserIdentity, meeting_id: str, role: str | None,
                                ws_url: str, ttl_s: int | None) -> dict[str, Any]:
        meeting = await self._meeting(meeting_id)
        granted = self._require_role(meeting, caller)
        if role is not None and role != granted:
            # A caller may lower its role (host or participant -> observer), never raise it.
            order = ("observer", "participant", "host")
            if order.index(role) > order.index(granted):
                raise Forbidden(f"you may join as {granted}, not {role}", code=ErrorCode.ROLE_NOT_ALLOWED)
            granted = role
        return await self._join_token_for(meeting, caller, granted, ws_url, ttl_s)

    async def _join_token_for(self, meeting: Meeting, caller: UserIdentity, granted: str,
                              ws_url: str, ttl_s: int | None) -> dict[str, Any]:
        if meeting.state in ("concluded", "cancelled"):
            raise RoomEnded(f"the meeting is {meeting.state}", code=meeting_state_code(meeting.state))
        if meeting.video_provider != "webrtc":
            raise Conflict("the meeting is above the WebRTC mesh limit; its video is not ours",
                           code=ErrorCode.NOT_WEBRTC)
        # An initialised room is not an open one: peers join only once the host has started.
        if meeting.state != "active" or meeting.room_id is None:
            raise Conflict("the meeting has not started: the host must start it",
                           code=ErrorCode.MEETING_NOT_STARTED)
        room = await self.store.get_room(meeting.room_id)
        if room is None or room.state == "ended":
            raise RoomEnded("the room has ended")
        name = caller.name or caller.email.split("@")[0] or caller.user_id
        token, expires = self.tokens.mint_join(room.room_id, caller.user_id, granted, name=name,
                                               ttl_s=ttl_s)
        return {"token": token, "roomId": room.room_id, "wsUrl": ws_url,
                "roomUrl": room_url(ws_url, room.room_id, token), "role": granted,
                "expiresAt": expires * 1000,
                "iceServers": ice_dicts(self.ice_servers_for(caller.user_id))}

    async def end_meeting(self, caller: UserIdentity, meeting_id: str) -> dict[str, Any]:
        meeting = await self._meeting(meeting_id)
        self._require_role(meeting, caller, "host")
        if meeting.state in ("concluded", "cancelled"):
            return {"success": True, "state": meeting.state}  # ending twice is not an error
        target: MeetingState = "cancelled" if meeting.state == "scheduled" else "concluded"
        # Move the meeting before ending its room: RoomLifecycle.end_room concludes the meeting it belongs
        # to, which made cancelling a scheduled meeting with an initialised room a 409.
        meeting = await self.store.transition_meeting(
            meeting_id, target, from_states=("scheduled", "active"), now_ms=now_ms())
        if meeting.room_id:
            await self.rooms.end_room(meeting.room_id, "ended by host")
        return {"success": True, "state": meeting.state}

    async def remove_participant(self, caller: UserIdentity, meeting_id: str, *,
                                 user_id: str | None, peer_id: str | None) -> dict[str, Any]:
        meeting = await self._meeting(meeting_id)
        self._require_role(meeting, caller, "host")
        if meeting.room_id is None:
            raise Conflict("the meeting has no room", code=ErrorCode.MEETING_NOT_STARTED)
        seats = await self.store.seats(meeting.room_id)
        targets = [s for s in seats if (user_id and s.user_id == user_id)
                   or (peer_id and s.peer_id == peer_id)]
        if user_id == caller.user_id or any(s.user_id == caller.user_id for s in targets):
            raise BadRequest("the host cannot remove itself; end the meeting instead")
        banned = user_id or (targets[0].user_id if targets else None)
        if banned is None:
            raise NotFound("no such participant in the room", code=ErrorCode.UNKNOWN_PEER)
        await self.store.ban(meeting.room_id, banned)
        await self.rooms.remove_user_seats(meeting.room_id, targets, "removed")
        return {"success": True, "removedPeers": [s.peer_id for s in targets]}

    # ------------------------------------------------------------------ dev mode: invite links

    async def create_invite(self, caller: UserIdentity, meeting_id: str,
                            ttl_s: int | None) -> dict[str, Any]:
        """Dev mode only: the host gets a link secret anyone logged in may join with."""
        meeting = await self._meeting(meeting_id)
        self._require_role(meeting, caller, "host")
        if meeting.state in ("concluded", "cancelled"):
            raise RoomEnded(f"the meeting is {meeting.state}", code=meeting_state_code(meeting.state))
        ttl = INVITE_TTL_S if ttl_s is None else ttl_s
        if not 60 <= ttl <= INVITE_MAX_TTL_S:
            raise BadRequest(f"invite ttl must be 60..{INVITE_MAX_TTL_S} s, got {ttl}")
        invite, expires = mint_invite(self.tokens.secrets[0], meeting_id, ttl)
        return {"invite": invite, "meetingId": meeting_id, "expiresAt": expires * 1000}

    async def join_by_invite(self, caller: UserIdentity, invite: str,
                             ws_url: str) -> dict[str, Any]:
        """Dev mode only: a join token for the invite's meeting, as ``participant`` (or
        ``host`` for its organizer), without being on ``participantEmails``."""
        meeting = await self._meeting(verify_invite(self.tokens.secrets, invite))
        granted = self.role_of(meeting, caller) or "participant"
        value = await self._join_token_for(meeting, caller, granted, ws_url, None)
        return value | {"meetingId": meeting.meeting_id, "title": meeting.title,
                        "startedAt": meeting.started_at, "serverTime": now_ms()}

    async def check_invite(self, invite: str) -> dict[str, Any]:
        """Dev mode only, no login: what an invite link leads to, so the page can say that a
        link is broken, expired, ended or not started yet before it turns the camera on.
        ``state`` is the meeting's (``scheduled`` until the host starts it); ``startedAt``
        and ``serverTime`` (unix ms) let the page show how long the meeting has run. A link
        that leads nowhere is an answer too, not an HTTP error (a page asking about its own
        link is not failing): ``{valid: false, code}`` with ``bad-invite``, ``invite-expired``
        or ``meeting-not-found``."""
        try:
            meeting = await self._meeting(verify_invite(self.tokens.secrets, invite))
        except (Unauthenticated, NotFound) as exc:
            return {"valid": False, "code": exc.code, "message": exc.message}
        return {"valid": True, "meetingId": meeting.meeting_id, "title": meeting.title,
                "state": meeting.state, "startedAt": meeting.started_at, "serverTime": now_ms()}

    async def get_transcript(self, caller: UserIdentity, meeting_id: str, cursor: str,
                             limit: int) -> dict[str, Any]:
        """Final transcript segments of a meeting (host and participants), in the order they
        were finalised, ``limit`` at a time; pass ``nextCursor`` back for the next page."""
        meeting = await self._meeting(meeting_id)
        self._require_role(meeting, caller)
        segments, next_cursor = await self.store.segments(meeting_id, after=cursor, limit=limit)
        return {"meetingId": meeting_id, "nextCursor": next_cursor, "segments": [
            {"segmentId": seg.segment_id, "peerId": seg.peer_id, "userId": seg.user_id,
             "text": seg.text, "startMs": seg.start_ms, "endMs": seg.end_ms,
             "interrupted": seg.interrupted}
            for seg in segments]}

    async def get_recording(self, caller: UserIdentity, meeting_id: str,
                            base_url: str) -> dict[str, Any]:
        """A meeting's recording: its state and files with signed download URLs (host and
        participants; a meeting that does not record is 404 ``not-recorded``)."""
        meeting = await self._meeting(meeting_id)
        self._require_role(meeting, caller)
        if not meeting.recording or self.recordings is None:
            raise NotFound("this meeting is not recorded", code=ErrorCode.NOT_RECORDED)
        return await self.recordings.describe(meeting, base_url)

    def ice_servers(self, caller: UserIdentity) -> dict[str, Any]:
        return {"iceServers": ice_dicts(self.ice_servers_for(caller.user_id)),
                "ttl": self.settings.ice.turn_ttl_s}

    # ------------------------------------------------------------------ helpers

    def _features(self, meeting: Meeting, max_participants: int | None) -> Features:
        capacity = min(max_participants or meeting.max_participants, self.settings.rooms.capacity)
        return Features(chat=meeting.chat, screen_sharing=meeting.screen_sharing,
                        transcription=meeting.transcription, recording=meeting.recording,
                        record_video=meeting.recording and meeting.participant_video
                        and self.settings.recording.video,
                        max_participants=capacity, participant_video=meeting.participant_video,
                        participant_audio=meeting.participant_audio,
                        waiting_room=meeting.waiting_room, auto_admit=meeting.auto_admit,
                        max_duration_minutes=meeting.max_duration_minutes,
                        agent=meeting.agent)

    async def _ensure_room(self, meeting: Meeting, max_participants: int | None) -> Room:
        features = self._features(meeting, max_participants)
        room = await self.store.attach_room(Room(
            room_id=room_id_for(meeting.meeting_id), meeting_id=meeting.meeting_id,
            capacity=features.max_participants, features=features, created_at=now_ms(),
        ))
        if room.state == "ended":
            raise RoomEnded("the meeting's room has ended")
        if self.on_room_active is not None:
            await self.on_room_active(meeting, room)
        return room


def agent_dict(agent: AgentSpec) -> dict[str, Any]:
    """A meeting's AI persona as ``getMeeting`` and ``createMeetingFromScenario`` show it."""
    return msgspec.to_builtins(agent)  # type: ignore[no-any-return]


def _features_dict(features: Features) -> dict[str, Any]:
    """``features`` as ``initializeWebRTCRoom`` returns them: the seed's five, then the
    meeting controls, named as ``joined.features`` names them."""
    shown: dict[str, Any] = msgspec.to_builtins(features)
    if shown.get("agent") is None:
        shown.pop("agent", None)  # only meetings from a scenario have an agent
    return shown


def _control_fields(controls: MeetingControls) -> dict[str, Any]:
    """A :class:`Meeting`'s fields for ``controls``."""
    return dataclasses.asdict(controls)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
