"""Chat: a peer's ``chat`` message goes to everyone in the room, with its name and the time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import protocol as p
from .clock import now_ms
from .errors import BadRequest, FeatureDisabled, Forbidden

if TYPE_CHECKING:
    from .client_socket import ClientSocket
    from .routing import Router


class Chat:
    """Checks a chat message against the room's rules and broadcasts it."""

    def __init__(self, *, router: Router, max_chars: int) -> None:
        self.router = router
        self.max_chars = max_chars

    async def send(self, conn: ClientSocket, msg: p.Chat) -> None:
        if not conn.features.chat:
            raise FeatureDisabled("chat is off in this room")
        if len(msg.text) > self.max_chars:
            raise BadRequest(f"chat text over {self.max_chars} characters")
        if conn.role == "tap":
            raise Forbidden("the tap does not chat")
        await self.router.broadcast(conn.room_id, p.ChatFrom(
            from_=conn.peer_id, text=msg.text, ts=now_ms(), name=conn.name))
