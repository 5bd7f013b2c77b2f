"""``GET /api/openapi.json``: a valid OpenAPI 3.0 document holding the seed paths (their shapes
kept, their limits and statuses stated) plus our additions; every answer our endpoints give
validates against it, and it refuses exactly the arguments the server refuses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema.exceptions import SchemaError
from openapi_schema_validator import OAS30Validator

from signaling.api import ARGS
from signaling.openapi import EXTRA, FAILURES, PROVIDER_RULE, build_spec, statuses
from signaling.settings import AuthSettings, Settings
from signaling.testing.hub import HubHandle
from tests.signaling.test_api_errors import fetch_spec, spec_validator
from tests.signaling.test_api_seeds import SEEDS, operation, seed
from tests.support.wsclient import WsClient

RUN = "/api/run/meetings/"


def walk(node: Any, path: str = "#") -> Iterator[tuple[str, Any]]:
    """Every (json-pointer, node) in a document."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def schemas_in(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Component schemas and the inline schemas of every request body and response."""
    for name, schema in spec["components"]["schemas"].items():
        yield f"components/{name}", schema
    for path, item in spec["paths"].items():
        for method, op in item.items():
            bodies = [op.get("requestBody", {})] + list(op["responses"].values())
            for body in bodies:
                for media in body.get("content", {}).values():
                    yield f"{method} {path}", media["schema"]


def validate_answer(spec: dict[str, Any], path: str, status: int, body: Any) -> None:
    """``body`` matches what ``spec`` documents for ``path`` and ``status``, which it lists."""
    responses = spec["paths"][path]["post"]["responses"]
    assert str(status) in responses, f"{path} answers {status}, which the spec does not list"
    ref = responses[str(status)]["content"]["application/json"]["schema"]["$ref"]
    errors = [e.message for e in spec_validator(spec, ref.rsplit("/", 1)[1]).iter_errors(body)]
    assert not errors, (path, status, errors, body)


def request_errors(spec: dict[str, Any], path: str, args: Any) -> list[str]:
    """Why the spec refuses ``{"args": args}`` for ``path`` (empty: it accepts it)."""
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = ref["$ref"].rsplit("/", 1)[1]
    return [e.message for e in spec_validator(spec, name).iter_errors({"args": args})]


def assert_narrows(seed: Any, ours: Any, where: str = "") -> None:
    """``ours`` is ``seed`` with constraints added: each of the seed's keywords is there with
    its value (properties and items compared the same way, ``required`` may grow, a ``number``
    may become an ``integer``), and nothing the seed allows is widened."""
    if not isinstance(seed, dict):
        assert ours == seed, where
        return
    assert isinstance(ours, dict), where
    assert "nullable" not in ours or "nullable" in seed, where
    for key, value in seed.items():
        assert key in ours, f"{where}/{key} dropped"
        if key == "properties":
            for name, prop in value.items():
                assert_narrows(prop, ours[key].get(name), f"{where}/{name}")
        elif key == "items":
            assert_narrows(value, ours[key], f"{where}/items")
        elif key == "required":
            assert set(value) <= set(ours[key]), where
        elif key == "type" and value == "number":
            assert ours[key] in ("number", "integer"), where
        else:
            assert ours[key] == value, f"{where}/{key}"


SEED_PATHS = {operation(seed(name))[0] for name in SEEDS}


# ---------------------------------------------------------------------- the document


async def test_served_document_is_the_built_spec(hub: HubHandle) -> None:
    session = await hub.session()
    async with session.get(hub.base_url + "/api/openapi.json") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.json() == build_spec()


def test_spec_validates_as_openapi_30() -> None:
    import openapi_spec_validator as spec_validator_mod

    spec_validator_mod.validate(build_spec(), cls=spec_validator_mod.OpenAPIV30SpecValidator)


