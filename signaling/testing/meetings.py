"""Support code for tests and benchmarks: meetings and join tokens through a hub's URL.

The hub is one started with :data:`signaling.testing.hub.SECRET` (a
:class:`~signaling.testing.hub_process.HubProcess`, or a :func:`~signaling.testing.hub.start_hub`
hub with the default settings); users are minted locally with that secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from signaling.testing.hub import SECRET
from signaling.tokens import TokenService

_tokens = TokenService(secrets=(SECRET,))


async def api(base_url: str, path: str, args: dict[str, Any], user: str = "host",
              session: aiohttp.ClientSession | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``{"args": args}`` to ``/api/run/meetings/<path>`` on a hub process as ``user``."""
    headers = {"Authorization": "Bearer " + _tokens.mint_user(user, f"{user}@example.com", user)}
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.post(f"{base_url}/api/run/meetings/{path}", json={"args": args},
                                headers=headers) as resp:
            return resp.status, await resp.json()
    finally:
        if own:
            await session.close()


async def start_meeting(base_url: str, invite: Sequence[str] = (), host: str = "host",
                        session: aiohttp.ClientSession | None = None) -> tuple[str, str]:
    """Create and start a meeting on a hub process; ``(meeting_id, room_id)``."""
    status, body = await api(base_url, "lifecycle/createMeeting", {
        "title": "multi-worker", "participantEmails": [f"{u}@example.com" for u in invite]},
        host, session)
    assert status == 200, body
    meeting_id = body["value"]["meetingId"]
    status, body = await api(base_url, "lifecycle/startMeeting", {"meetingId": meeting_id}, host,
                             session)
    assert status == 200, body
    return meeting_id, body["value"]["roomInfo"]["roomId"]


def join_token(room_id: str, user: str, role: str = "participant") -> str:
    """A join token for ``user`` (also their display name) in ``room_id``, valid 10 minutes."""
    return _tokens.mint_join(room_id, user, role, name=user, ttl_s=600)[0]


async def start_agent_meeting(hub: Any, spec: Any, *, host: str = "host",
                              **controls: Any) -> tuple[str, str]:
    """Create a meeting whose room has ``spec`` (an :class:`~signaling.protocol.AgentSpec`) as
    its agent, as ``createMeetingFromScenario`` makes one, and start it: ``(meeting_id,
    room_id)``. ``hub`` is an in-process :class:`~signaling.testing.hub.HubHandle`: its store
    gets the room first (``startMeeting`` keeps a room that exists)."""
    import msgspec

    from signaling.app import HUB_KEY
    from signaling.clock import now_ms
    from signaling.meetings import room_id_for
    from signaling.protocol import Features
    from signaling.store import Room

    status, body = await hub.call("lifecycle/createMeeting", {
        "title": "agent meeting", "participantEmails": [], **controls}, user=host)
    assert status == 200, body
    meeting_id = body["value"]["meetingId"]
    store = hub.app[HUB_KEY].store
    meeting = await store.get_meeting(meeting_id)
    capacity = min(meeting.max_participants, hub.settings.rooms.capacity)
    features = msgspec.structs.replace(
        Features(max_participants=capacity), transcription=meeting.transcription,
        recording=meeting.recording, waiting_room=meeting.waiting_room,
        participant_audio=meeting.participant_audio,
        participant_video=meeting.participant_video, agent=spec)
    await store.attach_room(Room(room_id=room_id_for(meeting_id), meeting_id=meeting_id,
                                 capacity=capacity, features=features, created_at=now_ms()))
    status, body = await hub.call("lifecycle/startMeeting", {"meetingId": meeting_id},
                                  user=host)
    assert status == 200, body
    return meeting_id, body["value"]["roomInfo"]["roomId"]
