"""When the room records video (``features.recordVideo``): the meeting records, allows
participant video, and the hub's ``recording.video`` is on. Participants and the server peer
read it from ``joined.features`` to decide whether video goes to the server peer."""

from __future__ import annotations

from typing import Any

import pytest

from signaling.testing.hub import start_hub, test_settings
from tests.support.wsclient import WsClient


@pytest.mark.parametrize("video_setting,meeting,expected", [
    (True, {"recordingEnabled": True}, True),
    (True, {"recordingEnabled": True, "participantVideoEnabled": False}, False),
    (True, {"recordingEnabled": False}, False),
    (False, {"recordingEnabled": True}, False),
])
async def test_record_video_follows_the_meeting_and_the_setting(
    video_setting: bool, meeting: dict[str, Any], expected: bool,
) -> None:
    hub = await start_hub(test_settings(recording={"video": video_setting}))
    try:
        _, room_id = await hub.create_room(host="alice", **meeting)
        client = await WsClient.connect(hub.ws_url)
        try:
            joined = await client.join(hub.mint_token(room_id, "alice", "host"))
            assert joined.features.record_video is expected
            assert joined.features.recording is meeting["recordingEnabled"]
        finally:
            await client.aclose()
    finally:
        await hub.aclose()
