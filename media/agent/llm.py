"""The LLM brain: a client of the OpenAI-compatible chat-completions API, streaming.

``POST {base_url}/chat/completions`` with ``"stream": true``; the answer is server-sent
events, one ``data: {json}`` per chunk (``choices[0].delta.content`` carries the text) and
``data: [DONE]`` at the end. Each delta is yielded as it arrives, so the agent cuts the first
sentence off (:func:`~media.agent.interfaces.sentences`) and speaks it while the model is
still writing the rest.

The system prompt is the scenario's ``persona.instructions``; the conversation so far goes as
``user`` (the person) and ``assistant`` (the agent) messages. A live conversation cannot wait
for retries, so there are none: an error (connection, HTTP status, a malformed stream, a
timeout) is logged with what went wrong and the reply ends with a spoken fallback line
instead of silence or a dead agent (:attr:`LlmBrain.last_error` keeps it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence

import aiohttp

from .interfaces import BrainEvent, Line

logger = logging.getLogger(__name__)

FALLBACK = "Sorry, I lost my train of thought. Could you say that again?"
#: Told to the model when the person has been quiet (as a system message).
SILENCE_NOTE = ("The person has not said anything for a while. Check in with them in one "
                "short sentence.")
#: Told to the model when a meeting has no welcome message to start with.
START_NOTE = "The meeting has just started. Greet the person in one or two short sentences."
USER_AGENT = "connvo-rtc-agent"
_MAX_ERROR_BODY = 4096
_MAX_LINE = 1 << 20  # one SSE line (a chunk); aiohttp's reader refuses longer ones


class LlmError(RuntimeError):
    """The chat-completions API failed; the message says how (status, body, ...)."""


class LlmBrain:
    """The :class:`~media.agent.interfaces.Brain` that asks an OpenAI-compatible API.

    ``timeout_s`` bounds the wait for the first text and ``read_timeout_s`` every later gap
    between chunks; ``max_reply_chars`` cuts a runaway reply short; ``max_history`` lines of
    the conversation go with each request (the most recent).
    """

    def __init__(self, *, base_url: str, model: str, api_key: str, instructions: str = "",
                 welcome_message: str = "", timeout_s: float = 10.0,
                 read_timeout_s: float = 5.0, connect_timeout_s: float = 3.0,
                 max_reply_chars: int = 1500, max_history: int = 40,
                 fallback: str = FALLBACK) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"LLM base URL {base_url!r} must be http(s)://")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.instructions = instructions
        self.welcome_message = welcome_message
        self.fallback = fallback
        self.max_reply_chars = max_reply_chars
        self.max_history = max_history
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s,
                                              sock_read=read_timeout_s)
        self._first_timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        #: The last request's failure ("" when it succeeded).
        self.last_error = ""

    @property
    def finished(self) -> bool:
        """Never: the model decides when to say goodbye, the meeting when it ends."""
        return False

    def expected(self) -> Sequence[str]:
        """Free conversation: nothing expected in particular."""
        return ()

    def messages(self, history: Sequence[Line], event: BrainEvent) -> list[dict[str, str]]:
        """The request's ``messages`` for ``event`` after ``history``."""
        out = [{"role": "system", "content": self.instructions}] if self.instructions else []
        lines = list(history)[-self.max_history:]
        for line in lines:
            if line.speaker == "agent":
                text = line.text + (" [interrupted by the person]" if line.interrupted else "")
                out.append({"role": "assistant", "content": text})
            else:
                out.append({"role": "user", "content": line.text})
        if event.kind == "turn":
            last = lines[-1] if lines else None
            if last is None or last.speaker != "person" or last.text != event.text:
                out.append({"role": "user", "content": event.text})
        elif event.kind == "silence":
            out.append({"role": "system", "content": SILENCE_NOTE})
        elif event.kind == "start":
            out.append({"role": "system", "content": START_NOTE})
        return out

    async def respond(self, history: Sequence[Line], event: BrainEvent) -> AsyncIterator[str]:
        """The model's reply as it streams; the fallback line after an error."""
        if event.kind == "interrupted" or self._closed:
            return
        if event.kind == "start":
            welcome = event.text or self.welcome_message
            if welcome:  # the meeting's own words, not the model's
                yield welcome
                return
        if event.kind == "turn" and not event.text.strip():
            return
        said = 0
        tail = ""  # the last text yielded, to end a sentence cut off by an error
        self.last_error = ""
        try:
            async for delta in self._stream(self.messages(history, event)):
                take = delta[: self.max_reply_chars - said]
                said += len(take)
                tail = (tail + take)[-8:]
                yield take
                if said >= self.max_reply_chars:
                    logger.warning("llm: reply cut at %d characters", said)
                    return
        except (LlmError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # ValueError: aiohttp's reader refusing an over-long line
            self.last_error = str(exc) or type(exc).__name__
            logger.warning("llm: %s %s: %s; speaking the fallback", self.url, self.model,
                           self.last_error)
            ended = tail.rstrip()[-1:] in (".", "!", "?", "…", "")
            yield ("" if not said else " " if ended else ". ") + self.fallback

    async def _stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout,
                                                  read_bufsize=_MAX_LINE)
        body = {"model": self.model, "messages": messages, "stream": True}
        headers = {"Authorization": f"Bearer {self._api_key}", "User-Agent": USER_AGENT,
                   "Accept": "text/event-stream"}
        async with self._session.post(self.url, json=body, headers=headers) as resp:
            if resp.status != 200:
                raise LlmError(f"HTTP {resp.status}: {await _error_text(resp)}")
            events = _sse(resp)
            first = True
            while True:
                try:
                    if first:  # the first text may take longer than later gaps
                        async with asyncio.timeout(self._first_timeout_s):
                            data = await anext(events)
                    else:
                        data = await anext(events)
                except StopAsyncIteration:
                    raise LlmError("the stream ended without data: [DONE]") from None
                if data == "[DONE]":
                    return
                delta = _delta(data)
                if delta:
                    first = False
                    yield delta

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _sse(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (several ``data:`` lines of one event joined
    with newlines; comments and other fields skipped)."""
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


def _delta(data: str) -> str:
    """The text of one chunk; :class:`LlmError` for anything but a chunk."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise LlmError(f"a chunk is not JSON: {data[:200]!r}") from None
    if not isinstance(chunk, dict):
        raise LlmError(f"a chunk is not an object: {data[:200]!r}")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise LlmError(f"the stream reported an error: {message}")
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise LlmError(f"a chunk has no choices: {data[:200]!r}")
    if not choices:
        return ""  # e.g. the usage chunk at the end
    choice = choices[0]
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        raise LlmError(f"a chunk's choice has no delta: {data[:200]!r}")
    content = delta.get("content")
    if content is None:
        return ""  # the role-only first chunk, tool calls, the finish chunk
    if not isinstance(content, str):
        raise LlmError(f"a delta's content is not text: {data[:200]!r}")
    return content


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    """An error response's message (OpenAI's ``{"error": {"message": ...}}`` or the body)."""
    body = (await resp.content.read(_MAX_ERROR_BODY)).decode("utf-8", errors="replace")
    try:
        error = json.loads(body)["error"]
        return str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return body.strip()[:300] or resp.reason or ""
