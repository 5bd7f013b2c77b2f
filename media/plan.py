"""Who sends what to whom, by role (DESIGN "Websocket protocol", "Tap").

Hosts and participants send audio to everyone and video to everyone but taps and the agent;
observers and taps send nothing (the hub refuses their SDP if it would send); a tap receives
audio only. The agent (the AI persona) sends audio and receives audio only: no video line
either way. When the room records video (``joined.features.recordVideo``) the server peer
(the tap, or the agent) receives video too: it records it. Directions are from this client's
point of view.
"""

from __future__ import annotations

from dataclasses import dataclass

SENDING_ROLES = frozenset({"host", "participant", "agent"})
"""Roles that send media; observers and taps only receive."""
AUDIO_ONLY_ROLES = frozenset({"tap", "agent"})
"""Roles with no video line towards them or from them (the hub's server peers)."""


def direction(send: bool, recv: bool) -> str:
    """The SDP direction for sending and/or receiving."""
    return {(True, True): "sendrecv", (True, False): "sendonly",
            (False, True): "recvonly", (False, False): "inactive"}[(send, recv)]


@dataclass(frozen=True)
class MediaPlan:
    """Transceiver directions towards one remote peer (from this client's point of view)."""

    audio: str
    """Always negotiated; ``inactive`` when neither side sends audio."""
    video: str | None
    """``None``: no video line (a tap on either side, or nobody sends video)."""


def plan_media(
    local_role: str, remote_role: str, *, send_audio: bool = True, send_video: bool = True,
    tap_video: bool = False,
) -> MediaPlan:
    """Who sends what between two roles (see module docstring). ``send_audio``/``send_video``
    say whether this client has that kind of media at all: a line it can never send on is
    negotiated receive-only, because an aiortc sender without a track still polls every 20 ms
    (measured: about a quarter of a cheap bot's CPU for an idle video line). ``tap_video``: the
    room records video, so the server peer (tap or agent) receives video too."""
    local_sends = local_role in SENDING_ROLES
    remote_sends = remote_role in SENDING_ROLES
    video_send = local_sends and send_video \
        and (remote_role not in AUDIO_ONLY_ROLES or tap_video)
    video_recv = remote_sends and remote_role not in AUDIO_ONLY_ROLES \
        and (local_role not in AUDIO_ONLY_ROLES or tap_video)
    return MediaPlan(
        audio=direction(local_sends and send_audio, remote_sends),
        video=direction(video_send, video_recv) if video_send or video_recv else None,
    )


def sends(line: str | None) -> bool:
    """Whether a direction sends."""
    return line in ("sendrecv", "sendonly")


def receives(line: str | None) -> bool:
    """Whether a direction receives."""
    return line in ("sendrecv", "recvonly")
