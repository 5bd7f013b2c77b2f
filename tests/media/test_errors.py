"""The error tree: close codes and error frames map to typed, retry-aware errors."""

from __future__ import annotations

import pytest

from media import errors
from signaling.codes import Close


@pytest.mark.parametrize(
    ("close_code", "cls", "code", "retryable"),
    [
        (Close.UNAUTHENTICATED, errors.TokenError, "unauthenticated", False),
        (Close.ROOM_FULL, errors.RoomFullError, "room-full", True),
        (Close.ROOM_ENDED, errors.RoomEndedError, "room-ended", False),
        (Close.NOT_FOUND, errors.NotFoundError, "not-found", False),
        (Close.FORBIDDEN, errors.ForbiddenError, "forbidden", False),
        (Close.JOIN_TIMEOUT, errors.JoinTimeoutError, "join-timeout", True),
        (Close.RATE_LIMITED, errors.RateLimitedError, "rate-limited", True),
        (Close.GOING_AWAY, errors.HubUnreachableError, "hub-unreachable", True),
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
