"""Who sends what: a peer's media flags (the ``media`` message) and the rule on what each role
may send, checked on ``media`` messages and on every relayed offer and answer."""

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
    session_direction = "sendrecv"
    kinds: set[str] = set()
    kind = ""  # the current m-line's kind ("" before the first m-line)
    direction = ""
    port_zero = False

    def close_section() -> None:
        if kind in ("audio", "video") and not port_zero \
                and (direction or session_direction) in _SENDING:
            kinds.add(kind)

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


def check_sdp(role: str, sdp: str) -> None:
    """Refuse an offer or answer that sends media from a receive-only role."""
    if role in RECEIVE_ONLY_ROLES and sending_kinds(sdp):
        raise Forbidden(f"a {role} may only receive media (use recvonly)")


class MediaFlags:
    """The ``media`` message: a peer says what it sends; the room is told (``peer-updated``)."""

    def __init__(self, *, store: Store, router: Router) -> None:
        self.store = store
        self.router = router

    async def update(self, conn: ClientSocket, msg: p.Media) -> None:
        if conn.role in RECEIVE_ONLY_ROLES and (msg.audio or msg.video or msg.screen):
            raise Forbidden(f"a {conn.role} may not send media")
        if msg.screen and not conn.features.screen_sharing:
            raise FeatureDisabled("screen sharing is off in this room")
        media = p.MediaState(audio=msg.audio, video=msg.video, screen=msg.screen)
        seat = await self.store.update_media(conn.room_id, conn.peer_id, media)
        if seat is None:
            raise NotFound("your seat is gone", code=ErrorCode.NOT_JOINED)
        self.router.update_seat(seat)
        await self.router.broadcast(conn.room_id, p.PeerUpdated(peer=seat.info()),
                                    exclude=conn.peer_id)
        self.router.notify_roster(conn.room_id)
