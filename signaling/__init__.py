"""connvo-rtc signalling hub: HTTP API, websocket protocol, rooms, tokens and state stores."""

__version__ = "0.1.0"
