"""Every close code and error code of the hub, declared once.

:class:`Close` lists the websocket close codes the hub sends (RFC 6455 codes below 4000, ours
from 4400: 44xx mirrors the HTTP status of the same meaning). :class:`ErrorCode` lists the
machine codes of ``error`` frames (``error.code``) and of HTTP failures (``errorData.code``).
The hub's error tree (:mod:`signaling.errors`), the Python peer client (:mod:`media.errors`) and
the browser client (``static/connvo.js``, whose table a test compares with this module) take
their codes from here.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Close(IntEnum):
    """Websocket close codes."""

    NORMAL = 1000
    #: The server is shutting down (the seat is kept: resume on another worker).
    GOING_AWAY = 1001
    #: A framing error (RFC 6455).
    PROTOCOL_ERROR = 1002
    #: A text frame that is not UTF-8.
    INVALID_DATA = 1007
    #: Policy violation: the client does not read its frames (slow consumer).
    POLICY = 1008
    FRAME_TOO_LARGE = 1009
    #: Never sent: a close frame that carried no code.
    NO_STATUS = 1005
    #: Never sent: what a client sees when the connection broke without a close frame.
    ABNORMAL = 1006
    INTERNAL_ERROR = 1011
    #: Sent by proxies and load balancers (restart, bad gateway): worth resuming.
    SERVICE_RESTART = 1012
    BAD_GATEWAY = 1014
    #: The worker is at its connection limit or a dependency is down: retry later.
    TRY_AGAIN_LATER = 1013
    BAD_JOIN = 4400
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    JOIN_TIMEOUT = 4408
    ROOM_FULL = 4409
    ROOM_ENDED = 4410
    #: This socket's seat was taken over: the same peer resumed on another socket, or the same
    #: user joined again. Not an error to retry: the newer socket holds the seat.
    TAKEN_OVER = 4411
    RATE_LIMITED = 4429


class ErrorCode(StrEnum):
    """Machine codes of ``error`` frames and HTTP failures (stable: clients branch on them)."""

    # generic, one per error class of signaling.errors
    INTERNAL = "internal"
    BAD_REQUEST = "bad-request"
    INVALID_MESSAGE = "invalid-message"
    BAD_JOIN = "bad-join"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    ROOM_FULL = "room-full"
    ROOM_ENDED = "room-ended"
    RATE_LIMITED = "rate-limited"
    UNAVAILABLE = "unavailable"
    JOIN_TIMEOUT = "join-timeout"
    FEATURE_DISABLED = "feature-disabled"
    PEER_UNAVAILABLE = "peer-unavailable"
    # websocket input
    UNKNOWN_TYPE = "unknown-type"
    INVALID_JSON = "invalid-json"
    ALREADY_JOINED = "already-joined"
    NOT_JOINED = "not-joined"
    UNKNOWN_PEER = "unknown-peer"
    WRONG_ROOM = "wrong-room"
    NO_ROOM = "no-room"
    SERVER_FULL = "server-full"
    REMOVED = "removed"
    #: The room has a waiting room and this peer has not been admitted yet: only ``ping`` and
    #: ``leave`` are accepted meanwhile.
    WAITING = "waiting"
    #: Close reason (with Close.FORBIDDEN) and error code: a host turned the knock down.
    DENIED = "denied"
    #: Close reason (with Close.JOIN_TIMEOUT): nobody admitted the peer within
    #: ``rooms.waiting_timeout_s``.
    WAITING_TIMEOUT = "waiting-timeout"
    #: Close reason (with Close.ROOM_FULL): ``rooms.max_waiting`` peers wait already.
    WAITING_ROOM_FULL = "waiting-room-full"
    #: Close reason with Close.TAKEN_OVER.
    TAKEN_OVER = "taken-over"
    #: Close reason with Close.FRAME_TOO_LARGE.
    FRAME_TOO_LARGE = "frame-too-large"
    # tokens
    BAD_TOKEN = "bad-token"
    TOKEN_EXPIRED = "token-expired"
    JWKS_UNAVAILABLE = "jwks-unavailable"
    # the HTTP API
    UNKNOWN_ENDPOINT = "unknown-endpoint"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    INVALID_ARGS = "invalid-args"
    BODY_TOO_LARGE = "body-too-large"
    INVALID_CURSOR = "invalid-cursor"
    # meetings
    MEETING_NOT_FOUND = "meeting-not-found"
    MEETING_NOT_STARTED = "meeting-not-started"
    NOT_INVITED = "not-invited"
    HOST_ONLY = "host-only"
    ORGANIZER_MISMATCH = "organizer-mismatch"
    ROLE_NOT_ALLOWED = "role-not-allowed"
    NOT_WEBRTC = "not-webrtc"
    INVITE_EXPIRED = "invite-expired"
    #: The meeting is not in a state that allows this; one code per state.
    MEETING_SCHEDULED = "meeting-scheduled"
    MEETING_ACTIVE = "meeting-active"
    MEETING_CONCLUDED = "meeting-concluded"
    MEETING_CANCELLED = "meeting-cancelled"
    BAD_INVITE = "bad-invite"
    #: The organizer has ``limits.max_open_meetings_per_user`` open meetings already.
    MEETING_QUOTA = "meeting-quota"
    #: ``recordings/getRecording`` for a meeting created without ``recordingEnabled``.
    NOT_RECORDED = "not-recorded"
    #: ``createMeetingFromScenario`` with a ``scenarioId`` the deployment does not provide.
    SCENARIO_NOT_FOUND = "scenario-not-found"


def meeting_state_code(state: str) -> ErrorCode:
    """The code of a refusal because the meeting is in ``state`` (``meeting-concluded`` ...)."""
    return ErrorCode(f"meeting-{state}")


#: Close codes the browser and Python clients treat as final (no reconnect): the hub's verdicts.
FATAL_CLOSES: dict[Close, ErrorCode] = {
    Close.BAD_JOIN: ErrorCode.BAD_JOIN,
    Close.UNAUTHENTICATED: ErrorCode.TOKEN_EXPIRED,
    Close.FORBIDDEN: ErrorCode.FORBIDDEN,
    Close.NOT_FOUND: ErrorCode.NO_ROOM,
    Close.JOIN_TIMEOUT: ErrorCode.JOIN_TIMEOUT,
    Close.ROOM_FULL: ErrorCode.ROOM_FULL,
    Close.ROOM_ENDED: ErrorCode.ROOM_ENDED,
    Close.TAKEN_OVER: ErrorCode.TAKEN_OVER,
    Close.RATE_LIMITED: ErrorCode.RATE_LIMITED,
    Close.FRAME_TOO_LARGE: ErrorCode.FRAME_TOO_LARGE,
}
