"""Worker faults: kill -9 (mid-batch, between return and XACK), SIGTERM, restarts under the
same name, a worker gone for good, competing reclaimers, slow and hanging handlers."""

from __future__ import annotations

import random
import time
from itertools import pairwise

import pytest

from .checker import consumer_pending, dlq_error_types, pending_ids, wait_for
from .conftest import Ledger, Servers
from .harness import (
    DLQ,
    GROUP,
    STREAM,
    PelMonitor,
    Workers,
    finish,
    group_info,
    id_tuple,
    payload,
    produce,
    settle,
    size,
)
from .ledger import read_executions

pytestmark = pytest.mark.chaos

VIS = 1.0  # visibility timeout of these tests
RECLAIM = 0.2  # STREAMFLOW_RECLAIM_INTERVAL (harness default)
MARGIN = 3.0  # scheduling slack on 2 loaded cores


def test_kill9_mid_batch_repeatedly(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """Three workers, one killed -9 mid-batch every ~0.6 s (and replaced): nothing is lost, the dead
    consumers' PELs are reclaimed within visibility + reclaim interval + margin, and duplicates stay
    within what the dead consumers held."""
    server = servers.start()
    main = servers.client(server)
    n = size(1500, 30_000)
    produced = produce(main, (payload(i, sleep=0.1) for i in range(n)))
    env = {"CHAOS_CONCURRENCY": "16"}
    workers.spawn_many(3, server.url, vis=VIS, env=env)
    mon = PelMonitor(server.url).start()
    rng = random.Random(7)
    window = 0
    kills = size(5, 40)
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.4, 0.8))
            alive = [w for w in workers.alive() if w.consumer()]
            pel = consumer_pending(main, STREAM, GROUP)
            victim = max(alive, key=lambda w: pel.get(w.consumer() or "", 0))
            name = victim.consumer()
            assert name is not None
            victim.kill9()
            mon.watch(name)
            window += consumer_pending(main, STREAM, GROUP).get(name, 0)
            workers.spawn(server.url, vis=VIS, env=env, ready=False)
        settle(main, produced, timeout=60 + n / 100, workers=workers)
        wait_for(lambda: len(mon.cleared) == kills, 10, "every dead PEL cleared")
    finally:
        mon.stop()
    worst = max(mon.cleared.values())
    result = finish("kill -9 worker mid-batch (repeated)", main, ledger.client, produced,
                    recovery_s=worst, in_flight_window=window,
                    notes={"kills": kills, "reclaim_s": sorted(round(v, 2) for v in mon.cleared.values())})
    result.assert_invariants()
    assert worst <= VIS + RECLAIM + MARGIN, result.summary()


