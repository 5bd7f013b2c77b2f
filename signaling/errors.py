"""The hub's error tree.

Every error the hub raises on purpose is a :class:`HubError`: it carries a stable machine code
(sent to clients as ``error.code`` on the websocket and ``errorData.code`` over HTTP), the HTTP
status and websocket close code it maps to, and whether retrying can succeed.
"""

from __future__ import annotations

from .codes import Close, ErrorCode


class HubError(Exception):
    """Base of every deliberate hub error."""

    code: str = ErrorCode.INTERNAL
    http_status = 500
    #: Close code when the error ends a websocket; ``None`` means the socket stays open.
    close_code: Close | None = None
    retryable = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequest(HubError):
    """Input failed validation (HTTP 400; on the websocket an ``error`` frame, socket kept)."""

    code = ErrorCode.BAD_REQUEST
    http_status = 400


class ProtocolError(BadRequest):
    """A websocket frame that is not a valid protocol message."""

    code = ErrorCode.INVALID_MESSAGE


class BadJoin(BadRequest):
    """The first frame was not a usable ``join`` (close 4400)."""

    code = ErrorCode.BAD_JOIN
    close_code = Close.BAD_JOIN


class Unauthenticated(HubError):
    """Missing, malformed, badly signed or expired credentials (HTTP 401, close 4401)."""

    code = ErrorCode.UNAUTHENTICATED
    http_status = 401
    close_code = Close.UNAUTHENTICATED


class Forbidden(HubError):
    """Authenticated but not allowed (HTTP 403, close 4403)."""

    code = ErrorCode.FORBIDDEN
    http_status = 403
    close_code = Close.FORBIDDEN


class NotFound(HubError):
    """No such meeting, room or peer (HTTP 404, close 4404)."""

    code = ErrorCode.NOT_FOUND
    http_status = 404
    close_code = Close.NOT_FOUND


class Conflict(HubError):
    """The request contradicts the current state (HTTP 409)."""

    code = ErrorCode.CONFLICT
    http_status = 409


class RoomFull(Conflict):
    """The mesh room already holds its maximum of peers (HTTP 409, close 4409)."""

    code = ErrorCode.ROOM_FULL
    close_code = Close.ROOM_FULL
    retryable = True


class RoomEnded(Conflict):
    """The room or meeting has ended (HTTP 409, close 4410)."""

    code = ErrorCode.ROOM_ENDED
    close_code = Close.ROOM_ENDED


class RateLimited(HubError):
    """Too many requests or messages (HTTP 429, close 4429 on repeated abuse)."""

    code = ErrorCode.RATE_LIMITED
    http_status = 429
    close_code = Close.RATE_LIMITED
    retryable = True


class Unavailable(HubError):
    """A dependency (the state store) cannot be reached right now (HTTP 503, close 1013)."""

    code = ErrorCode.UNAVAILABLE
    http_status = 503
    close_code = Close.TRY_AGAIN_LATER
    retryable = True


class JoinTimeout(HubError):
    """No ``join`` frame within the join timeout (close 4408)."""

    code = ErrorCode.JOIN_TIMEOUT
    http_status = 408
    close_code = Close.JOIN_TIMEOUT


class FeatureDisabled(Forbidden):
    """The room does not allow this (chat, screen sharing ...): HTTP 403, an ``error`` frame."""

    code = ErrorCode.FEATURE_DISABLED


class PeerUnavailable(Conflict):
    """The addressed peer is reconnecting (its seat is kept for resume): try again shortly."""

    code = ErrorCode.PEER_UNAVAILABLE
    retryable = True
