"""Meetings from a scenario (``createMeetingFromScenario``, ``listScenarios``): the room starts
at once with the scenario's AI persona in its features, the person gets a room link and a join
token, every argument is validated, and a broken scenario file stops the hub from starting.

The agent itself (the server peer that joins such a room) is tested in tests/media/agent/;
here the room is checked from the person's side of the websocket and the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from signaling.app import create_app
from signaling.settings import ConfigError
from signaling.testing.hub import HubHandle, start_hub, test_settings
from signaling.testing.redis_server import RedisServer
from tests.signaling.test_api_errors import assert_failed, fetch_spec
from tests.signaling.test_api_meetings import ok
from tests.signaling.test_cli import clean_env, free_port, run_cli
from tests.support.wsclient import WsClient

FROM_SCENARIO = "lifecycle/createMeetingFromScenario"
LIST = "scenarios/listScenarios"
GET = "queries/getMeeting"
END = "lifecycle/endMeeting"

#: A small scenario in the script brain's format (media/agent/script.py, docs/agent.md).
PRACTICE = """\
title: Practice call
description: Sam asks two questions.
call_duration: 12
persona:
  name: Sam
  instructions: You are Sam.
  welcome_message: Hello, I am Sam.
  language: English
  voice_provider: azure
script:
  start: first
  steps:
    first:
      say: What do you do?
      expect:
        - any: [developer, engineer]
          next: bye
          example: I am a developer
      otherwise: bye
    bye:
      say: Goodbye.
      end: true
