"""Who sends what: a peer's media flags (the ``media`` message) and the rules on what each peer
may send, checked on ``media`` messages and on every relayed offer and answer.

Two rules: a receive-only role (observer, tap) sends nothing; a participant sends only the kinds
the room's controls allow (``participantAudioEnabled``, ``participantVideoEnabled``,
``screenSharingEnabled``). Hosts are exempt from the controls. An offer or answer that sends a
kind it may not is refused with an ``error`` frame and not relayed.

The screen is recognised by position, as every client of this hub sends it (``connvo.js``,
``media/``): media lines are audio (microphone), video (camera), then a second video line for
the screen. With screen sharing off a participant may send on one video line at most.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import protocol as p
from .codes import ErrorCode
from .errors import FeatureDisabled, Forbidden, NotFound
from .store import Store

if TYPE_CHECKING:
    from .client_socket import ClientSocket
    from .routing import Router

#: Roles that only receive media.
RECEIVE_ONLY_ROLES = ("observer", "tap")
_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_SENDING = frozenset({"sendrecv", "sendonly"})


def sending_kinds(sdp: str) -> set[str]:
    """The media kinds (``audio``, ``video``) that an SDP offer or answer sends: every m-line's
    effective direction, i.e. its own direction attribute, else the session-level one, else
    ``sendrecv`` (RFC 4566 6), compared case-insensitively as browsers accept it. A rejected
    m-line (port 0) sends nothing."""
    return set(sending_lines(sdp))


def sending_lines(sdp: str) -> list[str]:
    """The kind of every m-line that sends (see :func:`sending_kinds`), in SDP order: two
    sending video lines are ``["video", "video"]``."""
    session_direction = "sendrecv"
    kinds: list[str] = []
    kind = ""  # the current m-line's kind ("" before the first m-line)
    direction = ""
    port_zero = False

    def close_section() -> None:
        if kind in ("audio", "video") and not port_zero \
                and (direction or session_direction) in _SENDING:
            kinds.append(kind)

    for raw in sdp.splitlines():
        line = raw.strip().lower()
        if line.startswith("m="):
            close_section()
            fields = line[2:].split()
            kind = fields[0] if fields else "?"
            port_zero = len(fields) > 1 and fields[1] == "0"
            direction = ""
        elif line.startswith("a=") and line[2:] in _DIRECTIONS:
            if kind:
                direction = line[2:]
            else:
                session_direction = line[2:]
    close_section()
    return kinds


def restricted(role: str, features: p.Features) -> bool:
    """Whether offers and answers of a ``role`` peer in a room with ``features`` must be
    checked (a participant's in a room without controls cost no SDP scan)."""
    if role in RECEIVE_ONLY_ROLES:
        return True
    return role == "participant" and not (
        features.participant_audio and features.participant_video and features.screen_sharing)


def check_sdp(role: str, sdp: str, features: p.Features | None = None) -> None:
    """Refuse an offer or answer that sends media from a receive-only role, or that sends a
    kind the room's controls do not allow a participant (``feature-disabled``)."""
    lines = sending_lines(sdp)
    if role in RECEIVE_ONLY_ROLES:
        if lines:
            raise Forbidden(f"a {role} may only receive media (use recvonly)")
        return
    if role != "participant" or features is None:
        return
    if not features.participant_audio and "audio" in lines:
        raise FeatureDisabled("participants may not send audio in this meeting (use recvonly "
                              "or inactive for audio)")
    videos = lines.count("video")
    if not features.participant_video and videos:
        raise FeatureDisabled("participants may not send video in this meeting (use recvonly "
                              "or inactive for video)")
    if not features.screen_sharing and videos > 1:
        raise FeatureDisabled("screen sharing is off in this meeting: send one video line at "
                              "most")


def check_flags(role: str, features: p.Features, msg: p.Media) -> None:
    """Refuse ``media`` flags a peer may not set: any from a receive-only role; from a
    participant, a kind the room's controls turn off (screen sharing off: for everyone but
    hosts)."""
    if role in RECEIVE_ONLY_ROLES and (msg.audio or msg.video or msg.screen):
        raise Forbidden(f"a {role} may not send media")
    if role in ("host", "agent"):  # the agent (the hub's own) is exempt from the controls
        return
    if msg.screen and not features.screen_sharing:
        raise FeatureDisabled("screen sharing is off in this room")
    if msg.audio and not features.participant_audio:
        raise FeatureDisabled("participants may not send audio in this meeting")
    if msg.video and not features.participant_video:
        raise FeatureDisabled("participants may not send video in this meeting")


class MediaFlags:
    """The ``media`` message: a peer says what it sends; the room is told (``peer-updated``)."""

    def __init__(self, *, store: Store, router: Router) -> None:
        self.store = store
        self.router = router

    async def update(self, conn: ClientSocket, msg: p.Media) -> None:
        check_flags(conn.role, conn.features, msg)
        media = p.MediaState(audio=msg.audio, video=msg.video, screen=msg.screen)
        seat = await self.store.update_media(conn.room_id, conn.peer_id, media)
        if seat is None:
            raise NotFound("your seat is gone", code=ErrorCode.NOT_JOINED)
        self.router.update_seat(seat)
        await self.router.broadcast(conn.room_id, p.PeerUpdated(peer=seat.info()),
                                    exclude=conn.peer_id)
        self.router.notify_roster(conn.room_id)