def test_spec_structure() -> None:
    """What openapi-spec-validator would catch, with the tools we always have: every schema is
    a valid OAS 3.0 schema object, every $ref resolves, every operation is complete."""
    spec = build_spec()
    assert spec["openapi"].startswith("3.0.")
    assert spec["info"]["title"] and spec["info"]["version"]
    for where, schema in schemas_in(spec):
        try:
            OAS30Validator.check_schema(schema)
        except SchemaError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{where}: {exc}")
    refs = [(where, node["$ref"]) for where, node in walk(spec)
            if isinstance(node, dict) and "$ref" in node]
    assert refs
    for where, ref in refs:
        assert isinstance(resolve(spec, ref), dict), (where, ref)
    operation_ids = []
    for path, item in spec["paths"].items():
        assert path.startswith(RUN)
        assert set(item) == {"post"}, path
        op = item["post"]
        operation_ids.append(op["operationId"])
        assert op["responses"]["200"]["description"]
        assert all(r["description"] for r in op["responses"].values())
        body = op["requestBody"]["content"]["application/json"]
        example = body.get("example")
        if example is not None:
            name = body["schema"]["$ref"].rsplit("/", 1)[1]
            assert not list(spec_validator(spec, name).iter_errors(example)), path
    assert len(operation_ids) == len(set(operation_ids))
    assert "bearerAuth" in spec["components"]["securitySchemes"]


@pytest.mark.parametrize("name", SEEDS)
def test_seed_paths_and_schemas_kept(name: str) -> None:
    """The seeds' operations and response shapes are served verbatim; their request schemas
    are only narrowed (our limits), and their responses only gain the statuses we answer."""
    spec, doc = build_spec(), seed(name)
    path, seed_op = operation(doc)
    ours = spec["paths"][path]["post"]
    assert {k: v for k, v in ours.items() if k != "responses"} == \
        {k: v for k, v in seed_op.items() if k != "responses"}
    for status, response in seed_op["responses"].items():
        if status == "200" and name in ("createMeeting", "startMeeting"):
            # the provider rule is added to the description, and createMeeting's example
            # answers what this server answers for the example request (not "webrtc" for 8)
            assert ours["responses"][status]["description"].endswith(PROVIDER_RULE)
            assert ours["responses"][status]["content"]["application/json"]["schema"] == \
                response["content"]["application/json"]["schema"]
            continue
        assert ours["responses"][status] == response, status
    assert set(ours["responses"]) == set(seed_op["responses"]) | {str(s) for s in statuses(path)}
    for key, schema in doc["components"]["schemas"].items():
        if key == "FailedResponse":
            # ours is the seed's (any object) narrowed to what we send
            assert spec["components"]["schemas"][key]["type"] == schema["type"] == "object"
        elif key.startswith("Request_"):
            assert_narrows(schema, spec["components"]["schemas"][key], key)
        else:
            assert spec["components"]["schemas"][key] == schema, key


def test_our_additions_are_documented() -> None:
    spec = build_spec()
    assert set(spec["paths"]) == SEED_PATHS | set(EXTRA)
    assert {p.rsplit("/", 1)[1] for p in EXTRA} == {"createJoinToken", "endMeeting",
                                                    "removeParticipant", "getIceServers",
                                                    "getTranscript", "getRecording",
                                                    "createMeetingFromScenario",
                                                    "listScenarios"}
    for path in spec["paths"]:
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "401", "429", "503"} <= set(responses), path
        seeded = next((operation(seed(n))[1]["responses"] for n in SEEDS
                       if operation(seed(n))[0] == path), {})
        for status in statuses(path):
            if str(status) not in seeded:  # the seeds' own 400 keeps its words
                assert responses[str(status)]["description"] == FAILURES[status]
    failed = spec["components"]["schemas"]["FailedResponse"]
    assert set(failed["required"]) == {"status", "errorMessage", "errorData"}
    assert failed["properties"]["errorData"]["required"] == ["code"]


def test_empty_required_lists_are_omitted() -> None:
    """Regression: ``getIceServers`` takes no args and its schema had ``required: []``, which
    OpenAPI 3.0 forbids (minItems 1): openapi-spec-validator rejected the whole document."""
    for where, node in walk(build_spec()):
        if isinstance(node, dict) and "required" in node and isinstance(node["required"], list):
            assert node["required"], where


# ---------------------------------------------------------------------- answers match the spec


