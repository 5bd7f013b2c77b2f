"""The peer client's error tree.

Every failure the peer client reports on purpose is a :class:`PeerClientError`: it carries a
stable machine ``code`` (the same strings the hub uses where the failure comes from the hub, so a
load-test report can count errors by code across both), the websocket close code that caused it
when there is one, and whether retrying the same operation later can succeed.

Close codes map to classes with :func:`error_for_close`; ``error`` frame codes with
:func:`error_for_code`.
"""

from __future__ import annotations

from signaling import protocol


class PeerClientError(Exception):
    """Base of every deliberate peer-client error."""

    code = "peer-client-error"
    retryable = False

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Websocket close code that caused the error, if it came from a close.
        self.close_code = close_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class HubUnreachableError(PeerClientError):
    """The hub could not be reached: connection refused, DNS failure, handshake rejected or
    timed out, or the socket dropped and could not be resumed."""

    code = "hub-unreachable"
    retryable = True


class JoinRejectedError(PeerClientError):
    """The hub refused the ``join`` frame itself (close 4400)."""

    code = "bad-join"


class JoinTimeoutError(PeerClientError):
    """No ``joined`` frame arrived in time (or the hub closed with 4408)."""

    code = "join-timeout"
    retryable = True


class TokenError(PeerClientError):
    """The join token is missing, malformed, badly signed or expired (close 4401)."""

    code = "unauthenticated"


class ForbiddenError(PeerClientError):
    """The token is valid but does not allow this (close 4403)."""

    code = "forbidden"


class NotFoundError(PeerClientError):
    """The room does not exist (close 4404)."""

    code = "not-found"


class RoomFullError(PeerClientError):
    """The mesh room already holds its maximum of peers (close 4409)."""

    code = "room-full"
    retryable = True


class RoomEndedError(PeerClientError):
    """The room has ended (close 4410, or a ``room-ended`` frame)."""

    code = "room-ended"


class KickedError(PeerClientError):
    """The host removed this peer from the room (a ``kicked`` frame)."""

    code = "kicked"


class RateLimitedError(PeerClientError):
    """The hub rate-limited this client (close 4429)."""

    code = "rate-limited"
    retryable = True


class HubProtocolError(PeerClientError):
    """The hub sent something this client cannot understand (a bug on one side)."""

    code = "protocol-error"


class SendQueueFullError(PeerClientError):
    """The websocket writer fell too far behind; the socket is being dropped."""

    code = "send-queue-full"
    retryable = True


class IceFailedError(PeerClientError):
    """A peer connection went to ``failed`` or did not reach ``connected`` in time."""

    code = "ice-failed"
    retryable = True


class TurnAuthError(PeerClientError):
    """``ice_transport_policy='relay'`` but no relay candidate was gathered: the TURN
    credentials were refused, the TURN server is unreachable, or no TURN server was given.
    (aiortc would otherwise sit in ``new`` forever.)"""

    code = "turn-auth-failed"
    retryable = True


class NegotiationError(PeerClientError):
    """An SDP offer/answer or candidate from a remote peer could not be applied."""

    code = "negotiation-failed"


class MediaTimeoutError(PeerClientError):
    """A wait (``wait_connected``, ``wait_audio_from`` ...) ran out of time."""

    code = "timeout"
    retryable = True


class ClientClosedError(PeerClientError):
    """The client was closed (by :meth:`PeerClient.aclose` or a fatal error) during the call."""

    code = "client-closed"


_BY_CLOSE_CODE: dict[int, type[PeerClientError]] = {
    protocol.CLOSE_BAD_JOIN: JoinRejectedError,
    protocol.CLOSE_UNAUTHENTICATED: TokenError,
    protocol.CLOSE_FORBIDDEN: ForbiddenError,
    protocol.CLOSE_NOT_FOUND: NotFoundError,
    protocol.CLOSE_JOIN_TIMEOUT: JoinTimeoutError,
    protocol.CLOSE_ROOM_FULL: RoomFullError,
    protocol.CLOSE_ROOM_ENDED: RoomEndedError,
    protocol.CLOSE_RATE_LIMITED: RateLimitedError,
    protocol.CLOSE_FRAME_TOO_LARGE: HubProtocolError,
    protocol.CLOSE_GOING_AWAY: HubUnreachableError,
    protocol.CLOSE_TRY_AGAIN_LATER: HubUnreachableError,
}

_BY_CODE: dict[str, type[PeerClientError]] = {
    cls.code: cls for cls in _BY_CLOSE_CODE.values() if cls is not HubUnreachableError
}
_BY_CODE.update({"room-ended": RoomEndedError, "kicked": KickedError, "bad-request": JoinRejectedError})

#: Close codes after which a dropped socket is worth resuming (the hub went away or the
#: network broke); every other close is the hub's deliberate verdict.
RESUMABLE_CLOSE_CODES: frozenset[int | None] = frozenset(
    {None, 1001, 1006, 1011, 1012, 1013, 1014}
)


def error_for_close(close_code: int | None, reason: str = "") -> PeerClientError:
    """The error a websocket close with ``close_code`` means for this client."""
    cls = _BY_CLOSE_CODE.get(close_code) if close_code is not None else None
    detail = f"hub closed the socket (code {close_code}{', ' + reason if reason else ''})"
    if cls is None:
        cls = HubUnreachableError
    return cls(detail, close_code=close_code)


def error_for_code(code: str, message: str) -> PeerClientError | None:
    """The error an ``error`` frame's ``code`` stands for, or ``None`` when the code is not a
    join verdict (the socket stays usable)."""
    cls = _BY_CODE.get(code)
    return cls(f"{code}: {message}") if cls is not None else None
