"""TURN REST credentials: format, known vectors, user-id encoding, TTL and secret checks."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turn.credentials import (
    MAX_ENCODED_USER_ID_LENGTH,
    TurnCredential,
    check_credential,
    decode_user_id,
    encode_user_id,
    issue_credential,
    parse_username,
    sign,
)
from turn.errors import CredentialError

NOW = 1_699_996_400  # 1700000000 - 3600


def independent_credential(secret: str, username: str) -> str:
    """The coturn formula, written out again without the code under test."""
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def test_known_vector_computed_with_openssl() -> None:
    # printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac 'north-secret' -binary | base64
    cred = issue_credential("alice", ["north-secret"], ttl_s=3600, now=NOW)
    assert cred == TurnCredential(
        username="1700000000:alice",
        credential="g+jb180fcj+xlpA/2mP60OdIgU0=",
        expires_at=1_700_000_000,
    )


def test_known_vector_with_encoded_user_id() -> None:
    # printf '%s' '1700003600:bob%3Aadmin%0A' \
    #   | openssl dgst -sha1 -hmac 'south-secret' -binary | base64
    cred = issue_credential("bob:admin\n", ["south-secret"], ttl_s=7200, now=NOW + 0.9)
    assert cred.username == "1700003600:bob%3Aadmin%0A"
    assert cred.credential == "HeDmIGV9Sv0dwhEXzTYTEEsnSuk="


@pytest.mark.parametrize(
    "user_id", ["alice", "user-42", "bob@example.com", "Ünïcode 名前", "a:b:c"]
)
def test_matches_independent_hmac(user_id: str) -> None:
    cred = issue_credential(user_id, ["s3cret", "other"], ttl_s=600, now=NOW)
    expiry, _, encoded = cred.username.partition(":")
    assert int(expiry) == NOW + 600 == cred.expires_at
    assert ":" not in encoded
    assert cred.credential == independent_credential("s3cret", cred.username)
    assert sign("s3cret", cred.username) == cred.credential


def test_first_secret_signs() -> None:
    a = issue_credential("alice", ["one", "two"], ttl_s=60, now=NOW)
    b = issue_credential("alice", ["two", "one"], ttl_s=60, now=NOW)
    assert a.username == b.username
    assert a.credential == independent_credential("one", a.username)
    assert b.credential == independent_credential("two", b.username)


def test_deterministic_given_now() -> None:
    assert issue_credential("u", ["k"], ttl_s=60, now=NOW) == issue_credential(
        "u", ["k"], ttl_s=60, now=NOW
    )


def test_default_now_is_current_time() -> None:
    import time

    before = int(time.time())
    cred = issue_credential("u", ["k"], ttl_s=60)
    assert before + 60 <= cred.expires_at <= int(time.time()) + 60


@pytest.mark.parametrize(
    "user_id",
    [
        "plain",
        "with:colon",
        "ctrl\x00\x1f\x7f",
        "space here",
        "100%",
        "emoji🙂",
        "slash/and?query#",
    ],
)
def test_user_id_encoding_is_safe_and_reversible(user_id: str) -> None:
    encoded = encode_user_id(user_id)
    assert ":" not in encoded
    assert all(32 < ord(c) < 127 for c in encoded)
    assert decode_user_id(encoded) == user_id


@settings(database=None, max_examples=300, deadline=None)
# 21 characters of 4 UTF-8 bytes each encode to 252 <= MAX_ENCODED_USER_ID_LENGTH.
@given(st.text(min_size=1, max_size=21))
def test_any_text_user_id_encodes_safely(user_id: str) -> None:
    encoded = encode_user_id(user_id)
    assert ":" not in encoded and all(32 < ord(c) < 127 for c in encoded)
    assert decode_user_id(encoded) == user_id
    cred = issue_credential(user_id, ["k"], ttl_s=60, now=NOW)
    assert cred.username == f"{NOW + 60}:{encoded}"
    assert parse_username(cred.username) == (NOW + 60, user_id)


def test_readable_ids_are_unchanged() -> None:
    assert encode_user_id("bob@example.com") == "bob@example.com"
    assert encode_user_id("user_42-x.y~z") == "user_42-x.y~z"


def test_distinct_ids_never_collide() -> None:
    assert encode_user_id("a:b") != encode_user_id("a%3Ab")


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        ("", "must not be empty"),
        ("x" * (MAX_ENCODED_USER_ID_LENGTH + 1), "too long"),
        (":" * 100, "too long"),
    ],
)
def test_bad_user_ids_rejected(user_id: str, message: str) -> None:
    with pytest.raises(CredentialError, match=message):
        issue_credential(user_id, ["k"], ttl_s=60, now=NOW)


def test_non_string_user_id_rejected() -> None:
    with pytest.raises(CredentialError, match="must be a string"):
        issue_credential(42, ["k"], ttl_s=60, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [0, -1, 86_401])
def test_ttl_bounds(ttl: int) -> None:
    with pytest.raises(CredentialError, match="ttl_s"):
        issue_credential("u", ["k"], ttl_s=ttl, now=NOW)


def test_ttl_custom_max() -> None:
    issue_credential("u", ["k"], ttl_s=600, max_ttl_s=600, now=NOW)
    with pytest.raises(CredentialError, match=r"1\.\.600"):
        issue_credential("u", ["k"], ttl_s=601, max_ttl_s=600, now=NOW)


@pytest.mark.parametrize("ttl", [1.5, True, "60"])
def test_ttl_must_be_whole_seconds(ttl: object) -> None:
    with pytest.raises(CredentialError, match="whole number"):
        issue_credential("u", ["k"], ttl_s=ttl, now=NOW)  # type: ignore[arg-type]


def test_secrets_required() -> None:
    with pytest.raises(CredentialError, match="at least one"):
        issue_credential("u", [], ttl_s=60, now=NOW)


def test_bare_string_secret_refused() -> None:
    """A str is a Sequence: iterating it would sign with its first character."""
    with pytest.raises(CredentialError, match="not a single string"):
        issue_credential("u", "secret", ttl_s=60, now=NOW)


def test_empty_secret_refused_without_echoing_others() -> None:
    with pytest.raises(CredentialError) as info:
        issue_credential("u", ["top-secret-value", ""], ttl_s=60, now=NOW)
    assert "secrets[1]" in str(info.value)
    assert "top-secret-value" not in str(info.value) + repr(info.value)


def test_repr_hides_credential() -> None:
    cred = issue_credential("alice", ["k"], ttl_s=60, now=NOW)
    assert cred.credential not in repr(cred)
    assert cred.username in repr(cred)


def test_check_credential_accepts_any_configured_secret() -> None:
    cred = issue_credential("alice", ["old"], ttl_s=60, now=NOW)
    assert check_credential(cred.username, cred.credential, ["new", "old"], now=NOW)
    assert not check_credential(cred.username, cred.credential, ["new"], now=NOW)
    assert not check_credential(cred.username, cred.credential, ["old"], now=NOW + 61)
    assert not check_credential("garbage", cred.credential, ["old"], now=NOW)


def test_parse_username_round_trip() -> None:
    cred = issue_credential("a:b c", ["k"], ttl_s=60, now=NOW)
    assert parse_username(cred.username) == (NOW + 60, "a:b c")
    with pytest.raises(CredentialError):
        parse_username("alice")
