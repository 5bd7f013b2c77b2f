"""Benchmarks: scripts that print side-by-side tables (not run in CI).

Run each as a module from the repository root, e.g. ``.venv/bin/python -m bench.signaling``
(as a file, ``bench/signaling.py`` would stand in for the ``signaling`` package). They start
real hubs, Redis and bots through :mod:`signaling.testing` and :mod:`media.testing`, never
through ``tests``.
"""
