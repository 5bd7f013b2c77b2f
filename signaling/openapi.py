"""``GET /api/openapi.json``: the seed documents' specs merged with the endpoints we add.

The four seed specs ship unchanged in ``signaling/openapi/*.yaml``. The served spec keeps their
paths, operations and response schemas verbatim, so clients generated from the seeds keep
working and every answer still validates against the seeds' own shapes. It adds what the seeds
leave out, so that it states what the server does:

* every failure status an endpoint answers with (the seeds list only 400 and 500), each a
  ``FailedResponse`` whose description names the error codes;
* every limit on the arguments (lengths, patterns, ranges, whole numbers, "exactly one of"),
  derived from the msgspec structs in :mod:`signaling.api` that enforce them, so the two cannot
  drift. A seed's request schema is only narrowed by those constraints (plus the optional
  arguments the seed does not name). An optional argument is given or left out: ``null`` is
  refused, as the seeds' schemas (no ``nullable``) say.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import msgspec
import yaml

from .api import ARGS, RUN, configured_limits
from .codes import ErrorCode as E
from .settings import AuthSettings, LimitSettings, RoomSettings, Settings

SEEDS = ("createMeeting", "startMeeting", "initializeWebRTCRoom", "getMeeting")

_ICE_SERVERS = {
    "type": "array",
    "items": {
        "type": "object", "required": ["urls"],
        "properties": {
            "urls": {"oneOf": [{"type": "string"},
                               {"type": "array", "items": {"type": "string"}}]},
            "username": {"type": "string"},
            "credential": {"type": "string"},
        },
    },
}
_FAILED = {
    "type": "object", "required": ["status", "errorMessage", "errorData"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "errorMessage": {"type": "string"},
        "errorData": {"type": "object", "required": ["code"],
                      "properties": {"code": {"type": "string"},
                                     "retryable": {"type": "boolean"}}},
    },
}


def _envelope(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["success", "error"]},
                           "errorMessage": {"type": "string"},
                           "errorData": {"type": "object"}, "value": value}}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:  # OpenAPI 3.0 forbids an empty ``required`` list
        schema["required"] = required
    return schema


_S, _B, _N = {"type": "string"}, {"type": "boolean"}, {"type": "number"}
#: A meeting's AI persona (``createMeetingFromScenario``; ``getMeeting``'s ``agent``).
_AGENT = _obj(["scenarioId", "name", "voiceId", "voiceProvider", "language", "welcomeMessage"],
              scenarioId=_S, name=_S, voiceId=_S,
              voiceProvider={"type": "string", "enum": ["elevenlabs", "azure", "cartesia"]},
              language=_S, welcomeMessage=_S)

#: Our additions: path -> (summary, value schema, example args). Their args come from ARGS.
EXTRA: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    f"{RUN}/webrtc/index/createJoinToken": (
        ("A join token for the caller in the meeting's room, with its ICE servers and roomUrl: "
         "a link (on server.public_url) that opens the hub's page straight into the room with "
         "that token"),
        _obj(["token", "roomId", "wsUrl", "roomUrl", "role", "expiresAt", "iceServers"],
             token=_S, roomId=_S, wsUrl=_S, roomUrl=_S, role=_S, expiresAt=_N,
             iceServers=_ICE_SERVERS),
        {"meetingId": "meeting_123example"},
    ),
    f"{RUN}/lifecycle/endMeeting": (
        "End a meeting (host only): its room ends for everyone",
        _obj(["success", "state"], success=_B, state=_S),
        {"meetingId": "meeting_123example"},
    ),
    f"{RUN}/webrtc/index/removeParticipant": (
        "Remove a participant from the room (host only); they cannot rejoin",
        _obj(["success", "removedPeers"], success=_B,
             removedPeers={"type": "array", "items": _S}),
        {"meetingId": "meeting_123example", "userId": "user_456example"},
    ),
    f"{RUN}/transcripts/getTranscript": (
        "A meeting's final transcript segments, paginated (host and participants)",
        _obj(["meetingId", "segments", "nextCursor"], meetingId=_S, nextCursor=_S,
             segments={"type": "array", "items": _obj(
                 ["segmentId", "peerId", "userId", "text", "startMs", "endMs"], segmentId=_S,
                 peerId=_S, userId=_S, text=_S, startMs=_N, endMs=_N, interrupted=_B)}),
        {"meetingId": "meeting_123example"},
    ),
    f"{RUN}/recordings/getRecording": (
        "A recorded meeting's state and files, with expiring download URLs (host, participants)",
        _obj(["meetingId", "state", "files"], meetingId=_S,
             state={"type": "string", "enum": ["recording", "processing", "ready", "failed"]},
             files={"type": "array", "items": _obj(
                 ["kind", "mimeType", "startMs", "durationMs", "bytes", "url"],
                 kind={"type": "string", "enum": ["mix", "composite", "track"]}, peerId=_S, userId=_S,
                 mimeType=_S, startMs=_N, durationMs=_N, bytes=_N, url=_S)}),
        {"meetingId": "meeting_123example"},
    ),
    f"{RUN}/webrtc/index/getIceServers": (
        "A fresh ICE server list (with TURN credentials) for the caller",
        _obj(["iceServers"], iceServers=_ICE_SERVERS, ttl=_N),
        {},
    ),
    f"{RUN}/lifecycle/createMeetingFromScenario": (
        ("A meeting with a scenario's AI persona (seeds/meeting-from-scenario.md), started at "
         "once; roomUrl opens the hub's page straight into its room as the person (roomToken: "
         "their join token). regular meetings: the person is the caller, joining as host; "
         "end-user meetings: the person is endUserId, joining as participant. The agent takes "
         "a seat: maxParticipants counts it. The AI configuration flags are stored and have "
         "no effect here"),
        _obj(["meetingId", "roomId", "roomUrl", "roomToken", "wsUrl", "role", "expiresAt",
              "agent"], meetingId=_S, roomId=_S, roomUrl=_S, roomToken=_S, wsUrl=_S, role=_S,
             expiresAt=_N, startedAt=_N, serverTime=_N, agent=_AGENT),
        {"scenarioId": "interview-practice", "name": "Ada Lovelace"},
    ),
    f"{RUN}/scenarios/listScenarios": (
        "The scenarios this deployment provides (createMeetingFromScenario's scenarioId)",
        _obj(["scenarios"], scenarios={"type": "array", "items": _obj(
            ["scenarioId", "title", "description", "personaName", "language", "callDuration"],
            scenarioId=_S, title=_S, description=_S, personaName=_S, language=_S,
            callDuration=_N)}),
        {},
    ),
}


#: How the video provider is chosen, as the served spec and the README state it.
PROVIDER_RULE = (
    "videoProvider is webrtc (webrtcReady true: this hub's mesh rooms) when everyone the meeting "
    "is for fits one mesh room: the host plus participantEmails (the host's own email counted "
    "once) and maxParticipants (when given) are each at most the mesh capacity (4, or the "
    "hub's rooms.capacity if lower). Otherwise it is getstream with webrtcReady false: the "
    "backend's tier, and startMeeting, initializeWebRTCRoom and createJoinToken do not make "
    "a mesh room for it.")

#: The seed's createMeeting example answered ``webrtc`` for its own request (maxParticipants
#: 8, above the mesh): the served spec answers what this server answers for that request.
CREATE_MEETING_EXAMPLE = {
    "status": "success", "errorMessage": "", "errorData": {},
    "value": {"meetingId": "meeting_123example", "webrtcReady": False,
              "videoProvider": "getstream",
              "features": {"recording": False, "transcription": True, "maxParticipants": 8}},
}


def _codes(*codes: E) -> str:
    return ", ".join(f"`{code.value}`" for code in codes)


#: What each failure status means, with the codes it carries (``errorData.code``).
FAILURES: dict[int, str] = {
    400: "Invalid request: " + _codes(E.INVALID_JSON, E.INVALID_ARGS, E.BODY_TOO_LARGE,
                                      E.INVALID_CURSOR, E.BAD_REQUEST),
    401: "No valid user token: " + _codes(E.UNAUTHENTICATED, E.BAD_TOKEN, E.TOKEN_EXPIRED),
    403: "Not allowed: " + _codes(E.NOT_INVITED, E.HOST_ONLY, E.ROLE_NOT_ALLOWED,
                                  E.ORGANIZER_MISMATCH),
    404: "No such meeting, participant or scenario: " + _codes(
        E.MEETING_NOT_FOUND, E.UNKNOWN_PEER, E.SCENARIO_NOT_FOUND),
    409: "The meeting's state does not allow it: " + _codes(
        E.MEETING_NOT_STARTED, E.MEETING_ACTIVE, E.MEETING_CONCLUDED, E.MEETING_CANCELLED,
        E.ROOM_ENDED, E.NOT_WEBRTC, E.MEETING_QUOTA, E.CONFLICT),
    429: "Over the caller's request rate: " + _codes(E.RATE_LIMITED),
    503: "The state store or the identity provider's keys are unreachable (retryable): "
         + _codes(E.UNAVAILABLE, E.JWKS_UNAVAILABLE),
}
#: Every endpoint can answer these: bad input, no valid token, over the rate, store down.
_ALWAYS = (400, 401, 429, 503)
#: The failure statuses each endpoint answers with besides :data:`_ALWAYS`.
STATUSES: dict[str, tuple[int, ...]] = {
    "createMeeting": (403, 409),  # organizerId not the caller; the open-meetings quota
    "startMeeting": (403, 404, 409),
    "endMeeting": (403, 404, 409),
    "initializeWebRTCRoom": (403, 404, 409),
    "getMeeting": (403, 404),
    "createJoinToken": (403, 404, 409),
    "removeParticipant": (403, 404, 409),
    "getIceServers": (),
    "getTranscript": (403, 404),
    "getRecording": (403, 404),
    "createMeetingFromScenario": (404, 409),  # no such scenario; the open-meetings quota
    "listScenarios": (),
}


def statuses(path: str) -> tuple[int, ...]:
    """Every failure status the endpoint at ``path`` answers with, in order."""
    return tuple(sorted(_ALWAYS + STATUSES[path.rsplit("/", 1)[1]]))


# ---------------------------------------------------------------------- args from the structs

#: Keywords that only narrow a schema, and the annotation that goes with them.
_NARROWING = ("minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
              "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "default")


def _oas30(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema 2020-12 node from ``msgspec.json.schema`` as an OpenAPI 3.0 schema."""
    if "$ref" in node:
        return _oas30(defs[node["$ref"].rsplit("/", 1)[1]], defs)
    variants = node.get("anyOf")
    if variants is not None:
        # ``X | None = None``: None is how an argument left out reads; null itself is refused
        # (api.decode_args), so the argument's schema is X's.
        others = [v for v in variants if v != {"type": "null"}]
        if len(others) != 1 or len(others) == len(variants) or node.get("default", 0) is not None:
            raise ValueError(f"cannot express {node} in OpenAPI 3.0")
        return _oas30(others[0], defs)
    out = {k: v for k, v in node.items() if k not in ("title", "$defs")}
    if "enum" in out and "type" not in out and all(isinstance(v, str) for v in out["enum"]):
        out["type"] = "string"
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in out:  # a number in JSON Schema 2020-12, a flag on the limit in OAS 3.0
            out[limit], out[bound] = out[bound], True
    if "properties" in out:
        out["properties"] = {k: _oas30(v, defs) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _oas30(out["items"], defs)
    if not out.get("required", True):
        del out["required"]  # OpenAPI 3.0 forbids an empty ``required`` list
    return out


def args_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The OpenAPI 3.0 schema of an argument struct of :mod:`signaling.api`: the limits it
    enforces, and ``oneOf`` for its ``exactly_one`` fields."""
    raw = msgspec.json.schema(struct)
    schema = _oas30(raw, raw.get("$defs", {}))
    names = getattr(struct, "exactly_one", ())
    if names:
        wire = {f.name: f.encode_name for f in msgspec.structs.fields(struct)}
        schema["oneOf"] = [{"required": [wire[name]]} for name in names]
    return schema


def narrow(seed: dict[str, Any], derived: dict[str, Any]) -> dict[str, Any]:
    """``seed`` (a seed's request schema node) with the constraints of ``derived`` added: the
    seed's own keywords are kept as they are, its properties narrowed one by one, properties
    only ``derived`` has added, ``required`` the union of both."""
    out = copy.deepcopy(seed)
    for key in _NARROWING:
        if key in derived and key not in out:
            out[key] = derived[key]
    if "enum" in derived and not {"enum", "oneOf", "anyOf"} & set(out):
        out["enum"] = derived["enum"]
    if out.get("type") == "number" and derived.get("type") == "integer":
        out["type"] = "integer"
    if "oneOf" in derived and "oneOf" not in out:
        out["oneOf"] = derived["oneOf"]
    if "properties" in derived:
        props = out.setdefault("properties", {})
        for name, schema in derived["properties"].items():
            props[name] = narrow(props[name], schema) if name in props else schema
    if "items" in derived and "items" in out:
        out["items"] = narrow(out["items"], derived["items"])
    required = list(dict.fromkeys([*out.get("required", []), *derived.get("required", [])]))
    if required:
        out["required"] = required
    return out


def _configured(args: dict[str, Any], path: str, settings: Settings) -> dict[str, Any]:
    """``args`` with the limits that are the deployment's settings rather than the structs'
    (:func:`signaling.api.configured_limits`)."""
    for key, highest in configured_limits(settings).items():
        where, name = key.rsplit("/", 1)
        if where == path:
            prop = args["properties"][name]
            prop["maximum"] = min(prop.get("maximum", highest), highest)
    return args


# ---------------------------------------------------------------------- the document


@cache
def _seed(name: str) -> dict[str, Any]:
    text = resources.files("signaling").joinpath(f"openapi/{name}.yaml").read_text()
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def seed_specs() -> dict[str, dict[str, Any]]:
    """The seed specs as shipped, by endpoint name (deep copies)."""
    return {name: copy.deepcopy(_seed(name)) for name in SEEDS}


def _failure_responses(path: str, already: dict[str, Any]) -> dict[str, Any]:
    return {str(code): {"description": FAILURES[code], "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/FailedResponse"}}}}
            for code in statuses(path) if str(code) not in already}


@cache
def _build(max_token_ttl_s: int, max_body_bytes: int, capacity: int) -> dict[str, Any]:
    settings = Settings(auth=AuthSettings(max_token_ttl_s=max_token_ttl_s),
                        limits=LimitSettings(max_body_bytes=max_body_bytes),
                        rooms=RoomSettings(capacity=capacity))
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "connvo-rtc API", "version": "1.0.0",
                 "description": "Meetings, WebRTC rooms, join tokens and ICE servers. The four "
                                "seed endpoints keep the seed documents' exact shapes. Every "
                                "request is a JSON object of at most "
                                f"{max_body_bytes} bytes."},
        "paths": {},
        "components": {"schemas": {"FailedResponse": _FAILED},
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                          "bearerFormat": "JWT"}}},
        "security": [{"bearerAuth": []}],
    }
    schemas = spec["components"]["schemas"]
    for name in SEEDS:
        seed = _seed(name)
        for key, schema in seed["components"]["schemas"].items():
            if key != "FailedResponse":
                schemas[key] = copy.deepcopy(schema)
        [(path, item)] = copy.deepcopy(seed["paths"]).items()
        op = item["post"]
        op["responses"].update(_failure_responses(path, op["responses"]))
        if name in ("createMeeting", "startMeeting"):
            ok = op["responses"]["200"]
            ok["description"] = f"{ok['description']}. {PROVIDER_RULE}"
        if name == "createMeeting":
            op["responses"]["200"]["content"]["application/json"]["example"] = \
                copy.deepcopy(CREATE_MEETING_EXAMPLE)
        body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        request = schemas[body.rsplit("/", 1)[1]]
        request["properties"]["args"] = narrow(
            request["properties"]["args"], _configured(args_schema(ARGS[path]), path, settings))
        spec["paths"][path] = item
    for path, (summary, value, example) in EXTRA.items():
        name = path.rsplit("/", 1)[-1]
        args = _configured(args_schema(ARGS[path]), path, settings)
        schemas[f"Request_{name}"] = _obj(["args"], args=args)
        schemas[f"Response_{name}"] = _envelope(value)
        spec["paths"][path] = {"post": {
            "summary": summary, "operationId": name, "tags": ["WebRTC"],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/Request_{name}"},
                "example": {"args": example}}}},
            "responses": {
                "200": {"description": "success", "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/Response_{name}"}}}},
                **_failure_responses(path, {}),
            },
            "security": [{"bearerAuth": []}],
        }}
    return spec


def build_spec(settings: Settings | None = None) -> dict[str, Any]:
    """The whole API's OpenAPI 3.0 document; limits that are settings (the longest join token,
    the largest body) as ``settings`` has them, or their defaults."""
    settings = settings or Settings()
    return copy.deepcopy(_build(settings.auth.max_token_ttl_s, settings.limits.max_body_bytes,
                                settings.rooms.capacity))
