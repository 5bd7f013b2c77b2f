"""RFC 6455 conformance: the Autobahn|Testsuite against the hub's websocket classes
(``make conformance``; not part of ``make test``: the suite needs Python 2.7)."""