def test_kill9_between_return_and_xack(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """With acks held back (ack_interval 2 s, readers blocked), a worker killed after its handlers
    returned but before the XACK left: exactly those entries run again (duplicates, counted), none is
    lost."""
    server = servers.start()
    main = servers.client(server)
    env = {"STREAMFLOW_ACK_INTERVAL": "2", "STREAMFLOW_BLOCK_MS": "5000", "CHAOS_CONCURRENCY": "16"}
    rounds, burst = 3, size(30, 300)
    produced: list[str] = []
    unacked_done = 0
    for r in range(rounds):
        w = workers.spawn(server.url, vis=VIS, env=env)
        ids = produce(main, (payload(r * burst + i) for i in range(burst)))
        produced += ids
        wanted = set(ids)

        def burst_done(wanted: set[str] = wanted) -> bool:
            done = {ex.id for ex in read_executions(ledger.client) if ex.end is not None}
            return wanted <= done

        wait_for(burst_done, 20, "the burst handled")
        name = w.consumer()
        assert name is not None
        w.kill9()
        held = set(pending_ids(main, STREAM, GROUP, name))
        ended_here = {ex.id for ex in read_executions(ledger.client)
                      if ex.pid == w.pid and ex.end is not None}
        unacked_done += len(held & ended_here)
    last = workers.spawn(server.url, vis=VIS, env=env)
    recovery = settle(main, produced, timeout=30, workers=workers)
    assert last.alive
    result = finish("kill -9 between handler return and XACK", main, ledger.client, produced,
                    recovery_s=recovery, in_flight_window=unacked_done,
                    notes={"handled_not_acked_at_kill": unacked_done})
    result.assert_invariants()
    assert unacked_done > 0, "the kills should land between return and XACK"
    assert result.duplicated == unacked_done, result.summary()


def test_sigterm_with_work_in_flight(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """SIGTERM while handlers run: the worker exits 0 within grace + 1.5 s, nothing is acked without
    its handler having completed, handlers longer than the grace period stay pending and a restart
    finishes them; no loss, no duplicates."""
    server = servers.start()
    main = servers.client(server)
    grace = 2.0
    items = [payload(i, sleep=0.3) for i in range(size(120, 2000))]
    items += [payload(10_000 + i, sleep=30) for i in range(4)]  # longer than the grace period
    random.Random(3).shuffle(items)
    produced = produce(main, items)
    w = workers.spawn(server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "16",
                                                "STREAMFLOW_GRACE_PERIOD": str(grace)})
    wait_for(lambda: len([e for e in read_executions(ledger.client) if e.end]) >= 20, 20,
             "some handlers done")
    t0 = time.monotonic()
    w.term()
    rc = w.wait(grace + 10)
    took = time.monotonic() - t0
    assert rc == 0, w.log_text()[-3000:]
    assert took <= grace + 1.5, f"exit took {took:.2f}s (grace {grace}s)"

    info = group_info(main)
    assert info is not None
    delivered = {i for i in produced if id_tuple(i) <= id_tuple(info["last-delivered-id"])}
    pending = set(pending_ids(main, STREAM, GROUP))
    done = {e.id for e in read_executions(ledger.client) if e.end is not None}
    acked = delivered - pending
    assert acked <= done, f"acked without completing: {sorted(acked - done)[:10]}"
    long_ids = {i for i, item in zip(produced, items, strict=True) if b'"sleep": 30' in item}
    assert long_ids & delivered <= pending, "a handler cut by the grace period must stay pending"

    workers.spawn(server.url, vis=VIS, name=None, env={"CHAOS_SLEEP_CAP": "0.05",
                                                       "CHAOS_CONCURRENCY": "32"})
    recovery = settle(main, produced, timeout=30, workers=workers)
    result = finish("SIGTERM with work in flight", main, ledger.client, produced,
                    recovery_s=recovery, in_flight_window=0,
                    notes={"exit_s": round(took, 2), "grace_s": grace,
                           "pending_at_exit": len(pending)})
    result.assert_invariants()


def test_restart_same_name_drains_own_pel_first(servers: Servers, workers: Workers,
                                                ledger: Ledger) -> None:
    """A worker killed -9 and restarted under the same --consumer-name takes back its own pending
    entries first (long before the 30 s visibility timeout) and runs them before new ones."""
    server = servers.start()
    main = servers.client(server)
    vis = 30.0
    produced = produce(main, (payload(i, sleep=0.4) for i in range(size(60, 150))))
    env = {"CHAOS_CONCURRENCY": "8"}
    w = workers.spawn(server.url, vis=vis, name="fixed-1", env=env)
    wait_for(lambda: len([e for e in read_executions(ledger.client) if e.end]) >= 8, 20,
             "the first handlers done")
    w.kill9()
    orphans = set(pending_ids(main, STREAM, GROUP, "fixed-1"))
    assert orphans
    started_before = {e.id for e in read_executions(ledger.client)}
    t0 = time.monotonic()
    w2 = workers.spawn(server.url, vis=vis, name="fixed-1", env=env)
    recovery = settle(main, produced, timeout=25, workers=workers)
    assert time.monotonic() - t0 < vis, "the own PEL must be drained long before the visibility timeout"
    runs = [e for e in read_executions(ledger.client) if e.pid == w2.pid and e.start is not None]
    first_start: dict[str, float] = {}
    for e in runs:
        first_start[e.id] = min(first_start.get(e.id, e.start or 0), e.start or 0)
    assert orphans <= set(first_start), "every orphan runs again in the restarted worker"
    new_ids = set(produced) - started_before
    if new_ids:
        assert max(first_start[i] for i in orphans) <= min(first_start[i] for i in new_ids)
    result = finish("restart under the same consumer name", main, ledger.client, produced,
                    recovery_s=recovery, in_flight_window=len(orphans),
                    notes={"orphans": len(orphans), "visibility_timeout_s": vis})
    result.assert_invariants()
    assert len(w2.events("own_pending_found")) >= 1


def test_worker_gone_for_good(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """A worker killed for good: another reclaims its entries, and its consumer is deleted only once
    its PEL is empty (STREAMFLOW_DEAD_CONSUMER_AFTER=2)."""
    server = servers.start()
    main = servers.client(server)
    produced = produce(main, (payload(i, sleep=0.3) for i in range(size(80, 800))))
    env = {"CHAOS_CONCURRENCY": "8", "STREAMFLOW_DEAD_CONSUMER_AFTER": "2"}
    a, b = workers.spawn_many(2, server.url, vis=VIS, env=env)
    wait_for(lambda: len([e for e in read_executions(ledger.client) if e.end]) >= 10, 20,
             "the first handlers done")
    name = a.consumer()
    assert name is not None
    mon = PelMonitor(server.url).start()
    try:
        a.kill9()
        mon.watch(name)
        held = consumer_pending(main, STREAM, GROUP).get(name, 0)
        settle(main, produced, timeout=40, workers=workers)
        wait_for(lambda: name in mon.gone, 15, "the dead consumer to be deleted")
    finally:
        mon.stop()
    samples = [c for _, c in mon.samples[name] if c is not None]
    assert samples and samples[-1] == 0, f"deleted while holding entries: {mon.samples[name][-5:]}"
    assert all(x >= y for x, y in pairwise(samples)), "its PEL only shrinks"
    assert mon.gone[name] >= mon.cleared[name]
    assert b.alive and b.consumer() in consumer_pending(main, STREAM, GROUP)
    result = finish("worker gone for good", main, ledger.client, produced,
                    recovery_s=mon.cleared[name], in_flight_window=held,
                    notes={"held": held, "consumer_deleted_after_s": round(mon.gone[name], 2)})
    result.assert_invariants()
    assert mon.cleared[name] <= VIS + RECLAIM + MARGIN


def _ghost_pel(main: object, n: int) -> list[str]:
    """Produce ``n`` entries and leave them all pending under a consumer that never comes back."""
    produced = produce(main, (payload(i, sleep=0.02) for i in range(n)))  # type: ignore[arg-type]
    main.execute_command("XGROUP", "CREATE", STREAM, GROUP, "0", "MKSTREAM")  # type: ignore[attr-defined]
    main.execute_command("XREADGROUP", "GROUP", GROUP, "ghost", "COUNT", n,  # type: ignore[attr-defined]
                         "STREAMS", STREAM, ">")
    return produced


def test_five_competing_reclaimers(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """Five workers reclaiming the same dead consumer's PEL at once: every entry is claimed and run
    exactly once (no duplicate, no overlapping executions, attempt 2 everywhere)."""
    server = servers.start()
    main = servers.client(server)
    n = size(600, 10_000)
    produced = _ghost_pel(main, n)
    t0 = time.monotonic()
    workers.spawn_many(5, server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "16"})
    settle(main, produced, timeout=60, workers=workers)
    recovery = time.monotonic() - t0
    result = finish("5 competing reclaimers", main, ledger.client, produced, recovery_s=recovery,
                    in_flight_window=0,
                    notes={"claims_logged": sum(int(e.get("entries", 0))
                                                for e in workers.events("reclaimed"))})
    result.assert_invariants()
    runs = read_executions(ledger.client)
    assert len(runs) == n, f"{len(runs)} executions for {n} entries"
    assert {e.attempt for e in runs} == {2}


def test_reclaimer_killed_mid_reclaim(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """One of three reclaimers killed -9 while it reclaims a dead consumer's PEL: the others take
    over what it claimed (no lock is held), nothing is lost."""
    server = servers.start()
    main = servers.client(server)
    n = size(600, 10_000)
    produced = _ghost_pel(main, n)
    ws = workers.spawn_many(3, server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "16"})
    wait_for(lambda: len(read_executions(ledger.client)) >= 50, 20, "reclaiming under way")
    victim = ws[0]
    name = victim.consumer()
    assert name is not None
    mon = PelMonitor(server.url).start()
    try:
        victim.kill9()
        mon.watch(name)
        held = consumer_pending(main, STREAM, GROUP).get(name, 0)
        settle(main, produced, timeout=60, workers=workers)
        wait_for(lambda: name in mon.cleared, 10, "the victim's PEL reclaimed")
    finally:
        mon.stop()
    result = finish("reclaimer killed mid-reclaim", main, ledger.client, produced,
                    recovery_s=mon.cleared[name], in_flight_window=held, notes={"held": held})
    result.assert_invariants()
    # The survivors reclaim the victim's entries in id order, after the older ghost entries: at
    # worst once they got through the whole backlog (2 workers x 14 slots, 20 ms each: of each
    # worker's 16 slots, its two read loops blocked on the idle stream hold one each).
    assert mon.cleared[name] <= VIS + RECLAIM + MARGIN + n * 0.02 / 28, result.summary()


def test_slow_handler_keeps_its_lease(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """Handlers running 3.5x the visibility timeout while another worker reclaims every 0.2 s: the
    leases are renewed, each entry runs exactly once."""
    server = servers.start()
    main = servers.client(server)
    workers.spawn_many(2, server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "8"})
    produced = produce(main, (payload(i, sleep=3.5 * VIS) for i in range(size(8, 40))))
    settle(main, produced, timeout=40, workers=workers)
    result = finish("handler slower than the visibility timeout", main, ledger.client, produced,
                    in_flight_window=0,
                    notes={"lease_lost": len(workers.events("lease_lost"))})
    result.assert_invariants()
    runs = read_executions(ledger.client)
    assert len(runs) == len(produced) and {e.attempt for e in runs} == {1}
    assert not workers.events("lease_lost")


def test_hanging_handler_times_out_to_dlq(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """Handlers that never return are cancelled by the handler timeout, retried, then
    dead-lettered (HandlerTimeout); the other entries are unaffected."""
    server = servers.start()
    main = servers.client(server)
    env = {"CHAOS_TIMEOUT": "1", "CHAOS_MAX_ATTEMPTS": "3", "CHAOS_BACKOFF": "0.2"}
    workers.spawn_many(2, server.url, vis=2.0, env=env)
    items = [payload(i, sleep=0.01) for i in range(size(100, 2000))]
    hang = [payload(100_000 + i, hang=True) for i in range(5)]
    produced = produce(main, items + hang)
    hang_ids = set(produced[len(items):])
    settle(main, produced, timeout=40, workers=workers)
    result = finish("hanging handler", main, ledger.client, produced)
    result.assert_invariants()
    assert result.dead_lettered == len(hang_ids)
    assert dlq_error_types(main, DLQ) == {"HandlerTimeout": len(hang_ids)}
    runs = [e for e in read_executions(ledger.client) if e.id in hang_ids]
    assert sorted(e.attempt for e in runs) == sorted([1, 2, 3] * len(hang_ids))
