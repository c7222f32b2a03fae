"""Fixtures of the chaos suite: a ledger server, fault-able servers, workers, proxies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streamflow.embedded import ServerProcess, find_server_binary

from .harness import Workers, sync_client
from .proxy import ChaosProxy


class Ledger:
    """The ledger server of the test (never faulted): its URL and a sync client."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = sync_client(url, socket_timeout=60)


@pytest.fixture(scope="session")
def ledger_server() -> Iterator[ServerProcess]:
    """A private server for the ledgers of the whole chaos session."""
    with ServerProcess(find_server_binary("redis"), name="streamflow-chaos-ledger") as server:
        yield server


@pytest.fixture
def ledger(ledger_server: ServerProcess) -> Iterator[Ledger]:
    """The ledger, emptied for this test."""
    led = Ledger(ledger_server.url)
    led.client.flushall()
    yield led
    led.client.close()


class Servers:
    """Starts private servers for one test; stops them (by PID) when it ends."""

    def __init__(self) -> None:
        self.all: list[ServerProcess] = []
        self.clients: list[redis.Redis] = []

    def start(self, *args: str, persistent: bool = False) -> ServerProcess:
        server = ServerProcess(find_server_binary("redis"), args=args, persistent=persistent,
                               name="streamflow-chaos")
        self.all.append(server)
        return server.start()

    def client(self, server: ServerProcess | str, **kwargs: Any) -> redis.Redis:
        url = server if isinstance(server, str) else server.url
        c = sync_client(url, **kwargs)
        self.clients.append(c)
        return c

    def stop_all(self) -> None:
        for c in self.clients:
            c.close()
        for server in self.all:
            server.stop()


@pytest.fixture
def servers() -> Iterator[Servers]:
    """Factory of private servers (``servers.start("--maxmemory", "5mb")``)."""
    s = Servers()
    yield s
    s.stop_all()


@pytest.fixture
def workers(tmp_path: Path, ledger: Ledger) -> Iterator[Workers]:
    """Factory of worker subprocesses writing to this test's ledger."""
    w = Workers(tmp_path, ledger.url)
    yield w
    w.stop_all()


@pytest.fixture
def proxies() -> Iterator[list[ChaosProxy]]:
    """Proxies started by the test (``proxies.append(ChaosProxy(port).start())``), stopped after."""
    out: list[ChaosProxy] = []
    yield out
    for p in out:
        p.stop()
