"""The TURN package's error tree.

Every error ``turn/`` raises on purpose is a :class:`TurnError`. Each carries a stable machine
``code`` and says whether retrying can succeed. Messages never contain a secret or a credential:
they name the offending field (``secrets[1]``) instead of quoting it.
"""

from __future__ import annotations


class TurnError(Exception):
    """Base of every deliberate error in ``turn/``."""

    code = "turn-error"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class TurnConfigError(TurnError, ValueError):
    """A TURN/ICE/coturn setting is missing or invalid (the CLI exits with status 2)."""

    code = "turn-config"


class CredentialError(TurnError, ValueError):
    """A TURN credential cannot be issued: bad user id, TTL or secret list."""

    code = "turn-credential"


class TurnServerError(TurnError):
    """The ``turnserver`` process cannot be started or supervised."""

    code = "turnserver-failed"
    retryable = True


class TurnServerNotFound(TurnServerError):
    """The ``turnserver`` binary (coturn) is not installed or not executable."""

    code = "turnserver-not-found"
    retryable = False
