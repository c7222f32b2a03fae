"""Server faults: kill -9 and restart (appendfsync always / everysec), restart with an empty
dataset, CLIENT PAUSE and DEBUG SLEEP, OOM with noeviction, XTRIM/XDEL of pending entries,
XGROUP DESTROY and DEL of the stream under load, a big backlog (memory and idle load)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from .checker import (
    consumer_pending,
    cpu_fraction,
    dlq_error_types,
    idle_call_rate,
    pending_ids,
    rss_bytes,
    wait_for,
)
from .conftest import Ledger, Servers
from .harness import (
    DLQ,
    GROUP,
    STREAM,
    BackgroundProducer,
    Workers,
    finish,
    id_tuple,
    payload,
    produce,
    settle,
    size,
)
from .ledger import read_executions

pytestmark = pytest.mark.chaos

VIS = 1.0
RECLAIM = 0.2
MARGIN = 3.0
#: Commands per second one idle worker may cause (a read per block_ms, two XPENDING per reclaim
#: pass, maintenance): about 20 with the suite's settings; a busy loop is thousands.
IDLE_CALLS_PER_WORKER = 60.0
IDLE_CPU = 0.15  # share of one core an idle worker may use


def _kill_restart(servers: Servers, workers: Workers, ledger: Ledger, fsync: str) -> tuple[Any, Any]:
    server = servers.start("--appendfsync", fsync, persistent=True)
    main = servers.client(server)
    workers.spawn_many(2, server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "16"})
    total, rate = size(900, 30_000), size(300, 1000)
    prod = BackgroundProducer(server.url, total, rate,
                              extra=lambda n: {"sleep": 0.01}).start()
    wait_for(lambda: len(prod.ids) >= total * 2 // 3, 60, "two thirds produced")
    t_kill = time.monotonic()
    server.kill()
    time.sleep(1.0)
    server.restart()
    t_up = time.monotonic()
    prod.join(60 + total / rate)
    produced = [i for i, _ in prod.ids]
    settle(main, produced, timeout=60, workers=workers)
    recovery = time.monotonic() - t_up
    recent = sum(1 for _, t in prod.ids if t_kill - 2.0 <= t <= t_kill)
    assert all(w.alive for w in workers.all), workers.logs()
    result = finish(f"redis-server kill -9 + restart (appendfsync {fsync})", main, ledger.client,
                    produced, recovery_s=recovery,
                    notes={"downtime_s": 1.0, "acked_xadds_in_last_2s_before_kill": recent,
                           "producer_errors": sum(prod.errors.values())})
    return result, recent


def test_server_kill9_appendfsync_always(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """redis-server killed -9 under load and restarted from its AOF (appendfsync always): no id
    XADD returned is lost, the PEL empties, the workers reconnect by themselves."""
    result, _ = _kill_restart(servers, workers, ledger, "always")
    result.assert_invariants(allow_overlap=True)


def test_server_kill9_appendfsync_everysec(servers: Servers, workers: Workers,
                                           ledger: Ledger) -> None:
    """The same with appendfsync everysec: the loss (if any) is at most what was acknowledged in
    the last 2 s before the kill, and is reported; the PEL empties."""
    result, recent = _kill_restart(servers, workers, ledger, "everysec")
    assert result.pending_end == 0, result.summary()
    assert result.lost <= recent, result.summary()


def test_server_restart_with_empty_dataset(servers: Servers, workers: Workers,
                                           ledger: Ledger) -> None:
    """The server dies and comes back empty: while it is down the workers do not spin; afterwards
    they recreate the group (with a warning), keep their PIDs (no crash loop) and handle new
    entries; idle load stays low."""
    server = servers.start()
    main = servers.client(server)
    ws = workers.spawn_many(2, server.url, vis=VIS)
    first = produce(main, (payload(i) for i in range(size(200, 5000))))
    settle(main, first, timeout=30, workers=workers)
    server.kill()
    down_cpu = [cpu_fraction(w.pid, 1.5) for w in ws]
    server.restart()
    t_up = time.monotonic()
    main = servers.client(server)
    second = produce(main, (payload(10**6 + i) for i in range(size(200, 5000))))
    settle(main, second, timeout=30, workers=workers)
    recovery = time.monotonic() - t_up
    rate = idle_call_rate(main, 2.0)
    result = finish("restart with an empty dataset", main, ledger.client, first + second,
                    recovery_s=recovery,
                    notes={"cpu_while_server_down": [round(c, 3) for c in down_cpu],
                           "idle_calls_per_s": round(rate, 1)})
    result.assert_invariants()
    assert all(w.alive for w in ws) and workers.alive() == ws, "no worker crashed or restarted"
    assert workers.events("group_recreated"), "recreating the group is logged as a warning"
    assert max(down_cpu) <= IDLE_CPU, f"busy loop while the server is down: {down_cpu}"
    assert rate <= IDLE_CALLS_PER_WORKER * len(ws), f"busy loop after recovery: {rate:.0f} calls/s"


def _pause_and_sleep(servers: Servers, workers: Workers, ledger: Ledger, *, vis: float,
                     pause_ms: int, sleep_s: float, fault: str) -> Any:
    server = servers.start("--enable-debug-command", "local")
    main = servers.client(server)
    admin = servers.client(server, socket_timeout=30)
    workers.spawn_many(2, server.url, vis=vis, env={"CHAOS_CONCURRENCY": "16"})
    total, rate = size(600, 15_000), size(150, 1000)
    prod = BackgroundProducer(server.url, total, rate, extra=lambda n: {"sleep": 0.05}).start()
    wait_for(lambda: len(prod.ids) >= total // 4, 30, "a quarter produced")
    admin.execute_command("CLIENT", "PAUSE", pause_ms, "ALL")
    time.sleep(pause_ms / 1000 + 0.5)
    wait_for(lambda: len(prod.ids) >= total // 2, 30, "half produced")
    sleeper = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", sleep_s))
    sleeper.start()
    sleeper.join(sleep_s + 10)
    t_end = time.monotonic()
    prod.join(60 + total / rate)
    produced = [i for i, _ in prod.ids]
    settle(main, produced, timeout=60, workers=workers)
    reclaims = sum(int(e.get("entries", 0)) for e in workers.events("reclaimed"))
    return finish(fault, main, ledger.client, produced, recovery_s=time.monotonic() - t_end,
                  in_flight_window=2 * 24,
                  notes={"client_pause_ms": pause_ms, "debug_sleep_s": sleep_s,
                         "visibility_timeout_s": vis, "entries_reclaimed": reclaims,
                         "lease_lost": len(workers.events("lease_lost"))})


def test_client_pause_and_debug_sleep_shorter_than_visibility(servers: Servers, workers: Workers,
                                                              ledger: Ledger) -> None:
    """CLIENT PAUSE 1 s and DEBUG SLEEP 1 s with a 2.5 s visibility timeout: everything is handled,
    once, and nothing is reclaimed (no false reclaims)."""
    result = _pause_and_sleep(servers, workers, ledger, vis=2.5, pause_ms=1000, sleep_s=1.0,
                              fault="CLIENT PAUSE 1 s + DEBUG SLEEP 1 s (visibility 2.5 s)")
    result.assert_invariants()
    assert result.duplicated == 0 and result.notes["entries_reclaimed"] == 0, result.summary()


def test_debug_sleep_longer_than_visibility(servers: Servers, workers: Workers,
                                            ledger: Ledger) -> None:
    """A server stall (DEBUG SLEEP 2.5 s, CLIENT PAUSE 1.5 s) longer than the 1 s visibility timeout
    makes every in-flight entry look abandoned: nothing is lost, duplicates stay within the
    in-flight window and are counted."""
    result = _pause_and_sleep(servers, workers, ledger, vis=1.0, pause_ms=1500, sleep_s=2.5,
                              fault="CLIENT PAUSE 1.5 s + DEBUG SLEEP 2.5 s (visibility 1 s)")
    result.assert_invariants(allow_overlap=True)


def test_oom_noeviction(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """maxmemory + noeviction: producers get the OOM error, consumers keep reading and acking
    everything that was accepted; poison entries that cannot be dead-lettered while the server is
    out of memory stay pending (not lost) and reach the DLQ once memory is available."""
    server = servers.start("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    main = servers.client(server)
    workers.spawn_many(2, server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "16",
                                                    "CHAOS_MAX_ATTEMPTS": "1"})
    pad = "x" * 1000

    def extra(n: int) -> dict[str, Any]:
        return {"pad": pad, "fail": True} if n % 100 == 50 else {"pad": pad}

    prod = BackgroundProducer(server.url, 10**7, size(2000, 5000), extra=extra).start()
    try:
        wait_for(lambda: sum(v for k, v in prod.errors.items() if "OutOfMemory" in k) >= 20, 60,
                 "the producer to hit OOM")
        time.sleep(1.5)  # keep pushing against the limit while the workers drain
    finally:
        prod.stop()
    produced = [i for i, _ in prod.ids]
    oom_errors = sum(v for k, v in prod.errors.items() if "OutOfMemory" in k)
    poison = _poison_ids(main)

    def only_poison_left() -> bool:
        return set(pending_ids(main, STREAM, GROUP)) <= poison

    wait_for(only_poison_left, 30, "every accepted entry but the poison acked")
    stuck = len(pending_ids(main, STREAM, GROUP))
    rate = idle_call_rate(main, 2.0)
    main.config_set("maxmemory", "0")  # memory available again: the poison can be dead-lettered
    t0 = time.monotonic()
    settle(main, produced, timeout=30, workers=workers)
    result = finish("OOM (maxmemory + noeviction)", main, ledger.client, produced,
                    recovery_s=time.monotonic() - t0,
                    notes={"oom_errors_seen_by_producer": oom_errors,
                           "poison_pending_during_oom": stuck,
                           "calls_per_s_during_oom": round(rate, 1),
                           "dlq_error_types": dict(dlq_error_types(main, DLQ))})
    result.assert_invariants()
    assert oom_errors > 0
    assert rate <= IDLE_CALLS_PER_WORKER * 2 + 50, f"busy loop under OOM: {rate:.0f} calls/s"


def _poison_ids(main: redis.Redis) -> set[str]:
    out: set[str] = set()
    for rid, fields in main.xrange(STREAM, "-", "+"):
        if b'"fail": true' in fields.get(b"sf:json", b""):
            out.add(rid.decode())
    return out


def test_eviction_policy_warning(servers: Servers, workers: Workers) -> None:
    """A worker started against a server whose maxmemory-policy can evict keys (allkeys-lru) logs
    a warning naming the policy."""
    server = servers.start("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    w = workers.spawn(server.url, vis=VIS)
    time.sleep(0.5)
    warnings = [e for e in w.events() if e.get("level") in ("warning", "error")]
    assert any("allkeys-lru" in str(e) or "evict" in str(e).lower() for e in warnings), w.log_text()


def test_xtrim_xdel_pending_entries(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """Pending entries of a dead worker deleted by XDEL and XTRIM before they are reclaimed: the
    reclaiming worker counts them as trimmed, acks them and goes on (no crash, PEL empty)."""
    server = servers.start()
    main = servers.client(server)
    produced = produce(main, (payload(i, sleep=0.5) for i in range(size(40, 400))))
    a = workers.spawn(server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "8"})
    wait_for(lambda: len([e for e in read_executions(ledger.client) if e.end]) >= 8, 20,
             "the first handlers done")
    name = a.consumer()
    a.kill9()
    held = sorted(pending_ids(main, STREAM, GROUP, name), key=id_tuple)
    assert len(held) >= 4
    minid = held[len(held) // 2]
    main.xdel(STREAM, held[-1])
    main.xtrim(STREAM, minid=minid, approximate=False)
    remaining = {rid.decode() for rid, _ in main.xrange(STREAM, "-", "+")}
    removed = set(produced) - remaining
    deleted_pending = set(held) & removed
    # Enough free slots that the reader never waits for room (see the next test for what then
    # happens); the entries are quick for this worker.
    b = workers.spawn(server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "64", "CHAOS_SLEEP_CAP": "0.01"})
    recovery = settle(main, produced, timeout=30, workers=workers)
    trimmed = sum(int(e.get("count", 0)) for e in b.events("pending_entries_trimmed"))
    result = finish("XTRIM/XDEL of pending entries", main, ledger.client, produced,
                    removed=removed, recovery_s=recovery, in_flight_window=len(held),
                    notes={"deleted_pending": len(deleted_pending), "counted_trimmed": trimmed})
    result.assert_invariants()
    assert b.alive
    assert trimmed == len(deleted_pending), result.summary()


def test_reader_not_stalled_by_reclaim_while_slots_full(servers: Servers, workers: Workers,
                                                        ledger: Ledger) -> None:
    """All 16 slots busy (handlers of staggered lengths), the read loop waiting for room, and the
    reclaimer waiting for a slot to claim a dead consumer's entry that was deleted: once the
    handlers finish, the worker reads and handles the rest of the stream."""
    server = servers.start()
    main = servers.client(server)
    ghost = produce(main, [payload(0)])
    main.execute_command("XGROUP", "CREATE", STREAM, GROUP, "0")
    main.execute_command("XREADGROUP", "GROUP", GROUP, "ghost", "COUNT", 1, "STREAMS", STREAM, ">")
    main.xdel(STREAM, ghost[0])
    slow = produce(main, (payload(i, sleep=1.2 + 0.1 * i) for i in range(16)))
    rest = produce(main, (payload(100 + i) for i in range(30)))
    w = workers.spawn(server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "16"})
    try:
        settle(main, slow + rest, timeout=8, workers=workers)
    finally:
        result = finish("reclaim of a deleted entry while all slots are busy", main, ledger.client,
                        slow + rest, removed=ghost, in_flight_window=0,
                        notes={"trimmed_logged": len(w.events("pending_entries_trimmed"))})
    result.assert_invariants()


def _under_load(servers: Servers, workers: Workers, ledger: Ledger, fault: str,
                act: Any) -> tuple[Any, Any, list[Any]]:
    server = servers.start()
    main = servers.client(server)
    ws = workers.spawn_many(2, server.url, vis=VIS, env={"CHAOS_CONCURRENCY": "16"})
    total, rate = size(450, 15_000), size(150, 1000)
    prod = BackgroundProducer(server.url, total, rate, extra=lambda n: {"sleep": 0.02}).start()
    wait_for(lambda: len(prod.ids) >= total // 3, 30, "a third produced")
    t_fault = time.monotonic()
    act(main)
    prod.join(60 + total / rate)
    return main, (prod, t_fault), ws


def test_group_destroyed_under_load(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """XGROUP DESTROY while workers run: they recreate the group (warning), keep going without a
    crash or a busy loop, and every entry is handled (duplicates counted)."""
    main, (prod, t_fault), ws = _under_load(
        servers, workers, ledger, "destroy",
        lambda c: c.execute_command("XGROUP", "DESTROY", STREAM, GROUP))
    produced = [i for i, _ in prod.ids]
    settle(main, produced, timeout=30, workers=workers)
    recovery = time.monotonic() - t_fault
    rate = idle_call_rate(main, 2.0)
    result = finish("XGROUP DESTROY under load", main, ledger.client, produced,
                    recovery_s=recovery, notes={"idle_calls_per_s": round(rate, 1)})
    result.assert_invariants(allow_overlap=True)
    assert workers.alive() == ws
    assert workers.events("group_recreated")
    assert rate <= IDLE_CALLS_PER_WORKER * len(ws), f"busy loop: {rate:.0f} calls/s"


def test_stream_deleted_under_load(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """DEL of the stream while workers run: entries deleted before they were handled are gone (the
    operator's doing, counted apart); every entry added afterwards is handled; no crash, no busy
    loop."""
    deleted_at: list[float] = []

    def act(c: redis.Redis) -> None:
        c.delete(STREAM)
        deleted_at.append(time.monotonic())

    main, (prod, _t), ws = _under_load(servers, workers, ledger, "del", act)
    produced = [i for i, _ in prod.ids]
    before = {i for i, t in prod.ids if t <= deleted_at[0]}
    settle(main, produced, timeout=30, workers=workers)
    recovery = time.monotonic() - deleted_at[0]
    rate = idle_call_rate(main, 2.0)
    done = {e.id for e in read_executions(ledger.client) if e.end is not None}
    result = finish("DEL of the stream under load", main, ledger.client, produced,
                    removed=before - done, recovery_s=recovery,
                    notes={"idle_calls_per_s": round(rate, 1)})
    result.assert_invariants(allow_overlap=True)
    assert workers.alive() == ws
    assert rate <= IDLE_CALLS_PER_WORKER * len(ws), f"busy loop: {rate:.0f} calls/s"


def test_backlog_memory_and_idle(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """A backlog (20k entries; 1M at full size) drained by two workers: worker RSS and server
    memory stay bounded (I5), every entry is handled, and once idle the workers cause only a few
    commands per second and little CPU (I4)."""
    server = servers.start()
    main = servers.client(server)
    n = size(20_000, 1_000_000)
    produce(main, (payload(i) for i in range(n)), chunk=2000)
    last = main.xrevrange(STREAM, "+", "-", count=1)[0][0].decode()
    produced_ids = [rid.decode() for rid, _ in main.xrange(STREAM, "-", "+")] if n <= 50_000 else []
    mem_before = int(main.info("memory")["used_memory"])
    ws = workers.spawn_many(2, server.url, vis=5.0,
                            env={"CHAOS_LEDGER_MODE": "count", "CHAOS_CONCURRENCY": "100"})
    rss: dict[int, list[int]] = {w.pid: [rss_bytes(w.pid)] for w in ws}
    mem_max = [mem_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for w in ws:
                if w.alive:
                    rss[w.pid].append(rss_bytes(w.pid))
            mem_max[0] = max(mem_max[0], int(main.info("memory")["used_memory"]))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        settle(main, [last], timeout=60 + n / 1000, workers=workers)
    finally:
        stop.set()
        sampler.join(5)
    took = time.monotonic() - t0
    rate = idle_call_rate(main, 2.0)
    cpu = [cpu_fraction(w.pid, 1.0) for w in ws]
    if not produced_ids:
        produced_ids = [rid.decode() for rid, _ in main.xrange(STREAM, "-", "+")]
    max_rss = max(max(v) for v in rss.values())
    growth = max(max(v) - v[0] for v in rss.values())
    result = finish("backlog", main, ledger.client, produced_ids, count_mode=True,
                    recovery_s=took,
                    notes={"worker_rss_max_mb": round(max_rss / 2**20, 1),
                           "worker_rss_growth_mb": round(growth / 2**20, 1),
                           "server_used_memory_before_mb": round(mem_before / 2**20, 1),
                           "server_used_memory_max_mb": round(mem_max[0] / 2**20, 1),
                           "idle_calls_per_s": round(rate, 1),
                           "idle_cpu": [round(c, 3) for c in cpu],
                           "drain_rate_per_s": round(n / took)})
    result.assert_invariants()
    assert max_rss <= 256 * 2**20, result.summary()
    assert growth <= 96 * 2**20, result.summary()
    assert mem_max[0] <= mem_before * 1.25 + 16 * 2**20, result.summary()
    assert rate <= IDLE_CALLS_PER_WORKER * len(ws), result.summary()
    assert max(cpu) <= IDLE_CPU, result.summary()
    assert consumer_pending(main, STREAM, GROUP)


def _force_oom(client: redis.Redis) -> None:
    """Put the server (noeviction) out of memory: maxmemory 256 KB below what it uses now."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used - 256 * 1024))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", "x")


