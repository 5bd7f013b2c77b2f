"""The peer client's error tree.

Every failure the peer client reports on purpose is a :class:`PeerClientError`: it carries a
stable machine ``code`` (the same strings the hub uses where the failure comes from the hub, so a
load-test report can count errors by code across both), the websocket close code that caused it
when there is one, and whether retrying the same operation later can succeed.

Close codes map to classes with :func:`error_for_close`; ``error`` frame codes with
:func:`error_for_code`.
"""

from __future__ import annotations

from signaling.codes import Close, ErrorCode


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


class TakenOverError(PeerClientError):
    """This peer's seat was taken over by a newer socket: the same peer resumed elsewhere, or
    the same user joined again (close 4411). Not retried: the newer socket holds the seat."""

    code = ErrorCode.TAKEN_OVER


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
    Close.BAD_JOIN: JoinRejectedError,
    Close.UNAUTHENTICATED: TokenError,
    Close.FORBIDDEN: ForbiddenError,
    Close.NOT_FOUND: NotFoundError,
    Close.JOIN_TIMEOUT: JoinTimeoutError,
    Close.ROOM_FULL: RoomFullError,
    Close.ROOM_ENDED: RoomEndedError,
    Close.RATE_LIMITED: RateLimitedError,
    Close.TAKEN_OVER: TakenOverError,
    Close.FRAME_TOO_LARGE: HubProtocolError,
    Close.GOING_AWAY: HubUnreachableError,
    Close.TRY_AGAIN_LATER: HubUnreachableError,
}

_BY_CODE: dict[str, type[PeerClientError]] = {
    cls.code: cls for cls in _BY_CLOSE_CODE.values() if cls is not HubUnreachableError
}
_BY_CODE.update({ErrorCode.ROOM_ENDED: RoomEndedError, "kicked": KickedError,
                 ErrorCode.BAD_REQUEST: JoinRejectedError})

#: Close codes after which a dropped socket is worth resuming (the hub went away or the
#: network broke); every other close is the hub's deliberate verdict.
RESUMABLE_CLOSE_CODES: frozenset[int | None] = frozenset(
    {None, Close.GOING_AWAY, Close.ABNORMAL, Close.INTERNAL_ERROR, Close.SERVICE_RESTART,
     Close.TRY_AGAIN_LATER, Close.BAD_GATEWAY}
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


# --------------------------------------------------------------------------- the transcription tap
# A second root, beside PeerClientError: the tap's failures never come from a hub close, so they
# carry a ``code`` and ``retryable`` but no close code. Each also keeps the built-in class callers
# caught before the tree existed (ValueError, RuntimeError), so existing handlers still match.


class TapError(Exception):
    """Base of every deliberate error of the transcription tap (:mod:`media.tap`)."""

    code = "tap-error"
    retryable = False


class TapConfigError(TapError, ValueError):
    """A tap or transcriber setting is out of range (found at start, before any work)."""

    code = "bad-tap-config"


class UnknownTranscriberError(TapError, ValueError):
    """``TapConfig.recognizer`` names nothing that can be loaded (a configuration error)."""

    code = "unknown-transcriber"


class TranscriberNotRunningError(TapError, RuntimeError):
    """A stream was opened on a transcriber that is not started, or is closing."""

    code = "transcriber-not-running"


class RecogniserStartError(TapError, RuntimeError):
    """A recogniser process did not become ready: it exited while starting (bad model path,
    missing module; its own error is in the log above) or did not report within the start
    timeout."""

    code = "recogniser-start-failed"
    retryable = True


class RecogniserProtocolError(TapError):
    """A frame between the tap and a recogniser process is not a valid message of
    :mod:`media.tap.procmsg` (a bug on one side; the process is restarted)."""

    code = "recogniser-protocol-error"


class EngineBusyError(TapError, RuntimeError):
    """Every decoder of a recogniser process is in a segment (that segment is dropped)."""

    code = "engine-busy"
    retryable = True
