"""The server side of RFC 6455 websockets, as an ``asyncio.Protocol``: no task, no queue and no
timer per connection.

aiohttp's websocket costs a reader task per socket, a wake-up per message, a writer call chain
per frame and ~20 KiB per idle socket. The hub's socket is simpler: text frames of at most
``max_frame_bytes``, no extensions, no subprotocols. :class:`WebSocketProtocol` parses frames
straight from ``data_received``, answers pings and the close handshake, writes frames straight to
the transport while it accepts them, and keeps at most ``backlog_frames`` frames while the
client is not reading (then it is cut off, :meth:`on_slow_consumer`). Liveness is one sweep
over every socket (:func:`sweep`), not one timer each.

A message may come in at most ``max_fragments`` frames (more: close 1009, the message is too
big to process); every frame that does not complete a message (a fragment, a ping, a pong)
is reported to :meth:`~WebSocketProtocol.on_extra_frame`, where the hub counts it against the
client's rate limit. Once the connection is failed (a framing error), nothing more the client
sends is read, not even its close frame (RFC 6455 7.1.7): our close frame goes out, then our
side of the TCP connection is shut. ``make conformance`` runs the Autobahn|Testsuite against
an echo endpoint built on this class (:mod:`signaling.testing.echo`).

The HTTP upgrade itself is answered by :mod:`signaling.server` (:func:`parse_upgrade`,
:func:`accept_response`), which hands the transport over to the protocol.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections import deque
from collections.abc import Iterable, Mapping

from .codes import Close

logger = logging.getLogger(__name__)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: Close codes a client may send (RFC 6455 7.4): 1000-1014 less the reserved ones, 3000-4999.
_VALID_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

try:  # aiohttp's compiled XOR (aiohttp is a dependency anyway); the pure version is 4x slower
    from aiohttp._websocket.helpers import websocket_mask as _mask_in_place

    def unmask(payload: bytes, mask: bytes) -> bytes:
        data = bytearray(payload)
        _mask_in_place(mask, data)
        return bytes(data)
except ImportError:  # pragma: no cover - only without aiohttp's helpers
    def unmask(payload: bytes, mask: bytes) -> bytes:
        n = len(payload)
        key = (mask * ((n + 3) // 4))[:n]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little")


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The client's IP address (``"?"`` when the transport has none, e.g. a unix socket)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked (server → client) frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def close_payload(code: int, reason: str = "") -> bytes:
    reason_bytes = reason.encode()[:123].decode("utf-8", "ignore").encode()  # whole characters
    return code.to_bytes(2, "big") + reason_bytes


# ---------------------------------------------------------------------------- the upgrade


class UpgradeRequest:
    """A parsed ``GET`` request head that asks for a websocket."""

    __slots__ = ("headers", "key", "path", "query")

    def __init__(self, path: str, query: str, key: str, headers: dict[str, str]) -> None:
        self.path = path
        self.query = query
        self.key = key
        self.headers = headers


def parse_upgrade(head: bytes) -> UpgradeRequest | None:
    """The request head (up to and without the blank line) if it is a valid websocket upgrade
    (RFC 6455 4.2.1), else ``None`` (then it is plain HTTP, or a bad upgrade, for the HTTP
    server to answer)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    ws_key = upgrade_key(headers)
    if ws_key is None:
        return None
    path, _, query = parts[1].partition("?")
    return UpgradeRequest(path, query, ws_key, headers)


