"""Shared fixtures: a real hub on a free loopback port per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from signaling.testing.hub import HubHandle, start_hub
from signaling.testing.redis_server import (
    RedisCluster,
    RedisServer,
    flush,
    redis_cluster,
    redis_server,
)
from tests.support.deps import missing


def require_binary(path: str) -> None:
    """Skip (locally) or fail (under CI=true) when a system dependency is missing."""
    import shutil

    if shutil.which(path) is None:
        missing(f"{path} is not installed (make test installs it)")


@pytest.fixture
async def hub() -> AsyncIterator[HubHandle]:
    handle = await start_hub()
    try:
        yield handle
    finally:
        await handle.aclose()


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One real redis-server for the whole run (tests flush it with ``redis``)."""
    require_binary("redis-server")
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def cluster_session() -> Iterator[RedisCluster]:
    """One real 3-master Redis Cluster for the whole run."""
    require_binary("redis-server")
    with redis_cluster() as cluster:
        yield cluster


@pytest.fixture
def redis(redis_session: RedisServer) -> RedisServer:
    flush(redis_session)
    return redis_session


@pytest.fixture
def cluster(cluster_session: RedisCluster) -> RedisCluster:
    flush(cluster_session)
    return cluster_session
