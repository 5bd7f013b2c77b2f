"""The local S3-compatible server of :mod:`signaling.testing.s3_server` for tests: missing
moto[server] is a skip locally and a failure under ``CI=true``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from signaling.testing import s3_server as _server
from signaling.testing.s3_server import REGION, S3Server
from tests.support.deps import missing

__all__ = ["REGION", "S3Server", "s3_server"]


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto_server with SigV4 checking on, stopped on exit."""
    if not _server.available():
        missing("moto[server] is not installed (the test extra: pip install -e '.[test]')")
    with _server.s3_server() as server:
        yield server
