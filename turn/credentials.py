"""TURN REST credentials, the scheme coturn checks with ``use-auth-secret``.

A credential is issued for one user and expires on its own; coturn never needs to be told about
it. The scheme (coturn's "TURN REST API", draft-uberti-behave-turn-rest):

- username: ``"<expiry-unix-seconds>:<user id>"``
- credential (the TURN password): ``base64(HMAC-SHA1(secret, username))``

Several secrets can be configured so they rotate without downtime: the first one signs, coturn
(one ``static-auth-secret=`` line per secret) accepts any of them. To rotate, put the new secret
*second* everywhere, reload, then move it first, and drop the old one once the longest-lived
credential signed with it has expired (``ttl_s``).

User ids are percent-encoded (RFC 3986 style) rather than rejected: every character except
ASCII letters, digits and ``-._~@`` becomes ``%XX`` of its UTF-8 bytes. So ``:`` (the field
separator), control characters, spaces and non-ASCII text can never break the username format,
ordinary ids (``alice``, ``user-42``, ``bob@example.com``) stay readable in coturn's log, and the
encoding is reversible (:func:`decode_user_id`). Empty ids and ids longer than
:data:`MAX_ENCODED_USER_ID_LENGTH` after encoding are rejected with :class:`CredentialError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .errors import CredentialError

#: Longest credential lifetime accepted when the caller gives no ``max_ttl_s`` (one day).
DEFAULT_MAX_TTL_S = 86_400
#: Longest user id, in characters after percent-encoding. STUN caps USERNAME at 513 bytes;
#: 256 leaves room for the expiry prefix and keeps coturn's log lines sane.
MAX_ENCODED_USER_ID_LENGTH = 256
#: Characters kept as-is in a user id besides ASCII letters, digits and ``-._~``.
_SAFE_EXTRA = "@"


@dataclass(frozen=True, slots=True)
class TurnCredential:
    """One issued TURN credential, in the shape an ``RTCIceServer`` needs."""

    username: str
    """``"<expires_at>:<encoded user id>"``, sent to coturn as the STUN USERNAME."""
    credential: str = field(repr=False)
    """``base64(HMAC-SHA1(first secret, username))``: the TURN password. Never logged."""
    expires_at: int
    """Unix time (seconds) after which coturn rejects the credential."""


def encode_user_id(user_id: str) -> str:
    """Return ``user_id`` percent-encoded for the username; raise :class:`CredentialError`.

    Raises when the id is not a string, is empty, or is longer than
    :data:`MAX_ENCODED_USER_ID_LENGTH` characters once encoded.
    """
    if not isinstance(user_id, str):
        raise CredentialError(f"user id must be a string, not {type(user_id).__name__}")
    if not user_id:
        raise CredentialError("user id must not be empty")
    encoded = quote(user_id, safe=_SAFE_EXTRA, encoding="utf-8", errors="strict")
    if len(encoded) > MAX_ENCODED_USER_ID_LENGTH:
        raise CredentialError(
            f"user id is too long: {len(encoded)} characters after encoding "
            f"(max {MAX_ENCODED_USER_ID_LENGTH})"
        )
    return encoded


def decode_user_id(encoded: str) -> str:
    """Invert :func:`encode_user_id` (for reading coturn's log or a username)."""
    return unquote(encoded, encoding="utf-8", errors="strict")


def sign(secret: str, username: str) -> str:
    """Return ``base64(HMAC-SHA1(secret, username))``, coturn's expected TURN password."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def check_secrets(secrets: Sequence[str]) -> tuple[str, ...]:
    """Validate a secret list and return it as a tuple; raise :class:`CredentialError`.

    A bare string is refused: iterating it would silently sign with its first character.
    Errors name the position of a bad secret, never its value.
    """
    if isinstance(secrets, (str, bytes)):
        raise CredentialError("secrets must be a list of strings, not a single string")
    result = tuple(secrets)
    if not result:
        raise CredentialError("at least one TURN secret is required")
    for index, secret in enumerate(result):
        if not isinstance(secret, str) or not secret:
            raise CredentialError(f"secrets[{index}] must be a non-empty string")
    return result


def check_ttl(ttl_s: int, max_ttl_s: int) -> None:
    """Raise :class:`CredentialError` unless ``0 < ttl_s <= max_ttl_s`` (whole seconds)."""
    for name, value in (("ttl_s", ttl_s), ("max_ttl_s", max_ttl_s)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise CredentialError(f"{name} must be a whole number of seconds, got {value!r}")
    if max_ttl_s <= 0:
        raise CredentialError(f"max_ttl_s must be positive, got {max_ttl_s}")
    if ttl_s <= 0 or ttl_s > max_ttl_s:
        raise CredentialError(f"ttl_s must be within 1..{max_ttl_s} seconds, got {ttl_s}")


def issue_credential(
    user_id: str,
    secrets: Sequence[str],
    *,
    ttl_s: int,
    max_ttl_s: int = DEFAULT_MAX_TTL_S,
    now: float | None = None,
) -> TurnCredential:
    """Issue a TURN credential for ``user_id`` valid for ``ttl_s`` seconds from ``now``.

    ``secrets[0]`` signs. ``now`` (Unix seconds, default :func:`time.time`) makes the result
    deterministic in tests; it is floored to whole seconds. Raises :class:`CredentialError` on a
    bad user id, TTL or secret list.
    """
    keys = check_secrets(secrets)
    check_ttl(ttl_s, max_ttl_s)
    encoded = encode_user_id(user_id)
    issued = int(time.time() if now is None else now)
    expires_at = issued + ttl_s
    username = f"{expires_at}:{encoded}"
    return TurnCredential(
        username=username, credential=sign(keys[0], username), expires_at=expires_at
    )


def parse_username(username: str) -> tuple[int, str]:
    """Split a REST username into ``(expires_at, user_id)``; raise :class:`CredentialError`."""
    expiry, sep, encoded = username.partition(":")
    if not sep or not expiry.isdigit() or not encoded:
        raise CredentialError("not a TURN REST username ('<expiry>:<user id>')")
    return int(expiry), decode_user_id(encoded)


def check_credential(
    username: str, credential: str, secrets: Sequence[str], *, now: float | None = None
) -> bool:
    """Tell whether coturn would accept this username/credential pair with ``secrets``.

    True when the username is well formed, not expired at ``now`` and signed by any secret.
    Compares in constant time.
    """
    keys = check_secrets(secrets)
    try:
        expires_at, _ = parse_username(username)
    except (CredentialError, UnicodeDecodeError):
        return False
    if expires_at < (time.time() if now is None else now):
        return False
    given = credential.encode("utf-8")
    return any(hmac.compare_digest(sign(key, username).encode("ascii"), given) for key in keys)
