"""The local HTTP servers the tests stand in for outside services with (webhook receiver,
chat-completions API, Azure text to speech): an aiohttp app on 127.0.0.1."""

from __future__ import annotations

from aiohttp import web


async def serve_on_loopback(app: web.Application, port: int, *,
                            reuse_address: bool = False) -> web.AppRunner:
    """Run ``app`` on ``127.0.0.1:port``; stop it with ``await runner.cleanup()``."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=reuse_address).start()
    return runner