def upgrade_key(headers: Mapping[str, str]) -> str | None:
    """``Sec-WebSocket-Key`` if ``headers`` (lower-case names, repeated ones joined with ", ")
    ask for an RFC 6455 version 13 websocket, else ``None``."""
    if "websocket" not in (v.strip().lower() for v in headers.get("upgrade", "").split(",")):
        return None
    if "upgrade" not in (v.strip().lower() for v in headers.get("connection", "").split(",")):
        return None
    if headers.get("sec-websocket-version") != "13":
        return None
    ws_key = headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(ws_key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return ws_key


def accept_response(key: str) -> bytes:
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode()


# ---------------------------------------------------------------------------- the protocol


class WebSocketProtocol(asyncio.Protocol):
    """One accepted websocket. Subclasses implement :meth:`on_text`, :meth:`on_binary` and
    :meth:`on_closed`; they send with :meth:`send_text` and end with :meth:`close`."""

    __slots__ = (
        "_backlog",
        "_buf",
        "_buffer_limit",
        "_close_sent",
        "_close_timer",
        "_idle",
        "_lost",
        "_parts",
        "_parts_op",
        "_parts_size",
        "_paused",
        "_ping_idle",
        "_reading",
        "_waiters",
        "backlog_frames",
        "client_close_code",
        "close_code",
        "max_fragments",
        "max_size",
        "remote",
        "transport",
    )

    def __init__(self, *, max_size: int, backlog_frames: int, max_fragments: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.remote = "?"
        self.max_size = max_size
        self.backlog_frames = backlog_frames
        #: Frames one message may come in (the first one included); more close with 1009.
        self.max_fragments = max_fragments
        #: The code of the close we sent (None until then).
        self.close_code: int | None = None
        #: The code of the client's close frame (1005 if it had none, 1002 or 1007 if it was
        #: invalid); None if it sent none.
        self.client_close_code: int | None = None
        #: False once nothing more is read: the connection failed, the client's close frame
        #: came, or the connection is gone.
        self._reading = True
        self._buf = b""
        self._parts: list[bytes] | None = None  # a fragmented message being collected
        self._parts_size = 0
        self._parts_op = 0
        self._paused = False
        self._backlog: deque[bytes] | None = None  # frames held while the transport is full
        self._close_sent = False
        self._lost = False
        self._idle = 0  # sweeps since the client last sent anything
        self._ping_idle = 0  # the _idle value when we pinged (0: no ping outstanding)
        self._close_timer: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[None]] | None = None
        #: Set (bytes) when the transport's flow-control callbacks go to another protocol:
        #: then a transport buffer over this is the sign of a client that does not read.
        self._buffer_limit = 0

    # --------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.remote = peer_address(transport)

    def data_received(self, data: bytes) -> None:
        self._idle = 0
        self._ping_idle = 0
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos, end = 0, len(data)
        while end - pos >= 2 and self._reading:
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length = int.from_bytes(data[head:head + 2], "big")
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                length = int.from_bytes(data[head:head + 8], "big")
                head += 8
            opcode = b0 & 0x0F
            if b0 & 0x70 or not b1 & 0x80:
                return self._fail(Close.PROTOCOL_ERROR, "reserved bits set or frame not masked")
            if opcode >= OP_CLOSE:
                if length > 125 or not b0 & 0x80:
                    return self._fail(Close.PROTOCOL_ERROR, "bad control frame")
            elif length + self._parts_size > self.max_size:
                return self._fail(Close.FRAME_TOO_LARGE, f"message over {self.max_size} bytes")
            if end - head < 4 + length:
                break
            payload = unmask(data[head + 4:head + 4 + length], data[head:head + 4])
            pos = head + 4 + length
            self._frame(b0 & 0x80, opcode, payload)
        if pos < end and self._reading:
            self._buf = data[pos:]

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        backlog = self._backlog
        transport = self.transport
        while backlog and not self._paused and transport is not None:
            transport.write(backlog.popleft())

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._reading = False
        self._backlog = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        self._waiters = None
        self.on_closed()

    # --------------------------------------------------------------- frames in

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        # A whole message in one frame (the hot path) goes straight to _message; every other
        # frame is reported to on_extra_frame, so that each frame is counted exactly once.
        if opcode == OP_TEXT or opcode == OP_BINARY:
            if self._parts is not None:
                return self._fail(Close.PROTOCOL_ERROR, "new message inside a fragmented one")
            if not fin:
                self._parts, self._parts_size, self._parts_op = [payload], len(payload), opcode
                self.on_extra_frame()
                return
            self._message(opcode, payload)
        elif opcode == OP_CONTINUATION:
            parts = self._parts
            if parts is None:
                return self._fail(Close.PROTOCOL_ERROR, "continuation without a message")
            if len(parts) >= self.max_fragments:
                # Zero-length continuations cost nothing to send and a list slot each to keep.
                return self._fail(Close.FRAME_TOO_LARGE,
                                  f"message in over {self.max_fragments} fragments")
            parts.append(payload)
            self._parts_size += len(payload)
            if fin:
                whole, op = b"".join(parts), self._parts_op
                self._parts, self._parts_size = None, 0
                self._message(op, whole)
            else:
                self.on_extra_frame()
        elif opcode == OP_PING:
            self.on_extra_frame()
            if not self._close_sent:  # nothing goes out after our close frame (RFC 6455 5.5.1)
                self._write(encode_frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            self.on_extra_frame()  # data_received already counted it as a sign of life
        elif opcode == OP_CLOSE:
            self._client_closed(payload)
        else:
            self._fail(Close.PROTOCOL_ERROR, f"unknown opcode {opcode}")

    def _message(self, opcode: int, payload: bytes) -> None:
        if self._close_sent:
            return  # closing: the client's frames after our close are not read
        if opcode == OP_BINARY:
            self.on_binary(payload)
            return
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail(Close.INVALID_DATA, "text frame is not UTF-8")
        self.on_text(payload)

    def _client_closed(self, payload: bytes) -> None:
        code: int = Close.NO_STATUS
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            if not (code in _VALID_CODES or 3000 <= code <= 4999):
                self.client_close_code = Close.PROTOCOL_ERROR
                return self._fail(Close.PROTOCOL_ERROR, f"close code {code} is not one to send")
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self.client_close_code = Close.INVALID_DATA
                return self._fail(Close.INVALID_DATA, "close reason is not UTF-8")
        elif payload:
            self.client_close_code = Close.PROTOCOL_ERROR
            return self._fail(Close.PROTOCOL_ERROR, "close frame with a 1-byte payload")
        self.client_close_code = code
        self._reading = False
        if not self._close_sent:  # echo it (RFC 6455 5.5.1), then we close the TCP side
            self.close_code = Close.NORMAL if code == Close.NO_STATUS else code
            self._close_sent = True
            self._write(encode_frame(OP_CLOSE, close_payload(self.close_code)))
        self._end()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): send our close frame, read nothing more, and
        shut our side of the TCP connection once the close frame is out. The client then
        closes its side; the close timer cuts one that does not."""
        logger.info("websocket from %s: %s (closing %d)", self.remote, reason, code)
        self._reading = False
        self._buf = b""
        self._parts, self._parts_size = None, 0
        self.on_protocol_error(code)
        self.close(code, reason)
        transport = self.transport
        if (transport is not None and not self._lost and not self._backlog
                and not transport.is_closing() and transport.can_write_eof()):
            # With a backlog the frames (our close last) are still to go: the timer ends it.
            transport.write_eof()

    # --------------------------------------------------------------- frames out

    def _write(self, frame: bytes) -> None:
        if self._lost:
            return
        if not self._paused and not self._backlog:
            transport = self.transport
            assert transport is not None
            if self._buffer_limit and transport.get_write_buffer_size() > self._buffer_limit:
                self.on_slow_consumer(self.backlog_frames)
                self.abort()
                return
            transport.write(frame)
            return
        if self._backlog is None:
            self._backlog = deque()
        if len(self._backlog) >= self.backlog_frames:
            self.on_slow_consumer(len(self._backlog))
            self.abort()
            return
        self._backlog.append(frame)

    def send_text(self, data: bytes) -> None:
        """Send one text frame (``data`` is UTF-8 already), unless we are closing."""
        if not self._close_sent:
            self._write(encode_frame(OP_TEXT, data))

    def send_binary(self, data: bytes) -> None:
        """Send one binary frame, unless we are closing."""
        if not self._close_sent:
            self._write(encode_frame(OP_BINARY, data))

    def close(self, code: int, reason: str = "", timeout: float = 2.0) -> None:
        """Send a close frame after everything already sent, then wait up to ``timeout`` for
        the client's close before cutting the connection."""
        if self._close_sent or self._lost:
            return
        self._close_sent = True
        self.close_code = code
        self._write(encode_frame(OP_CLOSE, close_payload(code, reason)))
        if not self._lost:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(timeout, self.abort)

    def abort(self) -> None:
        """Cut the TCP connection now (nothing more is sent)."""
        self._backlog = None
        if self.transport is not None and not self._lost:
            self.transport.abort()

    def _end(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.close()

    @property
    def closing(self) -> bool:
        return self._close_sent or self._lost

    async def wait_closed(self, timeout: float) -> None:
        """Until the connection is gone (at most ``timeout`` s)."""
        if self._lost:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        if timeout == float("inf"):
            await waiter
            return
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass

    def attach_behind(self, transport: asyncio.Transport) -> Feed:
        """Run on a transport whose protocol stays another one's (aiohttp's, for an upgrade on
        a kept-alive connection): that protocol passes the bytes in through the returned
        :class:`Feed`, and writes are bounded by the transport's buffer size instead of
        pause/resume callbacks."""
        self._buffer_limit = max(64 * 1024, self.backlog_frames * 1024)
        self.connection_made(transport)
        return Feed(self)

    # --------------------------------------------------------------- liveness

    def tick(self, heartbeat_sweeps: int) -> None:
        """One liveness sweep: ping after ``heartbeat_sweeps`` silent sweeps; cut the connection
        if the client is still silent half that many sweeps after the ping."""
        if self._lost or self._close_sent:
            return  # closing: the close timer ends the connection
        self._idle += 1
        if self._ping_idle == 0:
            if self._idle >= heartbeat_sweeps:
                self._ping_idle = self._idle
                self._write(encode_frame(OP_PING, b""))
        elif self._idle - self._ping_idle >= max(1, heartbeat_sweeps // 2):
            logger.info("websocket from %s: no pong, dropping it", self.remote)
            self.abort()

    # --------------------------------------------------------------- for subclasses

    def on_text(self, data: bytes) -> None:
        raise NotImplementedError

    def on_binary(self, data: bytes) -> None:
        raise NotImplementedError

    def on_extra_frame(self) -> None:
        """A frame that does not complete a message came in: a fragment before the last one,
        a ping or a pong (a message's last frame goes to :meth:`on_text` / :meth:`on_binary`,
        so each frame is seen once). Subclasses count it against their rate limit."""

    def on_protocol_error(self, code: int) -> None:
        """A framing error; the connection is being closed with ``code``."""

    def on_slow_consumer(self, frames: int) -> None:
        """The backlog is full: the connection is being cut."""

    def on_closed(self) -> None:
        """The TCP connection is gone (called once)."""


class Feed:
    """aiohttp's payload-parser interface (``feed_data``/``feed_eof``) in front of a
    :class:`WebSocketProtocol` (see :meth:`WebSocketProtocol.attach_behind`)."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: WebSocketProtocol) -> None:
        self.protocol = protocol

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.protocol.data_received(data)
        return False, b""

    def feed_eof(self) -> None:
        if not self.protocol._lost:
            self.protocol.connection_lost(None)


def sweep(connections: Iterable[WebSocketProtocol], heartbeat_sweeps: int) -> None:
    for conn in list(connections):
        conn.tick(heartbeat_sweeps)
