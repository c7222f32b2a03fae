"""Network faults between workers and the server, through the test's TCP proxy: connection
resets, a lost XACK reply, a black hole, +200 ms latency, connections cut after N bytes.

Workers connect through the proxy; the producer and the checks talk to the server directly.
They run on the plain asyncio event loop (``STREAMFLOW_LOOP=asyncio``), except the uvloop
variant of the reset test (skipped when uvloop is not installed).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .checker import wait_for
from .conftest import Ledger, Servers
from .harness import BackgroundProducer, Workers, finish, settle, size
from .ledger import read_executions
from .proxy import ChaosProxy

pytestmark = pytest.mark.chaos

VIS = 1.0
RECLAIM = 0.2
MARGIN = 3.0
MAX_READ_BACKOFF = 5.0  # a failing read loop waits at most this long before trying again


def _setup(servers: Servers, workers: Workers, proxies: list[ChaosProxy], *, vis: float = VIS,
           n_workers: int = 2, env: dict[str, str] | None = None) -> tuple[Any, Any, ChaosProxy]:
    server = servers.start()
    main = servers.client(server)
    proxy = ChaosProxy(server.port).start()
    proxies.append(proxy)
    workers.spawn_many(n_workers, proxy.url, vis=vis,
                       env={"CHAOS_CONCURRENCY": "16", "STREAMFLOW_LOOP": "asyncio", **(env or {})})
    return server, main, proxy


@pytest.mark.parametrize("loop", [
    "asyncio",
    "uvloop",
])
def test_connection_resets(servers: Servers, workers: Workers, ledger: Ledger,
                           proxies: list[ChaosProxy], loop: str) -> None:
    """Every worker connection reset (RST) every 0.3 s, 10 times, under load: the workers reconnect,
    nothing is lost, the PEL empties within visibility + reclaim interval + margin of the last
    reset."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    server, main, proxy = _setup(servers, workers, proxies,
                                 env={"STREAMFLOW_LOOP": loop})
    total, rate = size(700, 20_000), size(200, 1000)
    prod = BackgroundProducer(server.url, total, rate, extra=lambda n: {"sleep": 0.02}).start()
    resets = 0
    for _ in range(10):
        time.sleep(0.3)
        resets += proxy.reset_all()
    t_last = time.monotonic()
    prod.join(60 + total / rate)
    produced = [i for i, _ in prod.ids]
    assert all(w.alive for w in workers.all), workers.logs()
    settle(main, produced, timeout=30, workers=workers)
    recovery = time.monotonic() - t_last
    result = finish(f"connection resets (10x, all connections, {loop})", main, ledger.client,
                    produced, recovery_s=recovery, in_flight_window=2 * 24 * 10,
                    notes={"connections_reset": resets,
                           "read_failed": len(workers.events("read_failed"))})
    result.assert_invariants(allow_overlap=True)
    assert resets > 0 and all(w.alive for w in workers.all)


def test_lost_xack_reply(servers: Servers, workers: Workers, ledger: Ledger,
                         proxies: list[ChaosProxy]) -> None:
    """Five writes carrying XACK reach the server but their replies (and the XREADGROUP replies sent
    with them) are lost to a reset: the acks are resent (idempotent), the entries of the lost read
    are reclaimed after the visibility timeout; no loss, duplicates counted."""
    server, main, proxy = _setup(servers, workers, proxies)
    total, rate = size(450, 15_000), size(150, 1000)
    prod = BackgroundProducer(server.url, total, rate, extra=lambda n: {"sleep": 0.01}).start()
    time.sleep(0.5)
    proxy.reset_on(b"XACK", times=5, after=0.05)
    wait_for(lambda: proxy.resets >= 5, 20, "five XACK replies lost")
    t_last = time.monotonic()
    prod.join(60 + total / rate)
    produced = [i for i, _ in prod.ids]
    settle(main, produced, timeout=30, workers=workers)
    recovery = time.monotonic() - t_last
    reclaimed = sum(int(e.get("entries", 0)) for e in workers.events("reclaimed"))
    result = finish("lost XACK reply (5x)", main, ledger.client, produced, recovery_s=recovery,
                    in_flight_window=5 * 24,
                    notes={"replies_lost": proxy.resets, "entries_reclaimed": reclaimed,
                           "xack_short": len(workers.events("xack_short"))})
    result.assert_invariants(allow_overlap=True)
    assert recovery <= VIS + RECLAIM + MARGIN + total / rate, result.summary()


