"""Join tokens (minted and verified by the hub) and user tokens (issued by an identity provider).

Join tokens are HS256 JWTs signed with the first configured secret and verified with any of them,
so secrets rotate without dropping calls. They carry ``aud = "connvo-rtc:join"`` and are never
accepted as user tokens (and user tokens never as join tokens). User tokens are HS256 with the same
secret list, or RS256 verified against a JWKS file or URL. Only those two algorithms are accepted:
``alg: none`` and everything else is refused before any key is looked at.

A user token's ``email`` is the caller's only when the token vouches for it (see
:func:`email_verified`), and every email the hub compares goes through :func:`normalize_email`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from .codes import ErrorCode
from .errors import BadRequest, Unauthenticated, Unavailable
from .settings import ConfigError

logger = logging.getLogger(__name__)

JOIN_AUDIENCE = "connvo-rtc:join"
ISSUER = "connvo-rtc"
#: Clock skew tolerated between machines, seconds.
LEEWAY_S = 10
#: Roles a join token may carry: a person's (the API mints only these: ``PERSON_ROLES``), and
#: the hub's server peers' (``tap``, ``agent``: minted by the hub itself for its tap jobs,
#: :mod:`signaling.transcripts`).
TOKEN_ROLES = ("host", "participant", "observer", "tap", "agent")

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def normalize_email(email: str) -> str:
    """An email address as the hub stores and compares it: ASCII whitespace around it dropped and
    the ASCII letters ``A-Z`` lower-cased, nothing else.

    ``str.lower()`` folds Unicode look-alikes onto ASCII (the Kelvin sign ``\u212a`` becomes
    ``k``), which let ``\u212aate@example.com`` in as the invitee ``kate@example.com``. With
    ASCII-only lower-casing an address with any non-ASCII character never equals an ASCII one.
    """
    return email.strip(" \t\r\n\f\v").translate(_ASCII_LOWER)


def email_verified(claims: dict[str, Any], alg: str) -> bool:
    """Whether a verified user token vouches for its ``email`` claim.

    ``email_verified: false`` (or ``"false"``) never does. An absent claim is trusted on HS256
    tokens, which only the deployment's own backend can sign with its secrets, and not on RS256
    tokens from an identity provider, which must say ``email_verified: true`` (or ``"true"``).
    """
    if "email_verified" not in claims:
        return alg == "HS256"
    flag = claims["email_verified"]
    if isinstance(flag, str):
        return flag.strip().lower() == "true"
    return flag is True


@dataclass(frozen=True)
class JoinClaims:
    """What a verified join token grants."""

    room_id: str
    user_id: str
    role: str
    name: str
    expires_at: int
    token_id: str


@dataclass(frozen=True)
class UserIdentity:
    """The caller of the HTTP API, from a verified user token. ``email`` is normalised
    (:func:`normalize_email`) and empty unless the token vouches for it (:func:`email_verified`),
    so an unverified address is never matched against a meeting's invitations."""

    user_id: str
    email: str = ""
    name: str = ""


