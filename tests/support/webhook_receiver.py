"""A real webhook receiver for tests: an aiohttp server on 127.0.0.1 that verifies every request
with the ``standardwebhooks`` library (the one the backend would use) and records it.

``answer`` decides each response's status from the verified payload (200 by default); ``hold``
keeps requests waiting until it is set. :meth:`stop` and :meth:`start` again on the same port
are a receiver that is down for a while.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from signaling.testing.ports import free_port
from tests.support.loopback_http import serve_on_loopback


@dataclass
class Received:
    """One verified request: its ``webhook-id``, the payload, the status answered."""

    msg_id: str
    payload: dict[str, Any]
    status: int
    raw: bytes

    @property
    def type(self) -> str:
        return str(self.payload["type"])

    @property
    def meeting_id(self) -> str:
        return str(self.payload["data"]["meetingId"])


@dataclass
class Receiver:
    secret: str
    port: int = field(default_factory=free_port)
    answer: Callable[[dict[str, Any]], int] = lambda payload: 200
    hold: asyncio.Event | None = None
    received: list[Received] = field(default_factory=list)
    #: Requests whose signature did not verify (a test fails if any arrive).
    rejected: list[str] = field(default_factory=list)
    #: The ``webhook-id`` of every verified request, as it arrived (before any hold).
    arrivals: list[str] = field(default_factory=list)
    #: Requests that arrived and are being held.
    holding: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/rtc"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/rtc", self._handle)
        self._runner = await serve_on_loopback(app, self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.rejected.append(f"{exc}: {request.headers!r}")
            return web.Response(status=401)
        self.arrivals.append(request.headers["webhook-id"])
        if self.hold is not None and not self.hold.is_set():
            self.holding += 1
            await self.hold.wait()
        status = self.answer(payload)
        self.received.append(Received(request.headers["webhook-id"], payload, status, body))
        return web.Response(status=status)

    def accepted(self, meeting_id: str | None = None) -> list[Received]:
        """Requests answered 2xx, in arrival order (of one meeting if given)."""
        return [r for r in self.received if 200 <= r.status < 300
                and (meeting_id is None or r.meeting_id == meeting_id)]

    def types(self, meeting_id: str) -> list[str]:
        """The types of a meeting's accepted events, each id once (first acceptance)."""
        seen: dict[str, str] = {}
        for r in self.accepted(meeting_id):
            seen.setdefault(r.msg_id, r.type)
        return list(seen.values())

    def dump(self) -> str:
        return json.dumps([(r.msg_id, r.type, r.status) for r in self.received])
