"""The hub's error tree.

Every error the hub raises on purpose is a :class:`HubError`: it carries a stable machine code
(sent to clients as ``error.code`` on the websocket and ``errorData.code`` over HTTP), the HTTP
status and websocket close code it maps to, and whether retrying can succeed.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every deliberate hub error."""

    code = "internal"
    http_status = 500
    #: Close code when the error ends a websocket; ``None`` means the socket stays open.
    close_code: int | None = None
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

    code = "bad-request"
    http_status = 400


class ProtocolError(BadRequest):
    """A websocket frame that is not a valid protocol message."""

    code = "invalid-message"


class BadJoin(BadRequest):
    """The first frame was not a usable ``join`` (close 4400)."""

    code = "bad-join"
    close_code = 4400


class Unauthenticated(HubError):
    """Missing, malformed, badly signed or expired credentials (HTTP 401, close 4401)."""

    code = "unauthenticated"
    http_status = 401
    close_code = 4401


class Forbidden(HubError):
    """Authenticated but not allowed (HTTP 403, close 4403)."""

    code = "forbidden"
    http_status = 403
    close_code = 4403


class NotFound(HubError):
    """No such meeting, room or peer (HTTP 404, close 4404)."""

    code = "not-found"
    http_status = 404
    close_code = 4404


class Conflict(HubError):
    """The request contradicts the current state (HTTP 409)."""

    code = "conflict"
    http_status = 409


class RoomFull(Conflict):
    """The mesh room already holds its maximum of peers (HTTP 409, close 4409)."""

    code = "room-full"
    close_code = 4409
    retryable = True


class RoomEnded(Conflict):
    """The room or meeting has ended (HTTP 409, close 4410)."""

    code = "room-ended"
    close_code = 4410


class RateLimited(HubError):
    """Too many requests or messages (HTTP 429, close 4429 on repeated abuse)."""

    code = "rate-limited"
    http_status = 429
    close_code = 4429
    retryable = True


class Unavailable(HubError):
    """A dependency (the state store) cannot be reached right now (HTTP 503, close 1013)."""

    code = "unavailable"
    http_status = 503
    close_code = 1013
    retryable = True


class JoinTimeout(HubError):
    """No ``join`` frame within the join timeout (close 4408)."""

    code = "join-timeout"
    http_status = 408
    close_code = 4408
