"""Join tokens (HS256, secret rotation) and user tokens (HS256 or RS256 against a JWKS file)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.codes import Close
from signaling.errors import BadRequest, Unauthenticated
from signaling.testing.hub import HubHandle
from signaling.tokens import ISSUER, JOIN_AUDIENCE, TokenService
from tests.signaling.test_api_errors import alg_none_token, hmac_token
from tests.support.wsclient import WsClient

OLD = "old-secret-" + "o" * 32
NEW = "new-secret-" + "n" * 32
STRANGER = "not-ours-" + "s" * 32


def join_claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": JOIN_AUDIENCE, "sub": "alice", "room": "room_1",
              "role": "participant", "name": "Alice", "iat": now, "exp": now + 600, "jti": "j1"}
    claims.update(over)
    return claims


def refused(fn: Any, *args: Any, code: str = "bad-token", **kwargs: Any) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        result = fn(*args, **kwargs)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert info.value.code == code, info.value
    assert info.value.http_status == 401 and info.value.close_code == 4401
    return info.value


def verify_user(service: TokenService, token: str) -> Any:
    return asyncio.run(service.verify_user(token))


# ---------------------------------------------------------------------- join tokens


def test_mint_and_verify_join() -> None:
    service = TokenService(secrets=(NEW,))
    token, expires = service.mint_join("room_1", "alice", "host", name="Alice", ttl_s=120)
    claims = service.verify_join(token)
    assert (claims.room_id, claims.user_id, claims.role, claims.name) == ("room_1", "alice",
                                                                          "host", "Alice")
    assert claims.expires_at == expires and abs(expires - time.time() - 120) < 5
    assert claims.token_id
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"


def test_secret_rotation() -> None:
    """[new, old]: the first secret signs, both verify; a service that only knows the old secret
    refuses tokens signed with the new one."""
    old_only = TokenService(secrets=(OLD,))
    rotated = TokenService(secrets=(NEW, OLD))
    new_token, _ = rotated.mint_join("room_1", "alice")
    old_token, _ = old_only.mint_join("room_1", "bob")
    assert rotated.verify_join(new_token).user_id == "alice"
    assert rotated.verify_join(old_token).user_id == "bob"
    assert TokenService(secrets=(NEW,)).verify_join(new_token).user_id == "alice"
    refused(old_only.verify_join, new_token)
    # the second secret's tokens are accepted as user tokens as well
    assert verify_user(rotated, old_only.mint_user("carol", "Carol@Example.com")).email == \
        "carol@example.com"


def test_unknown_secret_is_bad_token() -> None:
    token, _ = TokenService(secrets=(STRANGER,)).mint_join("room_1", "alice")
    error = refused(TokenService(secrets=(NEW, OLD)).verify_join, token)
    assert "signature" in error.message


@pytest.mark.parametrize("make", [
    pytest.param(lambda: alg_none_token("alice"), id="alg-none"),
    pytest.param(lambda: hmac_token(join_claims(), NEW, alg="HS512", digest="sha512"),
                 id="hs512-with-our-secret"),
    pytest.param(lambda: hmac_token(join_claims(), NEW, alg="RS256"), id="rs256-header-hmac-sig"),
    pytest.param(lambda: hmac_token(join_claims(), NEW, alg="HS384", digest="sha384"),
                 id="hs384"),
    pytest.param(lambda: "a.b", id="two-parts"),
    pytest.param(lambda: "", id="empty"),
    pytest.param(lambda: "x.y.z", id="garbage"),
])
def test_refused_algorithms_and_shapes(make: Any) -> None:
    service = TokenService(secrets=(NEW,))
    refused(service.verify_join, make())
    refused(service.verify_user, make())


def test_hmac_over_the_rsa_public_key_is_refused(tmp_path: Path) -> None:
    """Algorithm confusion: an HS256 token whose HMAC key is the RS256 public key (PEM) that an
    attacker can read from the JWKS must not verify."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = write_jwks(tmp_path / "jwks.json", {"k1": key})
    service = TokenService(secrets=(NEW,), jwks=str(jwks))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    forged = hmac_token({"sub": "alice", "iat": now, "exp": now + 60}, pem)
    refused(service.verify_user, forged)
    forged_rs = hmac_token({"sub": "alice", "iat": now, "exp": now + 60}, pem, alg="RS256")
    refused(service.verify_user, forged_rs)


