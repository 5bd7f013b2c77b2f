"""Meeting controls: what a meeting allows, as ``seeds/meeting-from-scenario.md`` lists them.

A meeting carries its controls from creation; its room copies them into its
:class:`~signaling.protocol.Features` (``initializeWebRTCRoom``'s and ``joined``'s ``features``)
and the hub enforces them: chat, screen sharing and participant audio/video
(:mod:`~signaling.media_state`), the waiting room (:mod:`~signaling.waiting`) and the
maximum duration (:mod:`~signaling.deadlines`).

Two sets of defaults exist. ``createMeeting`` without controls keeps the behaviour meetings
had before controls existed (:data:`CREATE_MEETING_DEFAULTS`); a meeting made from a scenario
(``createMeetingFromScenario``, the AI-persona issue) starts from the scenario document's
(:func:`scenario_controls`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MeetingControls:
    """What a meeting allows; the host is exempt from the participant media controls."""

    recording: bool = False
    """Record the meeting (``recordingEnabled``)."""
    transcription: bool = False
    """Live transcription by the hub's tap (``transcriptionEnabled``)."""
    chat: bool = True
    """The ``chat`` message (``chatEnabled``)."""
    screen_sharing: bool = True
    """Participants may share a screen (``screenSharingEnabled``)."""
    participant_video: bool = True
    """Participants may send camera video (``participantVideoEnabled``)."""
    participant_audio: bool = True
    """Participants may send microphone audio (``participantAudioEnabled``)."""
    waiting_room: bool = False
    """Participants wait until a host admits them (``waitingRoomEnabled``)."""
    auto_admit: bool = False
    """With a waiting room: admit everyone at once anyway (``autoAdmit``)."""
    max_duration_minutes: int | None = None
    """Minutes after the start at which the room ends (``maxDurationMinutes``; ``None``: no
    limit)."""


#: ``createMeeting`` with no controls given: what meetings did before they had controls.
CREATE_MEETING_DEFAULTS = MeetingControls()

#: The scenario document's minutes when the scenario names no ``call_duration``.
SCENARIO_DEFAULT_MINUTES = 30


def scenario_controls(call_duration_minutes: int | None = None,
                      **overrides: Any) -> MeetingControls:
    """The controls of a meeting created from a scenario, per the scenario document: recording
    on; transcription, chat, screen sharing and participant video off; participant audio on;
    no waiting room, no auto-admit; the scenario's ``call_duration`` or 30 minutes. Keyword
    ``overrides`` (field names of :class:`MeetingControls`) are the caller's own choices."""
    defaults = MeetingControls(
        recording=True, transcription=False, chat=False, screen_sharing=False,
        participant_video=False, participant_audio=True, waiting_room=False, auto_admit=False,
        max_duration_minutes=call_duration_minutes or SCENARIO_DEFAULT_MINUTES,
    )
    return dataclasses.replace(defaults, **overrides)
