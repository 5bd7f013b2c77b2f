"""``GET /api/openapi.json``: the seed documents' specs merged with the endpoints we add.

The four seed specs ship unchanged in ``signaling/openapi/*.yaml``; their paths and schemas are
taken verbatim so clients generated from the seeds keep working.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import yaml

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

#: Our additions: path -> (summary, args schema, value schema, example args)
EXTRA: dict[str, tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "/api/run/meetings/webrtc/index/createJoinToken": (
        "A join token for the caller in the meeting's room, with its ICE servers",
        _obj(["meetingId"], meetingId=_S,
             role={"type": "string", "enum": ["host", "participant", "observer"]},
             ttlSeconds=_N),
        _obj(["token", "roomId", "wsUrl", "role", "expiresAt", "iceServers"], token=_S,
             roomId=_S, wsUrl=_S, role=_S, expiresAt=_N, iceServers=_ICE_SERVERS),
        {"meetingId": "meeting_123example"},
    ),
    "/api/run/meetings/lifecycle/endMeeting": (
        "End a meeting (host only): its room ends for everyone",
        _obj(["meetingId"], meetingId=_S),
        _obj(["success", "state"], success=_B, state=_S),
        {"meetingId": "meeting_123example"},
    ),
    "/api/run/meetings/webrtc/index/removeParticipant": (
        "Remove a participant from the room (host only); they cannot rejoin",
        _obj(["meetingId"], meetingId=_S, userId=_S, peerId=_S),
        _obj(["success", "removedPeers"], success=_B,
             removedPeers={"type": "array", "items": _S}),
        {"meetingId": "meeting_123example", "userId": "user_456example"},
    ),
    "/api/run/meetings/transcripts/getTranscript": (
        "A meeting's final transcript segments, paginated (host and participants)",
        _obj(["meetingId"], meetingId=_S, cursor=_S, limit=_N),
        _obj(["meetingId", "segments", "nextCursor"], meetingId=_S, nextCursor=_S,
             segments={"type": "array", "items": _obj(
                 ["segmentId", "peerId", "userId", "text", "startMs", "endMs"], segmentId=_S,
                 peerId=_S, userId=_S, text=_S, startMs=_N, endMs=_N)}),
        {"meetingId": "meeting_123example"},
    ),
    "/api/run/meetings/webrtc/index/getIceServers": (
        "A fresh ICE server list (with TURN credentials) for the caller",
        _obj([]),
        _obj(["iceServers"], iceServers=_ICE_SERVERS, ttl=_N),
        {},
    ),
}


@cache
def _seed(name: str) -> dict[str, Any]:
    text = resources.files("signaling").joinpath(f"openapi/{name}.yaml").read_text()
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def seed_specs() -> dict[str, dict[str, Any]]:
    """The seed specs as shipped, by endpoint name (deep copies)."""
    return {name: copy.deepcopy(_seed(name)) for name in SEEDS}


@cache
def _build() -> dict[str, Any]:
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "connvo-rtc API", "version": "1.0.0",
                 "description": "Meetings, WebRTC rooms, join tokens and ICE servers. The four "
                                "seed endpoints keep the seed documents' exact shapes."},
        "paths": {},
        "components": {"schemas": {"FailedResponse": _FAILED},
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                          "bearerFormat": "JWT"}}},
        "security": [{"bearerAuth": []}],
    }
    for name in SEEDS:
        seed = _seed(name)
        spec["paths"].update(copy.deepcopy(seed["paths"]))
        for key, schema in seed["components"]["schemas"].items():
            if key != "FailedResponse":
                spec["components"]["schemas"][key] = copy.deepcopy(schema)
    for path, (summary, args, value, example) in EXTRA.items():
        name = path.rsplit("/", 1)[-1]
        spec["components"]["schemas"][f"Request_{name}"] = _obj(["args"], args=args)
        spec["components"]["schemas"][f"Response_{name}"] = _envelope(value)
        spec["paths"][path] = {"post": {
            "summary": summary, "operationId": name, "tags": ["WebRTC"],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/Request_{name}"},
                "example": {"args": example}}}},
            "responses": {
                "200": {"description": "success", "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/Response_{name}"}}}},
                **{str(code): {"description": "failure", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/FailedResponse"}}}}
                   for code in (400, 401, 403, 404, 409, 429, 503)},
            },
            "security": [{"bearerAuth": []}],
        }}
    return spec


def build_spec() -> dict[str, Any]:
    """The whole API's OpenAPI 3.0 document."""
    return copy.deepcopy(_build())