def test_blackhole(servers: Servers, workers: Workers, ledger: Ledger,
                   proxies: list[ChaosProxy]) -> None:
    """The link to the server drops everything for a few seconds (30 s at full size): the workers
    detect it by their socket timeout (1 s), and after it heals everything is handled; the recovery
    time is recorded and bounded by visibility + reclaim interval + read backoff + margin."""
    server, main, proxy = _setup(servers, workers, proxies, env={"STREAMFLOW_SOCKET_TIMEOUT": "1"})
    hole = size(3, 30)
    total, rate = size(450, 3000), size(100, 60)
    prod = BackgroundProducer(server.url, total, rate, extra=lambda n: {"sleep": 0.01}).start()
    time.sleep(1.0)
    proxy.blackhole()
    time.sleep(hole)
    broken = proxy.heal()
    t_heal = time.monotonic()
    prod.join(60 + total / rate)
    produced = [i for i, _ in prod.ids]
    settle(main, produced, timeout=60, workers=workers)
    recovery = time.monotonic() - t_heal
    timeouts = [e for e in workers.events("read_failed") if "imeout" in str(e.get("error", ""))]
    result = finish(f"black hole {hole} s", main, ledger.client, produced, recovery_s=recovery,
                    notes={"blackhole_s": hole, "connections_reset_on_heal": broken,
                           "read_timeouts_logged": len(timeouts)})
    result.assert_invariants(allow_overlap=True)
    assert timeouts, "the black hole is detected by read timeouts"
    assert recovery <= VIS + RECLAIM + MAX_READ_BACKOFF + MARGIN + max(0.0, total / rate - hole - 1), \
        result.summary()


def test_latency_200ms_no_false_reclaims(servers: Servers, workers: Workers, ledger: Ledger,
                                         proxies: list[ChaosProxy]) -> None:
    """+100 ms each way (+200 ms per round trip) between workers and server with a 2 s visibility
    timeout: everything is handled exactly once and nothing is reclaimed (no false reclaims)."""
    server, main, proxy = _setup(servers, workers, proxies, vis=2.0)
    proxy.delay(100)
    total, rate = size(300, 10_000), size(100, 500)
    prod = BackgroundProducer(server.url, total, rate, extra=lambda n: {"sleep": 0.05}).start()
    prod.join(60 + total / rate)
    produced = [i for i, _ in prod.ids]
    settle(main, produced, timeout=30, workers=workers)
    reclaimed = sum(int(e.get("entries", 0)) for e in workers.events("reclaimed"))
    result = finish("+200 ms round-trip latency", main, ledger.client, produced, in_flight_window=0,
                    notes={"entries_reclaimed": reclaimed, "delay_ms_each_way": 100})
    result.assert_invariants()
    assert reclaimed == 0
    assert {e.attempt for e in read_executions(ledger.client)} == {1}


def test_connections_cut_after_n_bytes(servers: Servers, workers: Workers, ledger: Ledger,
                                       proxies: list[ChaosProxy]) -> None:
    """For two seconds every connection is cut after 4 KB (replies truncated mid-frame): the
    workers keep reconnecting without crashing and everything is handled afterwards."""
    server, main, proxy = _setup(servers, workers, proxies)
    total, rate = size(450, 15_000), size(150, 1000)
    prod = BackgroundProducer(server.url, total, rate, extra=lambda n: {"sleep": 0.01}).start()
    time.sleep(0.5)
    proxy.cut_after(4096)
    time.sleep(2.0)
    proxy.cut_after(None)
    t_end = time.monotonic()
    prod.join(60 + total / rate)
    produced = [i for i, _ in prod.ids]
    settle(main, produced, timeout=60, workers=workers)
    recovery = time.monotonic() - t_end
    result = finish("connections cut after 4 KB (2 s)", main, ledger.client, produced,
                    recovery_s=recovery,
                    notes={"connections_cut": proxy.resets, "connections": proxy.connections})
    result.assert_invariants(allow_overlap=True)
    assert proxy.resets > 0 and all(w.alive for w in workers.all), workers.logs()