"""


def scenario_dir(root: Path, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / f"{name}.yaml").write_text(text)
    return root


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[HubHandle]:
    """A hub whose deployment provides one scenario, ``practice``."""
    directory = scenario_dir(tmp_path / "scenarios", practice=PRACTICE)
    handle = await start_hub(test_settings(agent={"scenarios_dir": str(directory)}))
    try:
        yield handle
    finally:
        await handle.aclose()


async def create(hub: HubHandle, user: str = "host", **args: Any) -> dict[str, Any]:
    return await ok(hub, FROM_SCENARIO, {"scenarioId": "practice", "name": "Ada Lovelace",
                                         **args}, user=user,
                    schema="Response_createMeetingFromScenario")


async def refused(hub: HubHandle, args: dict[str, Any], status: int, code: str,
                  user: str | None = "host", path: str = FROM_SCENARIO) -> str:
    """Call ``path``; assert a FailedResponse with ``status`` and ``code``; its message."""
    got, body = await hub.call(path, args, user=user)
    assert_failed(await fetch_spec(hub), got, body, status, code)
    return body["errorMessage"]  # type: ignore[no-any-return]


async def join(url: str, token: str) -> tuple[WsClient, Any]:
    client = await WsClient.connect(url)
    try:
        return client, await client.join(token)
    except BaseException:
        await client.aclose()
        raise


async def test_list_scenarios_shows_the_deployments(hub: HubHandle) -> None:
    value = await ok(hub, LIST, {}, schema="Response_listScenarios")
    assert value == {"scenarios": [{
        "scenarioId": "practice", "title": "Practice call",
        "description": "Sam asks two questions.", "personaName": "Sam", "language": "English",
        "callDuration": 12}]}


async def test_meeting_from_scenario_starts_at_once_with_its_agent(hub: HubHandle) -> None:
    value = await create(hub)
    # the room link opens the hub's page straight into the room with the person's token
    link = urlsplit(value["roomUrl"])
    assert f"{link.scheme}://{link.netloc}" == hub.base_url and link.path == "/"
    assert parse_qs(link.query) == {"room": [value["roomId"]]}
    assert parse_qs(link.fragment) == {"token": [value["roomToken"]]}
    assert value["role"] == "host"  # a regular meeting is the caller's own
    assert value["agent"] == {"scenarioId": "practice", "name": "Sam", "voiceId": "",
                              "voiceProvider": "azure", "language": "English",
                              "welcomeMessage": "Hello, I am Sam."}
    # started: no startMeeting needed, the person joins with the token as it came
    meeting = await ok(hub, GET, {"meetingId": value["meetingId"]},
                       schema="Response_meetings.queries.getMeeting")
    assert meeting["state"] == "active" and meeting["roomId"] == value["roomId"]
    assert meeting["title"] == "Practice call" and meeting["agent"] == value["agent"]
    person, joined = await join(value["wsUrl"], value["roomToken"])
    try:
        assert joined.room_id == value["roomId"] and joined.role == "host"
        features = joined.features
        assert features.agent is not None and features.agent.name == "Sam"
        assert features.agent.scenario_id == "practice"
        # the scenario document's controls: recorded, no chat, screen or participant video,
        # the scenario's call_duration as the time limit
        assert (features.recording, features.transcription, features.chat,
                features.screen_sharing, features.participant_video,
                features.participant_audio, features.waiting_room) == \
            (True, False, False, False, False, True, False)
        assert features.max_duration_minutes == 12 and joined.ends_at is not None
        assert features.max_participants == 4
        # the person's name is the one given, as the others see it
        token = hub.tokens.verify_join(value["roomToken"])
        assert token.name == "Ada Lovelace" and token.user_id == "host"
    finally:
        await person.aclose()


async def test_overrides_and_the_seeds_options(hub: HubHandle) -> None:
    value = await create(
        hub, voiceId="6MoEUz34rbRrmmyxgRm4", voiceProvider="elevenlabs", language="en-US",
        welcomeMessage="  Hi Ada, ready when you are.  ", chatEnabled=True,
        participantVideoEnabled=True, recordingEnabled=False, maxParticipants=2,
        maxDurationMinutes=5, deepThinkingEnabled=True, webSearchEnabled=False,
        liveVisionEnabled=True, gptVisionEnabled=False, useOwnApiKeys=True, endUserId="eu_7")
    # a regular meeting only stores endUserId: the person is still the caller, as host
    token = hub.tokens.verify_join(value["roomToken"])
    assert (token.user_id, token.role) == ("host", "host")
    assert value["agent"] == {"scenarioId": "practice", "name": "Sam",
                              "voiceId": "6MoEUz34rbRrmmyxgRm4", "voiceProvider": "elevenlabs",
                              "language": "en-US", "welcomeMessage": "Hi Ada, ready when you are."}
    person, joined = await join(value["wsUrl"], value["roomToken"])
    try:
        features = joined.features
        assert features.chat and features.participant_video and not features.recording
        assert features.max_duration_minutes == 5
        assert features.max_participants == 2  # the person and the agent
        assert features.agent is not None and features.agent.voice_provider == "elevenlabs"
    finally:
        await person.aclose()


async def test_end_user_meeting_seats_the_end_user_as_participant(hub: HubHandle) -> None:
    """A backend creates the meeting for one of its end users: the token is theirs, as a
    participant (the meeting's participant controls bind them); the caller stays the host."""
    value = await create(hub, user="backend", meetingType="end-user", endUserId="eu_42",
                         name="Grace")
    assert value["role"] == "participant"
    token = hub.tokens.verify_join(value["roomToken"])
    assert (token.user_id, token.role, token.name) == ("eu_42", "participant", "Grace")
    person, joined = await join(value["wsUrl"], value["roomToken"])
    try:
        assert joined.role == "participant"
        meeting = await ok(hub, GET, {"meetingId": value["meetingId"]}, user="backend")
        assert meeting["userRole"] == "host" and meeting["activeWebRTCSessions"] == 1
        await ok(hub, END, {"meetingId": value["meetingId"]}, user="backend")
        assert await person.expect_close() == 4410
    finally:
        await person.aclose()


@pytest.mark.parametrize(("args", "status", "code", "says"), [
    ({"scenarioId": "no-such-thing"}, 404, "scenario-not-found", "no-such-thing"),
    ({"scenarioId": "Practice"}, 400, "invalid-args", "scenarioId"),
    ({"voiceProvider": "google"}, 400, "invalid-args", "voiceProvider"),
    ({"voiceProvider": None}, 400, "invalid-args", "voiceProvider is null"),
    ({"name": "   "}, 400, "invalid-args", "name"),
    ({"name": "x" * 65}, 400, "invalid-args", "name"),
    ({"language": "<b>English</b>"}, 400, "invalid-args", "language"),
    ({"voiceId": "a b"}, 400, "invalid-args", "voiceId"),
    ({"welcomeMessage": ""}, 400, "invalid-args", "welcomeMessage"),
    ({"welcomeMessage": "x" * 1001}, 400, "invalid-args", "welcomeMessage"),
    ({"meetingType": "webinar"}, 400, "invalid-args", "meetingType"),
    ({"endUserId": "not an id"}, 400, "invalid-args", "endUserId"),
    ({"maxParticipants": 1}, 400, "invalid-args", "maxParticipants"),  # no seat for the agent
    ({"maxParticipants": 5}, 400, "invalid-args", "maxParticipants"),  # above the mesh
    ({"maxParticipants": 2.5}, 400, "invalid-args", "maxParticipants"),
    ({"maxDurationMinutes": 0}, 400, "invalid-args", "maxDurationMinutes"),
    ({"chatEnabled": "yes"}, 400, "invalid-args", "chatEnabled"),
    ({"deepThinkingEnabled": 1}, 400, "invalid-args", "deepThinkingEnabled"),
])
async def test_bad_arguments_are_refused_clearly(hub: HubHandle, args: dict[str, Any],
                                                 status: int, code: str, says: str) -> None:
    message = await refused(hub, {"scenarioId": "practice", "name": "Ada", **args}, status, code)
    assert says in message, message


async def test_missing_arguments_and_no_token(hub: HubHandle) -> None:
    for args in ({"name": "Ada"}, {"scenarioId": "practice"}):
        await refused(hub, args, 400, "invalid-args")
    for path in (FROM_SCENARIO, LIST):
        await refused(hub, {"scenarioId": "practice", "name": "Ada"}, 401, "unauthenticated",
                      user=None, path=path)


async def test_rooms_capacity_bounds_max_participants(tmp_path: Path) -> None:
    """The agent's meetings are hosted here: maxParticipants may not exceed the hub's rooms."""
    directory = scenario_dir(tmp_path / "scenarios", practice=PRACTICE)
    hub = await start_hub(test_settings(agent={"scenarios_dir": str(directory)},
                                        rooms={"capacity": 3}))
    try:
        await refused(hub, {"scenarioId": "practice", "name": "Ada", "maxParticipants": 4},
                      400, "invalid-args")
        value = await create(hub)
        person, joined = await join(value["wsUrl"], value["roomToken"])
        await person.aclose()
        assert joined.features.max_participants == 3
    finally:
        await hub.aclose()


async def test_meeting_from_scenario_on_redis(tmp_path: Path, redis: RedisServer) -> None:
    """Meetings live in Redis when the hub has it: the persona (and the stored AI flags) come
    back from it, on another worker too."""
    directory = scenario_dir(tmp_path / "scenarios", practice=PRACTICE)
    settings = test_settings(agent={"scenarios_dir": str(directory)},
                             redis={"url": redis.url})
    first, second = await start_hub(settings), await start_hub(settings)
    try:
        value = await create(first, welcomeMessage="Hi there.", deepThinkingEnabled=True)
        meeting = await ok(second, GET, {"meetingId": value["meetingId"]},
                           schema="Response_meetings.queries.getMeeting")
        assert meeting["state"] == "active" and meeting["agent"] == value["agent"]
        assert meeting["agent"]["welcomeMessage"] == "Hi there."
        person, joined = await join(second.ws_url, value["roomToken"])
        await person.aclose()
        assert joined.features.agent is not None and joined.features.agent.name == "Sam"
    finally:
        await first.aclose()
        await second.aclose()


BROKEN = {
    "not-yaml": ("title: [unclosed\n", "not-yaml.yaml"),
    "no-persona": ("title: A scenario\n", "persona"),
    "bad-provider": (PRACTICE.replace("voice_provider: azure", "voice_provider: google"),
                     "voice_provider"),
    "bad-id": ("id: Bad Id\n" + PRACTICE, "must match"),
    # checked by the script brain (media/agent/script.py) as the hub starts
    "bad-script": (PRACTICE.replace("next: bye", "next: nowhere"), "script: "),
}


def test_broken_scenario_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    for name, (text, says) in BROKEN.items():
        directory = scenario_dir(tmp_path / name, practice=PRACTICE, **{name: text})
        with pytest.raises(ConfigError) as caught:
            create_app(test_settings(agent={"scenarios_dir": str(directory)}))
        message = str(caught.value)
        assert f"{name}.yaml" in message and says in message, message
    with pytest.raises(ConfigError, match="is not a directory"):
        create_app(test_settings(agent={"scenarios_dir": str(tmp_path / "missing")}))


async def test_serve_refuses_to_start_with_a_broken_scenario(tmp_path: Path) -> None:
    """The hub does not start with a scenario it could not use: one line naming the file."""
    directory = scenario_dir(tmp_path / "scenarios", practice=PRACTICE,
                             broken="title: Broken\npersona: {}\n")
    code, _, err = await run_cli(
        "serve", "--port", str(free_port()), "--no-tap",
        env=clean_env(CONNVO_RTC_AGENT_SCENARIOS_DIR=str(directory)))
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("connvo-rtc: configuration error: agent.scenarios_dir: "), err
    assert str(directory / "broken.yaml") in lines[0] and "name" in lines[0], err
