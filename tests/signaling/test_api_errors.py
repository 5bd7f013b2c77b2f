"""Every error path of the HTTP API answers the FailedResponse envelope with the right status.

``{"status": "error", "errorMessage": str, "errorData": {"code": str, ...}}`` with 400/401/403/
404/409/429, validated against ``FailedResponse`` in our ``/api/openapi.json``; never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from signaling.testing.hub import SECRET, HubHandle, start_hub, test_settings
from tests.waiting import wait_until

PLACEHOLDER = "meeting_123example"
UNKNOWN = "meeting_doesnotexist"
ENDPOINTS = {
    "createMeeting": "lifecycle/createMeeting",
    "startMeeting": "lifecycle/startMeeting",
    "endMeeting": "lifecycle/endMeeting",
    "initializeWebRTCRoom": "webrtc/index/initializeWebRTCRoom",
    "getMeeting": "queries/getMeeting",
    "createJoinToken": "webrtc/index/createJoinToken",
    "removeParticipant": "webrtc/index/removeParticipant",
    "getIceServers": "webrtc/index/getIceServers",
}


# ---------------------------------------------------------------------- helpers


async def fetch_spec(hub: HubHandle) -> dict[str, Any]:
    session = await hub.session()
    async with session.get(hub.base_url + "/api/openapi.json") as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


def spec_validator(spec: dict[str, Any], name: str) -> OAS30Validator:
    """A validator for ``components.schemas[name]`` of our spec, ``$ref``s resolved in it."""
    root = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return OAS30Validator(root, format_checker=oas30_format_checker)


def assert_failed(spec: dict[str, Any], status: int, body: Any, expect_status: int,
                  code: str | None = None) -> None:
    """``body`` is a valid FailedResponse with HTTP ``expect_status`` (and ``code``)."""
    assert status == expect_status, (status, body)
    errors = [e.message for e in spec_validator(spec, "FailedResponse").iter_errors(body)]
    assert not errors, (errors, body)
    assert body["status"] == "error" and isinstance(body["errorMessage"], str)
    assert body["errorMessage"], "an error needs a message"
    assert isinstance(body["errorData"]["code"], str) and body["errorData"]["code"]
    if code is not None:
        assert body["errorData"]["code"] == code, body


async def post(hub: HubHandle, endpoint: str, data: bytes | None = None, *,
               json_body: Any = None, headers: dict[str, str] | None = None,
               method: str = "POST") -> tuple[int, Any]:
    """A raw request to ``/api/run/meetings/<endpoint>``; the body is parsed as JSON."""
    session = await hub.session()
    async with session.request(method, f"{hub.api_url}/{endpoint}", data=data, json=json_body,
                               headers=headers or {}) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(user: str = "host", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "email": f"{user}@example.com", "iat": now, "exp": now + 600, **extra}


def hmac_token(payload: dict[str, Any], key: bytes | str, *, alg: str = "HS256",
               digest: str = "sha256") -> str:
    """A JWT signed by hand (PyJWT warns about, or refuses, the keys these tests need)."""
    import hashlib
    import hmac

    key = key.encode() if isinstance(key, str) else key
    signing = (f"{_b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}."
               f"{_b64(json.dumps(payload).encode())}")
    mac = hmac.new(key, signing.encode(), getattr(hashlib, digest)).digest()
    return f"{signing}.{_b64(mac)}"


def alg_none_token(user: str = "host") -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims(user)).encode())}."


def rs256_token(user: str = "host") -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return jwt.encode(claims(user), pem, algorithm="RS256", headers={"kid": "k1"})


# ---------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """One failing request: the meeting it needs, what is sent, and what must come back."""

    id: str
    endpoint: str
    args: dict[str, Any]
    status: int
    code: str | None
    #: "none", "scheduled", "initialized" (room, not started), "started", "above-mesh"
    #: (started, getstream), "ended" (concluded) or "cancelled".
    meeting: str = "started"
    user: str = "host"
    #: Replaces the Authorization header; gets the hub and the room id.
    auth: Callable[[HubHandle, str], dict[str, str]] | None = None
    #: Replaces the JSON body with these raw bytes.
    raw: bytes | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)


M = {"meetingId": PLACEHOLDER}
CASES = [
    # 401: credentials
    Case("no-bearer", "getMeeting", M, 401, "unauthenticated", auth=lambda h, r: {}),
    Case("basic-scheme", "getMeeting", M, 401, "unauthenticated",
         auth=lambda h, r: {"Authorization": "Basic aG9zdDpwdw=="}),
    Case("empty-bearer", "getMeeting", M, 401, "unauthenticated",
         auth=lambda h, r: {"Authorization": "Bearer "}),
    Case("garbage-bearer", "getMeeting", M, 401, "bad-token",
         auth=lambda h, r: bearer("not-a-jwt")),
    Case("alg-none", "getMeeting", M, 401, "bad-token",
         auth=lambda h, r: bearer(alg_none_token())),
    Case("hs512", "getMeeting", M, 401, "bad-token",
         auth=lambda h, r: bearer(hmac_token(claims(), SECRET, alg="HS512", digest="sha512"))),
    Case("wrong-secret", "getMeeting", M, 401, "bad-token",
         auth=lambda h, r: bearer(jwt.encode(claims(), "x" * 40, algorithm="HS256"))),
    Case("rs256-without-jwks", "getMeeting", M, 401, "bad-token",
         auth=lambda h, r: bearer(rs256_token())),
    Case("expired-user-token", "getMeeting", M, 401, "token-expired",
         auth=lambda h, r: bearer(h.tokens.mint_user("host", "host@example.com", ttl_s=-60))),
    Case("no-sub", "getMeeting", M, 401, "bad-token",
         auth=lambda h, r: bearer(jwt.encode({"exp": int(time.time()) + 60}, SECRET,
                                             algorithm="HS256"))),
    Case("join-token-as-user-token", "getMeeting", M, 401, "bad-token",
         auth=lambda h, r: bearer(h.mint_token(r, "host", "host"))),
    Case("join-token-as-user-token-create", "createMeeting", {"title": "t"}, 401, "bad-token",
         auth=lambda h, r: bearer(h.mint_token(r, "host", "host"))),
    # 403: roles
    Case("not-invited-get", "getMeeting", M, 403, "not-invited", user="mallory"),
    Case("not-invited-token", "createJoinToken", M, 403, "not-invited", user="mallory"),
    Case("not-invited-init", "initializeWebRTCRoom", M, 403, "not-invited", user="mallory"),
    Case("participant-start", "startMeeting", M, 403, "host-only", meeting="scheduled",
         user="bob"),
    Case("participant-end", "endMeeting", M, 403, "host-only", user="bob"),
    Case("participant-remove", "removeParticipant", {**M, "userId": "carol"}, 403, "host-only",
         user="bob"),
    Case("participant-asks-host-role", "createJoinToken", {**M, "role": "host"}, 403,
         "role-not-allowed", user="bob"),
    Case("organizer-mismatch", "createMeeting", {"title": "t", "organizerId": "someone_else"},
         403, "organizer-mismatch", meeting="none"),
    # 404: unknown meeting, unknown peer
    *[Case(f"unknown-meeting-{name}", name, {"meetingId": UNKNOWN, "userId": "bob"}, 404,
           "meeting-not-found", meeting="none")
      for name in ENDPOINTS if name not in ("createMeeting", "getIceServers")],
    Case("unknown-peer", "removeParticipant", {**M, "peerId": "p_nobody"}, 404, "unknown-peer"),
    # 400: bodies and arguments
    Case("body-not-json", "getMeeting", M, 400, "invalid-json", raw=b"{not json"),
    Case("body-empty", "getMeeting", M, 400, "invalid-json", raw=b""),
    Case("body-array", "getMeeting", M, 400, "invalid-json", raw=b"[1, 2]"),
    Case("body-not-utf8", "getMeeting", M, 400, "invalid-json", raw=b'{"args": "\xff"}'),
    Case("args-missing", "getMeeting", M, 400, "bad-request", raw=b'{"meetingId": "m"}'),
    Case("args-not-object", "getMeeting", M, 400, "bad-request", raw=b'{"args": [1]}'),
    Case("args-null", "getMeeting", M, 400, "bad-request", raw=b'{"args": null}'),
    Case("meeting-id-missing", "getMeeting", {}, 400, "invalid-args"),
    Case("meeting-id-number", "getMeeting", {"meetingId": 5}, 400, "invalid-args"),
    Case("meeting-id-bad-chars", "getMeeting", {"meetingId": "a/b c"}, 400, "invalid-args"),
    Case("meeting-id-too-long", "getMeeting", {"meetingId": "m" * 65}, 400, "invalid-args"),
    Case("title-missing", "createMeeting", {"description": "d"}, 400, "invalid-args",
         meeting="none"),
    Case("title-blank", "createMeeting", {"title": "   "}, 400, "invalid-args", meeting="none"),
    Case("title-number", "createMeeting", {"title": 5}, 400, "invalid-args", meeting="none"),
    Case("max-participants-string", "createMeeting", {"title": "t", "maxParticipants": "8"},
         400, "invalid-args", meeting="none"),
    Case("max-participants-fraction", "createMeeting", {"title": "t", "maxParticipants": 2.5},
         400, "invalid-args", meeting="none"),
    Case("max-participants-zero", "initializeWebRTCRoom", {**M, "maxParticipants": 0}, 400,
         "invalid-args"),
    Case("recording-string", "createMeeting", {"title": "t", "recordingEnabled": "yes"}, 400,
         "invalid-args", meeting="none"),
    Case("meeting-type-unknown", "createMeeting", {"title": "t", "meetingType": "huge"}, 400,
         "invalid-args", meeting="none"),
    Case("emails-not-list", "createMeeting", {"title": "t", "participantEmails": "a@b.c"}, 400,
         "invalid-args", meeting="none"),
    Case("email-invalid", "createMeeting", {"title": "t", "participantEmails": ["nope"]}, 400,
         "invalid-args", meeting="none"),
    Case("scheduled-at-negative", "createMeeting", {"title": "t", "scheduledAt": -1}, 400,
         "invalid-args", meeting="none"),
    Case("role-unknown", "createJoinToken", {**M, "role": "admin"}, 400, "invalid-args"),
    Case("role-tap-refused", "createJoinToken", {**M, "role": "tap"}, 400, "invalid-args"),
    Case("ttl-too-short", "createJoinToken", {**M, "ttlSeconds": 5}, 400, "invalid-args"),
    # Limits the spec states are argument limits: invalid-args, before the meeting is looked up.
    Case("ttl-above-max", "createJoinToken", {**M, "ttlSeconds": 86_401}, 400, "invalid-args"),
    Case("remove-neither", "removeParticipant", M, 400, "invalid-args"),
    Case("remove-both", "removeParticipant", {**M, "userId": "bob", "peerId": "p_x"}, 400,
         "invalid-args"),
    Case("null-arg", "removeParticipant", {**M, "userId": "bob", "peerId": None}, 400,
         "invalid-args"),
    Case("remove-self", "removeParticipant", {**M, "userId": "host"}, 400, "bad-request"),
    # 409: state
    Case("token-before-start", "createJoinToken", M, 409, "meeting-not-started",
         meeting="scheduled"),
    Case("token-initialized-not-started", "createJoinToken", M, 409, "meeting-not-started",
         meeting="initialized"),
    Case("token-after-end", "createJoinToken", M, 409, "meeting-concluded", meeting="ended"),
    Case("token-after-cancel", "createJoinToken", M, 409, "meeting-cancelled",
         meeting="cancelled"),
    Case("token-getstream-meeting", "createJoinToken", M, 409, "not-webrtc",
         meeting="above-mesh"),
    Case("start-after-end", "startMeeting", M, 409, "meeting-concluded", meeting="ended"),
    Case("start-after-cancel", "startMeeting", M, 409, "meeting-cancelled", meeting="cancelled"),
    Case("init-after-end", "initializeWebRTCRoom", M, 409, "meeting-concluded", meeting="ended"),
    Case("remove-before-start", "removeParticipant", {**M, "userId": "bob"}, 409,
         "meeting-not-started", meeting="scheduled"),
]


async def prepare(hub: HubHandle, state: str) -> tuple[str, str]:
    """A meeting (host "host", invited bob and carol) in ``state``; ``(meeting_id, room_id)``."""
    if state == "none":
        return UNKNOWN, "room_none"
    args: dict[str, Any] = {"title": "errors", "participantEmails": ["bob@example.com",
                                                                     "carol@example.com"]}
    if state == "above-mesh":
        args["maxParticipants"] = 8
    status, body = await hub.call(ENDPOINTS["createMeeting"], args)
    assert status == 200, body
    meeting_id, room_id = body["value"]["meetingId"], "room_none"
    if state in ("initialized", "started", "ended"):
        status, body = await hub.call(ENDPOINTS["initializeWebRTCRoom"], {"meetingId": meeting_id})
        assert status == 200, body
        room_id = body["value"]["roomId"]
    if state in ("started", "ended", "above-mesh"):
        status, body = await hub.call(ENDPOINTS["startMeeting"], {"meetingId": meeting_id})
        assert status == 200, body
    if state in ("ended", "cancelled"):
        status, body = await hub.call(ENDPOINTS["endMeeting"], {"meetingId": meeting_id})
        assert status == 200, body
        assert body["value"]["state"] == ("concluded" if state == "ended" else "cancelled")
    return meeting_id, room_id


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_error_path(hub: HubHandle, case: Case) -> None:
    spec = await fetch_spec(hub)
    meeting_id, room_id = await prepare(hub, case.meeting)
    if case.auth is not None:
        headers = case.auth(hub, room_id)
    else:
        headers = bearer(hub.user_token(case.user))
    headers.update(case.extra_headers)
    args = {k: (meeting_id if v == PLACEHOLDER else v) for k, v in case.args.items()}
    if case.raw is not None:
        headers["Content-Type"] = "application/json"
        status, body = await post(hub, ENDPOINTS[case.endpoint], case.raw, headers=headers)
    else:
        status, body = await post(hub, ENDPOINTS[case.endpoint], json_body={"args": args},
                                  headers=headers)
    assert_failed(spec, status, body, case.status, case.code)
    assert "value" not in body  # a refused caller learns nothing


# ---------------------------------------------------------------------- bodies over the limit


async def test_oversized_body_with_content_length(hub: HubHandle) -> None:
    spec = await fetch_spec(hub)
    limit = hub.settings.limits.max_body_bytes
    data = json.dumps({"args": {"title": "t", "description": "d" * limit}}).encode()
    status, body = await post(hub, ENDPOINTS["createMeeting"], data,
                              headers={**bearer(hub.user_token("host")),
                                       "Content-Type": "application/json"})
    assert_failed(spec, status, body, 400, "body-too-large")


async def test_oversized_chunked_body(hub: HubHandle) -> None:
    """No Content-Length: the limit is enforced while reading."""
    spec = await fetch_spec(hub)
    limit = hub.settings.limits.max_body_bytes
    data = json.dumps({"args": {"title": "t", "description": "d" * limit}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    status, body = await post(hub, ENDPOINTS["createMeeting"], chunks(),  # type: ignore[arg-type]
                              headers=bearer(hub.user_token("host")))
    assert_failed(spec, status, body, 400, "body-too-large")


async def test_chunked_body_below_limit_is_read_whole(hub: HubHandle) -> None:
    """Regression: the body was read with one ``content.read(limit + 1)``, which returns only
    what has arrived so far, so a valid body sent in several chunks was cut short and refused
    as ``invalid-json``."""
    data = json.dumps({"args": {"title": "chunked", "description": "d" * 3000}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 500):
            yield data[i:i + 500]
            await asyncio.sleep(0.005)

    status, body = await post(hub, ENDPOINTS["createMeeting"], chunks(),  # type: ignore[arg-type]
                              headers=bearer(hub.user_token("host")))
    assert status == 200, body
    assert body["value"]["meetingId"]


# ---------------------------------------------------------------------- routing errors


async def test_unknown_endpoint_and_wrong_method_use_the_envelope(hub: HubHandle) -> None:
    spec = await fetch_spec(hub)
    status, body = await post(hub, "lifecycle/noSuchThing", json_body={"args": {}},
                              headers=bearer(hub.user_token("host")))
    assert_failed(spec, status, body, 404, "unknown-endpoint")
    status, body = await post(hub, ENDPOINTS["getMeeting"], method="GET",
                              headers=bearer(hub.user_token("host")))
    assert_failed(spec, status, body, 405, "method-not-allowed")
    # the real endpoints are still reachable
    status, body = await hub.call(ENDPOINTS["getIceServers"], {})
    assert status == 200, body


# ---------------------------------------------------------------------- rate limit


async def test_rate_limit_answers_429_per_caller() -> None:
    hub = await start_hub(test_settings(limits={"api_requests_per_second": 1}))
    try:
        spec = await fetch_spec(hub)
        results = [await hub.call(ENDPOINTS["getIceServers"], {}, user="alice")
                   for _ in range(6)]
        statuses = [status for status, _ in results]
        assert statuses[:4] == [200] * 4  # burst of 4x the rate
        assert 429 in statuses[4:], statuses
        for status, body in results:
            if status == 429:
                assert_failed(spec, status, body, 429, "rate-limited")
                assert body["errorData"]["retryable"] is True
        # buckets are per caller
        status, _ = await hub.call(ENDPOINTS["getIceServers"], {}, user="bob")
        assert status == 200
        # alice's bucket refills at 1 token/s (a 429 takes none): she gets through again.
        async def alice_served() -> bool:
            status, _ = await hub.call(ENDPOINTS["getIceServers"], {}, user="alice")
            return status == 200

        await wait_until(alice_served, interval=0.1, what="alice's rate-limit bucket refilling")
    finally:
        await hub.aclose()


async def test_bad_tokens_are_rate_limited_by_address() -> None:
    """Requests that fail authentication have no user to charge: they were never rate limited,
    so token guessing ran at full speed. They are now limited per client address."""
    hub = await start_hub(test_settings(limits={"api_requests_per_second": 1}))
    try:
        spec = await fetch_spec(hub)
        guesses = [await post(hub, ENDPOINTS["getIceServers"], json_body={"args": {}},
                              headers=bearer(f"guess-{i}")) for i in range(6)]
        assert [status for status, _ in guesses[:4]] == [401] * 4
        status, body = guesses[-1]
        assert_failed(spec, status, body, 429, "rate-limited")
        # a caller with a valid token has its own bucket
        status, _ = await hub.call(ENDPOINTS["getIceServers"], {}, user="alice")
        assert status == 200
    finally:
        await hub.aclose()


# ---------------------------------------------------------------------- fuzz: never a 500

_ARG_NAMES = ["meetingId", "title", "description", "duration", "maxParticipants", "meetingType",
              "organizerId", "participantEmails", "recordingEnabled", "scheduledAt",
              "transcriptionEnabled", "role", "ttlSeconds", "userId", "peerId"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    | st.sampled_from([PLACEHOLDER, "host", "bob@example.com", "small-group", "observer"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8,
)


@pytest.fixture
async def fast_hub() -> AsyncIterator[HubHandle]:
    # Every example makes meetings as "host": no quota of open meetings here.
    handle = await start_hub(test_settings(limits={"api_requests_per_second": 1e6,
                                                   "max_open_meetings_per_user": 0}))
    try:
        yield handle
    finally:
        await handle.aclose()


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(sorted(ENDPOINTS)),
       args=st.dictionaries(st.sampled_from(_ARG_NAMES) | st.text(max_size=8), _JSON,
                            max_size=6),
       user=st.sampled_from(["host", "bob", "mallory"]))
async def test_fuzzed_args_never_500(fast_hub: HubHandle, endpoint: str, args: dict[str, Any],
                                     user: str) -> None:
    hub = fast_hub
    meeting_id, _ = await prepare(hub, "started")
    args = {k: (meeting_id if v == PLACEHOLDER else v) for k, v in args.items()}
    status, body = await hub.call(ENDPOINTS[endpoint], args, user=user)
    assert status in (200, 400, 401, 403, 404, 409), (status, body)
    if status == 200:
        assert body["status"] == "success" and body["errorData"] == {} and "value" in body
    else:
        assert_failed(await fetch_spec(hub), status, body, status)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200)
       | _JSON.map(lambda v: json.dumps({"args": v}).encode())
       | st.binary(max_size=20).map(lambda b: b'{"args": {"meetingId": "' + b + b'"}}'))
async def test_fuzzed_bodies_never_500(fast_hub: HubHandle, data: bytes) -> None:
    status, body = await post(fast_hub, ENDPOINTS["getMeeting"], data,
                              headers={**bearer(fast_hub.user_token("host")),
                                       "Content-Type": "application/json"})
    assert status in (400, 404), (status, body)
    assert body["status"] == "error" and body["errorData"]["code"]