@dataclass(frozen=True)
class TokenService:
    """Mints and verifies tokens.

    ``secrets`` are HS256 keys (first signs, all verify); ``jwks`` is a JWKS file path or URL for
    RS256 user tokens; ``max_ttl_s`` bounds every join token's lifetime.
    """

    secrets: tuple[str, ...] = field(repr=False)
    max_ttl_s: int = 86_400
    default_ttl_s: int = 3600
    jwks: str = ""
    user_audience: str = ""
    user_issuer: str = ""
    _jwks_client: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("TokenService needs at least one secret")
        client: Any = None
        if self.jwks.startswith(("http://", "https://")):
            client = jwt.PyJWKClient(self.jwks, cache_keys=True, lifespan=300, timeout=5)
        elif self.jwks:
            client = _FileJwks(Path(self.jwks))
        object.__setattr__(self, "_jwks_client", client)

    # ------------------------------------------------------------------ join tokens

    def mint_join(
        self,
        room_id: str,
        user_id: str,
        role: str = "participant",
        *,
        name: str = "",
        ttl_s: int | None = None,
        now: float | None = None,
    ) -> tuple[str, int]:
        """Return ``(token, expires_at_unix)`` for one user in one room."""
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if not 1 <= ttl <= self.max_ttl_s:
            raise BadRequest(f"token ttl must be 1..{self.max_ttl_s} s, got {ttl}")
        if role not in TOKEN_ROLES:
            raise BadRequest(f"unknown role {role!r}")
        if not room_id or not user_id:
            raise BadRequest("room and user are required")
        issued = int(time.time() if now is None else now)
        expires = issued + ttl
        claims = {
            "iss": ISSUER,
            "aud": JOIN_AUDIENCE,
            "sub": user_id,
            "room": room_id,
            "role": role,
            "name": name[:64],
            "iat": issued,
            "exp": expires,
            "jti": secrets.token_urlsafe(9),
        }
        return jwt.encode(claims, self.secrets[0], algorithm="HS256"), expires

    def verify_join(self, token: str) -> JoinClaims:
        """Check a join token, expiry included (a resume too: its seat does not vouch for the
        token); raise :class:`Unauthenticated` (``token-expired``/``bad-token``)."""
        claims = self._decode_hs256(
            token, audience=JOIN_AUDIENCE, issuer=ISSUER, verify_exp=True,
            required=["exp", "iat", "sub", "room", "role"],
        )
        if claims["exp"] - claims["iat"] > self.max_ttl_s:
            raise Unauthenticated("token lifetime exceeds the maximum", code=ErrorCode.BAD_TOKEN)
        role = claims.get("role")
        if role not in TOKEN_ROLES:
            raise Unauthenticated("token has an unknown role", code=ErrorCode.BAD_TOKEN)
        if not isinstance(claims["room"], str) or not isinstance(claims["sub"], str):
            raise Unauthenticated("token claims malformed", code=ErrorCode.BAD_TOKEN)
        name = claims.get("name", "")
        return JoinClaims(
            room_id=claims["room"],
            user_id=claims["sub"],
            role=role,
            name=name if isinstance(name, str) else "",
            expires_at=int(claims["exp"]),
            token_id=str(claims.get("jti", "")),
        )

    # ------------------------------------------------------------------ user tokens

    def mint_user(self, user_id: str, email: str = "", name: str = "", ttl_s: int = 3600) -> str:
        """An HS256 user token (dev login, tests, the CLI); real deployments use their IdP."""
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user_id, "email": email, "name": name, "iat": now,
                                  "exp": now + ttl_s}
        if self.user_audience:
            claims["aud"] = self.user_audience
        if self.user_issuer:
            claims["iss"] = self.user_issuer
        return jwt.encode(claims, self.secrets[0], algorithm="HS256")

    async def verify_user(self, token: str) -> UserIdentity:
        """Check a bearer user token (HS256 or RS256/JWKS)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed bearer token", code=ErrorCode.BAD_TOKEN) from None
        alg = header.get("alg")
        audience = self.user_audience or None
        issuer = self.user_issuer or None
        if alg == "HS256":
            claims = self._decode_hs256(token, audience=audience, issuer=issuer, verify_exp=True,
                                        required=["exp", "sub"])
        elif alg == "RS256" and self._jwks_client is not None:
            try:
                key = await asyncio.to_thread(self._jwks_client.get_signing_key_from_jwt, token)
                claims = jwt.decode(
                    token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer,
                    leeway=LEEWAY_S, options={"require": ["exp", "sub"], "verify_aud": bool(audience)},
                )
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("token expired", code=ErrorCode.TOKEN_EXPIRED) from None
            except (jwt.PyJWTError, OSError) as exc:
                raise Unauthenticated(f"token rejected: {exc}", code=ErrorCode.BAD_TOKEN) from None
            except ValueError as exc:  # the key set itself cannot be read: not the caller's fault
                logger.warning("RS256 key set unavailable: %s", exc)
                raise Unavailable("the identity provider's keys are unavailable",
                                  code=ErrorCode.JWKS_UNAVAILABLE) from None
        else:
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted", code=ErrorCode.BAD_TOKEN)
        if claims.get("aud") == JOIN_AUDIENCE:
            raise Unauthenticated("a join token is not a user token", code=ErrorCode.BAD_TOKEN)
        sub, email, name = claims.get("sub"), claims.get("email", ""), claims.get("name", "")
        if not isinstance(sub, str) or not sub or len(sub) > 128:
            raise Unauthenticated("token subject malformed", code=ErrorCode.BAD_TOKEN)
        trusted = isinstance(email, str) and email_verified(claims, alg)
        return UserIdentity(
            user_id=sub,
            email=normalize_email(email) if trusted else "",
            name=name if isinstance(name, str) else "",
        )

    # ------------------------------------------------------------------ internals

    def _decode_hs256(
        self, token: str, *, audience: str | None, issuer: str | None, verify_exp: bool,
        required: list[str],
    ) -> dict[str, Any]:
        if not isinstance(token, str) or token.count(".") != 2:
            raise Unauthenticated("malformed token", code=ErrorCode.BAD_TOKEN)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed token", code=ErrorCode.BAD_TOKEN) from None
        if header.get("alg") != "HS256":
            raise Unauthenticated(f"token algorithm {header.get('alg')!r} is not accepted",
                                  code=ErrorCode.BAD_TOKEN)
        expired = False
        for secret in self.secrets:
            try:
                return jwt.decode(
                    token, secret, algorithms=["HS256"], audience=audience, issuer=issuer,
                    leeway=LEEWAY_S,
                    options={"require": required, "verify_exp": verify_exp,
                             "verify_aud": audience is not None},
                )
            except jwt.ExpiredSignatureError:
                expired = True  # signature was good with this secret
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise Unauthenticated(f"token rejected: {exc}", code=ErrorCode.BAD_TOKEN) from None
        if expired:
            raise Unauthenticated("token expired", code=ErrorCode.TOKEN_EXPIRED)
        raise Unauthenticated("token signature does not verify", code=ErrorCode.BAD_TOKEN)


class _FileJwks:
    """A JWKS read from a file, re-read when the file changes (key rotation without restart)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime = -1.0
        self._failed_mtime = -1.0
        self._set: jwt.PyJWKSet | None = None
        self._load()

    def _load(self) -> None:
        mtime = self._mtime
        try:
            mtime = self._path.stat().st_mtime
            if mtime != self._mtime:
                self._set = jwt.PyJWKSet.from_dict(json.loads(self._path.read_text()))
                self._mtime = mtime
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            if self._set is None:  # at start: a configuration error (the CLI exits 1)
                raise ConfigError(f"cannot load JWKS {self._path}: {exc}") from None
            # A file caught mid-rewrite (or deleted) during key rotation must not lock every
            # RS256 caller out: keep the last good key set and say so once per change.
            if mtime != self._failed_mtime:
                self._failed_mtime = mtime
                logger.warning("cannot reload JWKS %s (%s): keeping the previous keys",
                               self._path, exc)

    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK:
        self._load()
        kid = jwt.get_unverified_header(token).get("kid")
        assert self._set is not None
        for key in self._set.keys:
            if kid is None or key.key_id == kid:
                return key
        raise jwt.PyJWKClientError(f"no JWKS key with kid {kid!r}")