def test_ttl_bounds() -> None:
    service = TokenService(secrets=(NEW,), max_ttl_s=3600)
    with pytest.raises(BadRequest):
        service.mint_join("room_1", "alice", ttl_s=3601)
    with pytest.raises(BadRequest):
        service.mint_join("room_1", "alice", ttl_s=0)
    with pytest.raises(BadRequest):
        service.mint_join("room_1", "alice", role="admin")
    assert service.mint_join("room_1", "alice", ttl_s=3600)[1] > time.time()
    # a token minted elsewhere with the right secret but a lifetime over the maximum
    long_lived = jwt.encode(join_claims(exp=int(time.time()) + 7200), NEW, algorithm="HS256")
    error = refused(service.verify_join, long_lived)
    assert "lifetime" in error.message


def test_expired_join_token() -> None:
    service = TokenService(secrets=(NEW,))
    token, _ = service.mint_join("room_1", "alice", ttl_s=60, now=time.time() - 3600)
    refused(service.verify_join, token, code="token-expired")


@pytest.mark.parametrize("over", [
    {"aud": "someone-else"}, {"iss": "elsewhere"}, {"role": "admin"}, {"room": 5},
    {"sub": None}, {"room": None}, {"exp": None},
], ids=["aud", "iss", "role", "room-type", "no-sub", "no-room", "no-exp"])
def test_join_claims_checked(over: dict[str, Any]) -> None:
    claims = {k: v for k, v in join_claims(**over).items() if v is not None}
    refused(TokenService(secrets=(NEW,)).verify_join, jwt.encode(claims, NEW, algorithm="HS256"))


def test_join_and_user_tokens_are_not_interchangeable() -> None:
    service = TokenService(secrets=(NEW,))
    join, _ = service.mint_join("room_1", "alice")
    refused(service.verify_user, join)
    refused(service.verify_join, service.mint_user("alice"))


def test_user_token_audience_and_issuer() -> None:
    service = TokenService(secrets=(NEW,), user_audience="connvo", user_issuer="https://idp")
    identity = verify_user(service, service.mint_user("alice", "A@x.io", "Alice"))
    assert (identity.user_id, identity.email, identity.name) == ("alice", "a@x.io", "Alice")
    refused(service.verify_user, TokenService(secrets=(NEW,)).mint_user("alice"))
    refused(TokenService(secrets=(NEW,)).verify_user, service.mint_user("alice", ttl_s=-60),
            code="token-expired")
    now = int(time.time())
    for sub in ("", "x" * 129, 5):
        refused(TokenService(secrets=(NEW,)).verify_user,
                jwt.encode({"sub": sub, "exp": now + 60}, NEW, algorithm="HS256"))


def test_service_refuses_no_secret() -> None:
    with pytest.raises(ValueError):
        TokenService(secrets=())


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=80) | st.lists(st.text("abcXYZ019-_=", max_size=30), min_size=3,
                                       max_size=3).map(".".join))
def test_garbage_is_always_unauthenticated(token: str) -> None:
    service = TokenService(secrets=(NEW,))
    for verify in (service.verify_join, service.verify_user):
        try:
            result = verify(token)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        except Unauthenticated:
            continue
        pytest.fail(f"{token!r} verified")


# ---------------------------------------------------------------------- RS256 with a JWKS file


def write_jwks(path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> Path:
    entries = []
    for kid, key in keys.items():
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        entries.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    path.write_text(json.dumps({"keys": entries}))
    return path


def rs_token(key: rsa.RSAPrivateKey, kid: str | None, **over: Any) -> str:
    now = int(time.time())
    claims = {"sub": "user_rs", "email": "RS@Example.com", "email_verified": True, "name": "Rs",
              "iat": now, "exp": now + 300, **over}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


@pytest.fixture(scope="module")
def rsa_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)
            for kid in ("k1", "k2", "k3")}


