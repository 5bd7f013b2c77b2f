"""A local OpenAI-compatible chat-completions server for tests: aiohttp on 127.0.0.1.

``POST /v1/chat/completions`` checks the ``Authorization: Bearer`` key (401 with OpenAI's
error body otherwise) and the request's shape (``model``, ``messages`` of ``role`` and
``content``, ``stream: true``; 400 otherwise), records it, and answers with the next queued
:class:`Reply`: server-sent events in OpenAI's chunk format (a role-only first chunk, one
chunk per text piece, a finish chunk, ``data: [DONE]``). A reply's pieces may include an
``asyncio.Event``: the stream waits for it there, which lets a test hold the end of a stream
until it has seen what it wants (no sleeps); :class:`Raw` pieces go out as they are (broken
JSON, an error event). ``Reply(status=...)`` answers an HTTP error instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from signaling.testing.ports import free_port
from tests.support.loopback_http import serve_on_loopback


@dataclass(frozen=True)
class Raw:
    """Bytes sent as they are, in place of a chunk."""

    data: bytes


@dataclass
class Reply:
    """One answer: text pieces streamed in order (an Event: wait for it; Raw: send as is),
    ``done`` sends ``data: [DONE]`` at the end, ``status`` != 200 answers an error instead
    with ``error`` as OpenAI's ``error.message``."""

    pieces: list[str | asyncio.Event | Raw] = field(default_factory=list)
    done: bool = True
    status: int = 200
    error: str = ""


@dataclass
class FakeOpenAI:
    api_key: str = "sk-test-key"
    port: int = field(default_factory=free_port)
    replies: deque[Reply] = field(default_factory=deque)
    #: Every accepted request's JSON body, in order.
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Streams that have sent their last byte (``[DONE]`` or the end of the pieces).
    finished: int = 0
    #: Chunks with text sent so far (all streams).
    sent: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = await serve_on_loopback(app, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _error(status: int, message: str, kind: str = "invalid_request_error",
               code: str | None = None) -> web.Response:
        return web.json_response({"error": {"message": message, "type": kind, "param": None,
                                             "code": code}}, status=status)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.")
        fault = _shape_fault(body)
        if fault:
            return self._error(400, fault)
        self.requests.append(body)
        reply = self.replies.popleft() if self.replies else Reply(["Hello."])
        if reply.status != 200:
            return self._error(reply.status, reply.error or "The server had an error.",
                               kind="server_error")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        ident, created = f"chatcmpl-{len(self.requests)}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = {"id": ident, "object": "chat.completion.chunk", "created": created,
                       "model": body["model"],
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        await resp.write(chunk({"role": "assistant", "content": ""}))
        for piece in reply.pieces:
            if isinstance(piece, asyncio.Event):
                await piece.wait()
            elif isinstance(piece, Raw):
                await resp.write(piece.data)
            else:
                await resp.write(chunk({"content": piece}))
                self.sent += 1
        if reply.done:
            await resp.write(chunk({}, "stop"))
            await resp.write(b"data: [DONE]\n\n")
        self.finished += 1
        await resp.write_eof()
        return resp


def _shape_fault(body: Any) -> str:
    """What is wrong with a chat-completions request body ("" when it is fine)."""
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
                "system", "user", "assistant") or not isinstance(message.get("content"), str):
            return f"Invalid value for 'messages[{i}]'."
    if body.get("stream") is not True:
        return "this server only streams (stream: true)"
    return ""
