"""Signalling-only load for ``bench/signaling.py``: websocket clients that join and relay
messages, no media, and its measurement. (Media bots, headless aiortc peers, are
:mod:`media.bot_load`, the ``connvo-rtc loadtest`` command.)

``clients``: the generator processes (websocket clients, paced sends, latency);
``generator``: the orchestrator's handle on them; ``procfs``: CPU and RSS from the kernel;
``report``: the table, the targets and the profile summary.
"""