def test_rs256_against_jwks_file(tmp_path: Path, rsa_keys: dict[str, rsa.RSAPrivateKey]) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", {"k1": rsa_keys["k1"], "k2": rsa_keys["k2"]})
    service = TokenService(secrets=(NEW,), jwks=str(jwks))
    identity = verify_user(service, rs_token(rsa_keys["k2"], "k2"))
    assert (identity.user_id, identity.email) == ("user_rs", "rs@example.com")
    assert verify_user(service, rs_token(rsa_keys["k1"], "k1")).user_id == "user_rs"
    refused(service.verify_user, rs_token(rsa_keys["k1"], "k2"))  # kid picks k2: wrong key
    refused(service.verify_user, rs_token(rsa_keys["k3"], "k3"))  # kid not in the set
    refused(service.verify_user, rs_token(rsa_keys["k3"], "k1"))  # signed by a stranger
    refused(service.verify_user, rs_token(rsa_keys["k2"], "k2", exp=int(time.time()) - 60),
            code="token-expired")
    refused(service.verify_user, rs_token(rsa_keys["k2"], "k2", sub=""))
    # HS256 user tokens still work next to RS256
    assert verify_user(service, service.mint_user("alice")).user_id == "alice"
    # RS256 never verifies join tokens
    refused(service.verify_join, rs_token(rsa_keys["k1"], "k1", **join_claims()))


def test_jwks_audience(tmp_path: Path, rsa_keys: dict[str, rsa.RSAPrivateKey]) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", {"k1": rsa_keys["k1"]})
    service = TokenService(secrets=(NEW,), jwks=str(jwks), user_audience="connvo",
                           user_issuer="https://idp")
    good = rs_token(rsa_keys["k1"], "k1", aud="connvo", iss="https://idp")
    assert verify_user(service, good).user_id == "user_rs"
    refused(service.verify_user, rs_token(rsa_keys["k1"], "k1", aud="other", iss="https://idp"))
    refused(service.verify_user, rs_token(rsa_keys["k1"], "k1", aud="connvo", iss="https://x"))
    refused(service.verify_user, rs_token(rsa_keys["k1"], "k1"))


def test_jwks_file_rotation(tmp_path: Path, rsa_keys: dict[str, rsa.RSAPrivateKey]) -> None:
    path = write_jwks(tmp_path / "jwks.json", {"k1": rsa_keys["k1"]})
    service = TokenService(secrets=(NEW,), jwks=str(path))
    refused(service.verify_user, rs_token(rsa_keys["k3"], "k3"))
    write_jwks(path, {"k3": rsa_keys["k3"]})
    stamp = time.time() + 5
    os.utime(path, (stamp, stamp))  # coarse file-system clocks: make the change visible
    assert verify_user(service, rs_token(rsa_keys["k3"], "k3")).user_id == "user_rs"
    refused(service.verify_user, rs_token(rsa_keys["k1"], "k1"))


def test_broken_jwks_file(tmp_path: Path, rsa_keys: dict[str, rsa.RSAPrivateKey],
                          caplog: pytest.LogCaptureFixture) -> None:
    """Regression: a JWKS file that became unreadable (caught mid-rewrite during key rotation)
    raised a bare ValueError out of verify_user, a 500 for every RS256 caller. The last good key
    set now stays in use; a missing file at start is still a clear error."""
    with pytest.raises(ValueError, match="cannot load JWKS"):
        TokenService(secrets=(NEW,), jwks=str(tmp_path / "missing.json"))
    path = write_jwks(tmp_path / "jwks.json", {"k1": rsa_keys["k1"]})
    service = TokenService(secrets=(NEW,), jwks=str(path))
    for breakage in ("{not json", None):
        if breakage is None:
            path.unlink()
        else:
            path.write_text(breakage)
            stamp = time.time() + 5
            os.utime(path, (stamp, stamp))
        assert verify_user(service, rs_token(rsa_keys["k1"], "k1")).user_id == "user_rs"
        refused(service.verify_user, rs_token(rsa_keys["k2"], "k2"))
    assert "keeping the previous keys" in caplog.text
    write_jwks(path, {"k2": rsa_keys["k2"]})
    assert verify_user(service, rs_token(rsa_keys["k2"], "k2")).user_id == "user_rs"


# ---------------------------------------------------------------------- nothing leaks into logs