async def test_every_answer_matches_the_spec(hub: HubHandle) -> None:
    """Drive every endpoint through success and failure; each answer validates against what the
    spec documents for that path and status."""
    spec = await fetch_spec(hub)
    seen: set[tuple[str, int]] = set()

    async def call(endpoint: str, args: dict[str, Any], user: str = "host") -> Any:
        status, body = await hub.call(endpoint, args, user=user)
        validate_answer(spec, RUN + endpoint, status, body)
        seen.add((endpoint.rsplit("/", 1)[1], status))
        return body.get("value")

    value = await call("lifecycle/createMeeting",
                       {"title": "spec", "participantEmails": ["bob@example.com"]})
    mid = value["meetingId"]
    await call("webrtc/index/createJoinToken", {"meetingId": mid})  # 409 not started
    await call("webrtc/index/removeParticipant", {"meetingId": mid, "userId": "bob"})  # 409
    await call("webrtc/index/initializeWebRTCRoom", {"meetingId": mid})
    room = (await call("lifecycle/startMeeting", {"meetingId": mid}))["roomInfo"]["roomId"]
    await call("queries/getMeeting", {"meetingId": mid}, user="bob")
    await call("webrtc/index/getIceServers", {})
    token = (await call("webrtc/index/createJoinToken", {"meetingId": mid}, user="bob"))["token"]
    await call("webrtc/index/createJoinToken", {"meetingId": mid, "role": "host"}, user="bob")
    await call("webrtc/index/createJoinToken", {"meetingId": mid, "ttlSeconds": 10**6})  # 400
    await call("webrtc/index/createJoinToken", {"meetingId": "meeting_none"})  # 404
    await call("lifecycle/endMeeting", {"meetingId": mid}, user="mallory")  # 403
    client = await WsClient.connect(hub.ws_url)
    try:
        joined = await client.join(token)
        assert joined.room_id == room
        await call("webrtc/index/removeParticipant", {"meetingId": mid, "peerId": "p_none"})
        await call("webrtc/index/removeParticipant", {"meetingId": mid,
                                                      "peerId": joined.peer_id})
    finally:
        await client.aclose()
    await call("webrtc/index/removeParticipant", {"meetingId": mid, "userId": "host"},
               user="bob")  # 403
    await call("webrtc/index/removeParticipant", {"meetingId": mid})  # 400
    await call("lifecycle/endMeeting", {"meetingId": mid})
    await call("lifecycle/endMeeting", {"meetingId": mid})
    await call("lifecycle/startMeeting", {"meetingId": mid})  # 409
    await call("queries/getMeeting", {"meetingId": mid})
    session = await hub.session()
    async with session.post(f"{hub.api_url}/webrtc/index/getIceServers", json={"args": {}}) as r:
        validate_answer(spec, RUN + "webrtc/index/getIceServers", r.status, await r.json())
        seen.add(("getIceServers", r.status))
    assert {("createJoinToken", s) for s in (200, 400, 403, 404, 409)} <= seen
    assert {("removeParticipant", s) for s in (200, 400, 403, 404, 409)} <= seen
    assert {("endMeeting", 200), ("endMeeting", 403), ("getIceServers", 200),
            ("getIceServers", 401)} <= seen


# ---------------------------------------------------------------------- limits: spec == server