def test_worker_starts_while_server_oom(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """A worker (re)started while the server is at maxmemory (noeviction) starts and drains the
    existing backlog: reading and acking need no memory."""
    server = servers.start("--maxmemory-policy", "noeviction")
    main = servers.client(server)
    produced = produce(main, (payload(i) for i in range(200)))
    main.execute_command("XGROUP", "CREATE", STREAM, GROUP, "0")
    _force_oom(main)
    w = workers.spawn(server.url, vis=VIS, ready=False)
    w.wait_ready(15)
    settle(main, produced, timeout=20, workers=workers)
    result = finish("worker start while OOM", main, ledger.client, produced)
    result.assert_invariants()


def test_dead_letter_refused_under_oom(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """While the server is out of memory an entry that must be dead-lettered cannot be (the DLQ
    XADD is refused): it stays pending, and the other entries reclaimed with it still run; once
    memory is available it reaches the DLQ and nothing is lost."""
    server = servers.start("--maxmemory-policy", "noeviction")
    main = servers.client(server)
    # A dead consumer holds one entry that already failed 5 times and 20 innocent entries.
    produced = produce(main, (payload(i) for i in range(21)))
    main.execute_command("XGROUP", "CREATE", STREAM, GROUP, "0")
    main.execute_command("XREADGROUP", "GROUP", GROUP, "ghost", "COUNT", 21, "STREAMS", STREAM, ">")
    for _ in range(4):
        main.execute_command("XCLAIM", STREAM, GROUP, "ghost", 0, produced[0])
    w2 = workers.spawn(server.url, vis=VIS, env={"CHAOS_MAX_ATTEMPTS": "3"})
    main.xclaim(STREAM, GROUP, "ghost", 0, produced, justid=True)  # idle 0 again
    _force_oom(main)
    time.sleep(4 * (VIS + RECLAIM))  # several reclaim rounds while out of memory
    main.config_set("maxmemory", "0")
    settle(main, produced, timeout=20, workers=workers)
    result = finish("dead-letter refused under OOM", main, ledger.client, produced,
                    notes={"dlq_error_types": dict(dlq_error_types(main, DLQ)),
                           "reclaim_failed": len(w2.events("reclaim_failed"))})
    result.assert_invariants()
    assert result.dead_lettered == 1 and result.handled == 20, result.summary()
