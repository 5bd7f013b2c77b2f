"""``GET /api/openapi.json``: a valid OpenAPI 3.0 document holding the seed paths verbatim plus
our additions, and every answer our endpoints give validates against it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema.exceptions import SchemaError
from openapi_schema_validator import OAS30Validator

from signaling.openapi import EXTRA, build_spec
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
    """``body`` matches what ``spec`` documents for ``path`` and ``status``. Seed paths document
    only 200/400/500; their other failures are checked against FailedResponse."""
    responses = spec["paths"][path]["post"]["responses"]
    if str(status) in responses:
        ref = responses[str(status)]["content"]["application/json"]["schema"]["$ref"]
    else:
        assert path in SEED_PATHS, f"{path} answers {status}, which the spec does not list"
        ref = "#/components/schemas/FailedResponse"
    errors = [e.message for e in spec_validator(spec, ref.rsplit("/", 1)[1]).iter_errors(body)]
    assert not errors, (path, status, errors, body)


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
def test_seed_paths_and_schemas_verbatim(name: str) -> None:
    spec, doc = build_spec(), seed(name)
    path, _ = operation(doc)
    assert spec["paths"][path] == doc["paths"][path]
    for key, schema in doc["components"]["schemas"].items():
        if key == "FailedResponse":
            # ours is the seed's (any object) narrowed to what we send
            assert spec["components"]["schemas"][key]["type"] == schema["type"] == "object"
        else:
            assert spec["components"]["schemas"][key] == schema, key


def test_our_additions_are_documented() -> None:
    spec = build_spec()
    assert set(spec["paths"]) == SEED_PATHS | set(EXTRA)
    assert {p.rsplit("/", 1)[1] for p in EXTRA} == {"createJoinToken", "endMeeting",
                                                    "removeParticipant", "getIceServers",
                                                    "getTranscript"}
    for path in EXTRA:
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "401", "403", "404", "409", "429"} <= set(responses)
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