M = "meeting_0123abcd"
#: (endpoint, args, refused?) — what schemathesis found the spec allowing and the server
#: refusing, what it would have found next, and their accepted neighbours.
LIMITS = [
    ("lifecycle/createMeeting", {"title": ""}, True),
    ("lifecycle/createMeeting", {"title": " \t\u3000\ufeff\x1c"}, True),  # whitespace only
    ("lifecycle/createMeeting", {"title": "x" * 201}, True),
    ("lifecycle/createMeeting", {"title": " standup "}, False),
    ("lifecycle/createMeeting", {"title": "t", "description": None}, True),  # null: leave out
    ("lifecycle/createMeeting", {"title": "t", "maxParticipants": 4.5}, True),
    ("lifecycle/createMeeting", {"title": "t", "maxParticipants": 4.0}, False),
    ("lifecycle/createMeeting", {"title": "t", "duration": 0}, True),
    ("lifecycle/createMeeting", {"title": "t", "participantEmails": ["a@b\n"]}, True),
    ("lifecycle/createMeeting", {"title": "t", "participantEmails": ["a\x1c@b"]}, True),
    ("lifecycle/createMeeting", {"title": "t", "participantEmails": ["k\u00e5te@b"]}, False),
    ("lifecycle/createMeeting", {"title": "t", "participantEmails": ["a@b"] * 101}, True),
    ("queries/getMeeting", {"meetingId": ""}, True),
    ("queries/getMeeting", {"meetingId": M + "\n"}, True),  # Python's $ took a final newline
    ("queries/getMeeting", {"meetingId": "m" * 65}, True),
    ("queries/getMeeting", {"meetingId": M}, False),
    ("webrtc/index/initializeWebRTCRoom", {"meetingId": M, "maxParticipants": 0}, True),
    ("webrtc/index/createJoinToken", {"meetingId": M, "ttlSeconds": 0}, True),
    ("webrtc/index/createJoinToken", {"meetingId": M, "ttlSeconds": 59}, True),
    ("webrtc/index/createJoinToken", {"meetingId": M, "ttlSeconds": 86_401}, True),
    ("webrtc/index/createJoinToken", {"meetingId": M, "ttlSeconds": 86_400}, False),
    ("webrtc/index/createJoinToken", {"meetingId": M, "role": "tap"}, True),
    ("webrtc/index/removeParticipant", {"meetingId": M, "peerId": ""}, True),
    ("webrtc/index/removeParticipant", {"meetingId": M}, True),  # exactly one of userId, peerId
    ("webrtc/index/removeParticipant", {"meetingId": M, "userId": "u", "peerId": "p"}, True),
    ("webrtc/index/removeParticipant", {"meetingId": M, "userId": "u", "peerId": None}, True),
    ("webrtc/index/removeParticipant", {"meetingId": M, "peerId": "p_1"}, False),
    ("transcripts/getTranscript", {"meetingId": M, "cursor": "abc"}, True),
    ("transcripts/getTranscript", {"meetingId": M, "cursor": "12-3"}, False),
    ("transcripts/getTranscript", {"meetingId": M, "limit": 501}, True),
    ("transcripts/getTranscript", {"meetingId": M, "limit": 2.5}, True),
    ("webrtc/index/getIceServers", {"anything": None}, False),  # unknown arguments are ignored
]


@pytest.mark.parametrize(("endpoint", "args", "refused"), LIMITS)
async def test_the_spec_refuses_exactly_what_the_server_refuses(
        hub: HubHandle, endpoint: str, args: dict[str, Any], refused: bool) -> None:
    """schemathesis found the server refusing arguments the spec allowed (an empty title,
    `ttlSeconds: 0`, an empty `peerId`, `maxParticipants: 0`): its limits were not in the
    spec. They are derived from the structs that enforce them now, with patterns that mean
    the same in Python and ECMA-262, and the spec and the server agree on every case."""
    spec = build_spec(hub.settings)
    errors = request_errors(spec, RUN + endpoint, args)
    status, body = await hub.call(endpoint, args)
    server_refused = status == 400 and body["errorData"]["code"] == "invalid-args"
    assert bool(errors) is refused, errors
    assert server_refused is refused, (status, body)


def test_configured_limits_are_in_the_spec() -> None:
    """The longest join token is a setting: the spec states the deployment's, not a constant."""
    settings = Settings(auth=AuthSettings(max_token_ttl_s=600))
    ttl = build_spec(settings)["components"]["schemas"]["Request_createJoinToken"]
    assert ttl["properties"]["args"]["properties"]["ttlSeconds"]["maximum"] == 600
    assert build_spec()["components"]["schemas"]["Request_createJoinToken"]["properties"][
        "args"]["properties"]["ttlSeconds"]["maximum"] == 86_400


def test_every_endpoint_has_its_struct() -> None:
    assert set(build_spec()["paths"]) == set(ARGS)


async def test_served_create_meeting_example_is_what_the_server_answers(hub: HubHandle) -> None:
    """Issue 16: the seed's example answered webrtc for maxParticipants 8; ours says what the
    server does with that request (getstream, webrtcReady false)."""
    spec = await fetch_spec(hub)
    op = spec["paths"][f"{RUN}lifecycle/createMeeting"]["post"]
    request = op["requestBody"]["content"]["application/json"]["example"]
    example = op["responses"]["200"]["content"]["application/json"]["example"]
    status, body = await hub.call("lifecycle/createMeeting", request["args"])
    assert status == 200, body
    body["value"]["meetingId"] = example["value"]["meetingId"]
    assert body == example