async def test_tokens_never_logged(hub: HubHandle, caplog: pytest.LogCaptureFixture,
                                   tmp_path: Path, rsa_keys: dict[str, rsa.RSAPrivateKey]) -> None:
    caplog.set_level(logging.DEBUG)
    jwks = write_jwks(tmp_path / "jwks.json", {"k1": rsa_keys["k1"]})
    service = TokenService(secrets=(hub.settings.auth.secrets[0],), jwks=str(jwks))
    meeting_id, room = await hub.create_room()
    bad = [
        hub.tokens.mint_user("host", ttl_s=-60),  # expired, good signature
        jwt.encode({"sub": "host", "exp": int(time.time()) + 60}, STRANGER, algorithm="HS256"),
        alg_none_token("host"),
        hub.mint_token(room, "host", "host"),  # a join token used as a user token
        rs_token(rsa_keys["k3"], "k1"),
    ]
    expired_join = hub.tokens.mint_join(room, "host", "host", ttl_s=60,
                                        now=time.time() - 3600)[0]
    forged_join = TokenService(secrets=(STRANGER,)).mint_join(room, "host", "host")[0]
    for token in bad:
        with pytest.raises(Unauthenticated):
            await service.verify_user(token)
        session = await hub.session()
        async with session.post(f"{hub.api_url}/queries/getMeeting",
                                json={"args": {"meetingId": meeting_id}},
                                headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 401
    for token in (expired_join, forged_join):
        client = await WsClient.connect(hub.ws_url)
        try:
            await client.send({"type": "join", "token": token})
            assert await client.expect_close() == Close.UNAUTHENTICATED
        finally:
            await client.aclose()
    text = caplog.text
    assert text, "expected some log lines to inspect"
    for token in [*bad, expired_join, forged_join]:
        for part in filter(None, token.split(".")):
            if len(part) > 16:
                assert part not in text
    assert hub.settings.auth.secrets[0] not in text


@pytest.mark.parametrize(("over", "email"), [
    ({}, "rs@example.com"),
    ({"email_verified": "true"}, "rs@example.com"),  # some identity providers send a string
    ({"email_verified": False}, ""),
    ({"email_verified": "false"}, ""),
    ({"email_verified": None}, ""),
    ({"email_verified": 1}, ""),
    ({"email_verified": "__absent__"}, ""),  # an identity provider's token must vouch
    ({"email": "\u212aate@Example.com"}, "\u212aate@example.com"),  # ASCII letters only
], ids=["true", "string-true", "false", "string-false", "null", "one", "absent", "kelvin"])
def test_rs256_email_counts_only_when_verified(
        tmp_path: Path, rsa_keys: dict[str, rsa.RSAPrivateKey], over: dict[str, Any],
        email: str) -> None:
    """An identity provider's (RS256) token whose `email_verified` is false or missing was
    admitted as the invitee its `email` named; `email.lower()` also folded the Kelvin sign onto
    `k`. The caller's email is now empty unless the token says `email_verified: true`, and
    only ASCII letters are lower-cased."""
    jwks = write_jwks(tmp_path / "jwks.json", {"k1": rsa_keys["k1"]})
    service = TokenService(secrets=(NEW,), jwks=str(jwks))
    if over.get("email_verified") == "__absent__":
        now = int(time.time())
        token = jwt.encode({"sub": "user_rs", "email": "rs@example.com", "exp": now + 60},
                           rsa_keys["k1"], algorithm="RS256", headers={"kid": "k1"})
    else:
        token = rs_token(rsa_keys["k1"], "k1", **over)
    identity = verify_user(service, token)
    assert (identity.user_id, identity.email) == ("user_rs", email)


@pytest.mark.parametrize(("over", "email"), [
    ({}, "bob@example.com"),  # the deployment's own backend signed it: an absent flag is trusted
    ({"email_verified": True}, "bob@example.com"),
    ({"email_verified": False}, ""),
    ({"email_verified": "FALSE"}, ""),
    ({"email": " Bob@EXAMPLE.com "}, "bob@example.com"),
    ({"email": "bob@\u212aexample.com"}, "bob@\u212aexample.com"),
], ids=["absent", "true", "false", "string-false", "ascii-case", "kelvin"])
def test_hs256_email_unless_explicitly_unverified(over: dict[str, Any], email: str) -> None:
    """HS256 user tokens are signed with the deployment's own secrets, and its backend often
    leaves `email_verified` out: absent is trusted, an explicit false never is."""
    service = TokenService(secrets=(NEW,))
    now = int(time.time())
    claims = {"sub": "bob", "email": "bob@example.com", "exp": now + 60, **over}
    identity = verify_user(service, jwt.encode(claims, NEW, algorithm="HS256"))
    assert (identity.user_id, identity.email) == ("bob", email)
