"""A websocket echo endpoint built on the hub's own classes, for the Autobahn|Testsuite.

``make conformance`` points the suite's fuzzing client at it: the upgrade goes through
:class:`signaling.server.FrontProtocol` and :func:`signaling.rfc6455.parse_upgrade` as a hub
connection does, and the frames through :class:`signaling.rfc6455.WebSocketProtocol`, so the
suite tests the hub's framing, fragments, control frames and close handshake. Only the limits
differ: the suite's 9.x cases send 16 MiB messages and 4 MiB ones in 64-byte fragments.

Run it as ``python -m signaling.testing.echo --port N``; it listens on 127.0.0.1 only, at
``ws://127.0.0.1:N/ws``, until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from signaling.rfc6455 import WebSocketProtocol
from signaling.server import FrontProtocol

logger = logging.getLogger(__name__)

#: The largest message the suite sends (cases 9.1.6 and 9.2.6).
MAX_MESSAGE_BYTES = 16 << 20
#: More than the most frames the suite sends in one message (9.3.1 and 9.4.1: 4 MiB in 64-byte
#: fragments, then an empty last one: 65,537 frames).
MAX_FRAGMENTS = 1 << 17
#: Frames kept while the client does not read: the suite reads everything it is sent.
BACKLOG_FRAMES = 4096

_BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n")


class EchoSocket(WebSocketProtocol):
    """Sends every message back as it came: text as text, binary as binary."""

    def __init__(self) -> None:
        super().__init__(max_size=MAX_MESSAGE_BYTES, backlog_frames=BACKLOG_FRAMES,
                         max_fragments=MAX_FRAGMENTS)

    def on_text(self, data: bytes) -> None:
        self.send_text(data)

    def on_binary(self, data: bytes) -> None:
        self.send_binary(data)


class _BadRequest(asyncio.Protocol):
    """Anything but a websocket upgrade to ``/ws``: 400, then close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BAD_REQUEST)
        transport.close()


async def serve(port: int, stop: asyncio.Event) -> None:
    """Serve on 127.0.0.1:``port`` until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FrontProtocol(_BadRequest, EchoSocket),
                                      "127.0.0.1", port)
    logger.info("echo endpoint at ws://127.0.0.1:%d/ws", port)
    async with server:
        await stop.wait()


async def _main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(port, stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m signaling.testing.echo",
        description="A websocket echo endpoint on the hub's own websocket classes "
                    "(for the Autobahn|Testsuite, make conformance).")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
