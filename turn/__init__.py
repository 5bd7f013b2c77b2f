"""ICE/TURN for connvo-rtc.

- :mod:`turn.credentials`: TURN REST credentials (coturn ``use-auth-secret``), secret rotation.
- :mod:`turn.ice`: :class:`~turn.ice.IceConfig` and :func:`~turn.ice.ice_servers_for`, the
  per-user ICE server list in the browser's ``RTCIceServer`` shape.
- :mod:`turn.coturn`: render a hardened ``turnserver`` config.
- :mod:`turn.supervisor`: run and supervise ``turnserver`` as a child process.
- :mod:`turn.probe`: check a TURN URL and credential with one real allocation.
- :mod:`turn.cli`: the ``connvo-rtc turn`` subcommand.
- :mod:`turn.errors`: this package's error tree.

Everything here takes plain arguments, never the hub's settings object.
"""
