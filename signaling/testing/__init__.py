"""Support code for tests and benchmarks (like :mod:`aiohttp.test_utils`), not used by the hub.

Real things on loopback, started and stopped by their owner:

- :mod:`~signaling.testing.ports` -- free loopback ports;
- :mod:`~signaling.testing.hub` -- a hub in the caller's event loop (:func:`start_hub`,
  :func:`start_hub_on`) and its :class:`HubHandle` (URLs, tokens, meetings);
- :mod:`~signaling.testing.hub_process` -- hub worker processes (``connvo-rtc serve``);
- :mod:`~signaling.testing.meetings` -- meetings and join tokens through a hub's URL;
- :mod:`~signaling.testing.redis_server` -- ``redis-server`` processes: one server or a Cluster.

``tests/`` keeps what only tests use (pytest fixtures, the missing-dependency rule, browsers).
"""
