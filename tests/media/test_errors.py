"""The error tree: close codes and error frames map to typed, retry-aware errors."""

from __future__ import annotations

import pytest

from media import errors
from signaling import protocol


@pytest.mark.parametrize(
    ("close_code", "cls", "code", "retryable"),
    [
        (protocol.CLOSE_UNAUTHENTICATED, errors.TokenError, "unauthenticated", False),
        (protocol.CLOSE_ROOM_FULL, errors.RoomFullError, "room-full", True),
        (protocol.CLOSE_ROOM_ENDED, errors.RoomEndedError, "room-ended", False),
        (protocol.CLOSE_NOT_FOUND, errors.NotFoundError, "not-found", False),
        (protocol.CLOSE_FORBIDDEN, errors.ForbiddenError, "forbidden", False),
        (protocol.CLOSE_JOIN_TIMEOUT, errors.JoinTimeoutError, "join-timeout", True),
        (protocol.CLOSE_RATE_LIMITED, errors.RateLimitedError, "rate-limited", True),
        (protocol.CLOSE_GOING_AWAY, errors.HubUnreachableError, "hub-unreachable", True),
        (1006, errors.HubUnreachableError, "hub-unreachable", True),
    ],
)
def test_close_codes_map_to_errors(close_code: int, cls: type[errors.PeerClientError],
                                   code: str, retryable: bool) -> None:
    error = errors.error_for_close(close_code, "why")
    assert type(error) is cls
    assert (error.code, error.retryable, error.close_code) == (code, retryable, close_code)
    assert "why" in str(error)


def test_error_frame_codes_map_to_errors() -> None:
    assert isinstance(errors.error_for_code("room-full", "full"), errors.RoomFullError)
    assert isinstance(errors.error_for_code("unauthenticated", "x"), errors.TokenError)
    assert errors.error_for_code("feature-disabled", "chat is off") is None


def test_every_error_has_a_distinct_code() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.PeerClientError)]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
