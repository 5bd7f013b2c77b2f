"""Load generation and measurement for ``bench/signaling.py``.

``clients``: the generator processes (websocket clients, paced sends, latency);
``generator``: the orchestrator's handle on them; ``procfs``: CPU and RSS from the kernel;
``report``: the table, the targets and the profile summary.
"""
