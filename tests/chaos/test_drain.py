"""Server restarts while a worker is starting up (issue 9 item 4).

* during the **own-pending drain**: a worker restarted under its own ``--consumer-name``
  takes its pending entries back (XPENDING + XCLAIM, one slot at a time with
  ``--concurrency 1``) when the server is killed -9 and restarted from its AOF;
* during **group creation**: the server is killed -9 after the worker's start-up checks
  (PING, permission probes) passed and before its XGROUP CREATE, and restarted 1 s later.

Either way the worker must ride out the outage (no exit on a transient server fault), and
every entry is handled; SIGTERM afterwards drains it with exit status 0.
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .checker import consumer_pending, wait_for
from .conftest import Ledger, Servers
from .harness import (
    GROUP,
    STREAM,
    WorkerProc,
    Workers,
    finish,
    group_info,
    payload,
    produce,
    settle,
    size,
)
from .ledger import read_executions

pytestmark = pytest.mark.chaos

DOWNTIME = 1.0  # seconds between the kill -9 and the restart
HANDLER_S = 0.05  # each entry's handler sleeps this long


def _completed(ledger: Ledger) -> int:
    return sum(1 for e in read_executions(ledger.client) if e.end is not None)


def _since(events: list[dict[str, Any]], wall: float) -> float | None:
    """Seconds from ``wall`` (unix time) to the first of ``events`` (by its log timestamp)."""
    if not events:
        return None
    stamp = datetime.fromisoformat(str(events[0]["timestamp"])).timestamp()
    return round(stamp - wall, 3)


def _stop_cleanly(w: WorkerProc, workers: Workers) -> int:
    """SIGTERM the worker; return its exit status (failing if it does not exit)."""
    w.term()
    try:
        return w.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker did not exit within 15 s of SIGTERM:\n{workers.logs()}") from None


def test_server_restart_during_own_pending_drain(servers: Servers, workers: Workers,
                                                 ledger: Ledger) -> None:
    """200 entries (1500 at full size, over two XPENDING pages) pending under consumer ``wA``
    as if ``wA`` had died; ``wA`` restarts with ``--concurrency 1`` and a 50 ms handler; while it
    takes its entries back the server is killed -9 and restarted 1 s later (AOF, appendfsync
    always). The worker stays up, logs ``own_pending_drain_failed`` then
    ``own_pending_drain_recovered``, resumes the drain, and every entry is handled (none lost,
    none dead-lettered); SIGTERM then ends it with status 0."""
    server = servers.start("--appendfsync", "always", persistent=True)
    main = servers.client(server)
    n = size(200, 1500)
    kill_after = size(30, 1100)  # completions before the kill (at full size: in the 2nd page)
    produced = produce(main, (payload(i, sleep=HANDLER_S) for i in range(n)))
    main.execute_command("XGROUP", "CREATE", STREAM, GROUP, "0")
    main.execute_command("XREADGROUP", "GROUP", GROUP, "wA", "COUNT", n, "STREAMS", STREAM, ">")
    assert consumer_pending(main, STREAM, GROUP) == {"wA": n}

    # Attempts to spare: a claim whose reply the kill cut may count one more delivery; this test
    # is about the drain surviving, not about dead-lettering.
    w = workers.spawn(server.url, name="wA", args=["--concurrency", "1"],
                      env={"CHAOS_MAX_ATTEMPTS": "10"})
    wait_for(lambda: (w.events("own_pending_found") and _completed(ledger) >= kill_after)
             or not w.alive, 30 + n * HANDLER_S * 2,
             f"wA draining its own pending entries ({kill_after} handled)",
             diagnose=workers.logs)
    assert w.alive, f"worker exited before the fault:\n{workers.logs()}"
    done_before = _completed(ledger)
    pel_before = consumer_pending(main, STREAM, GROUP).get("wA", 0)
    assert pel_before > 0, "the drain must still be under way at the kill"

    server.kill()
    time.sleep(DOWNTIME)
    server.restart()
    up_wall = time.time()

    def resumed() -> bool:  # a handler started after the restart: the drain hands entries out again
        return any(e.start is not None and e.start >= up_wall for e in read_executions(ledger.client))

    recovery = wait_for(lambda: resumed() or not w.alive, 30,
                        "the drain to hand entries out again after the restart",
                        diagnose=workers.logs)
    assert w.alive, f"worker exited on the server restart (rc {w.proc.returncode}):\n{workers.logs()}"
    settle(main, produced, timeout=30 + n * HANDLER_S * 2, workers=workers)
    assert w.alive, workers.logs()
    failed = w.events("own_pending_drain_failed")
    recovered = w.events("own_pending_drain_recovered")
    pages = [int(e["entries"]) for e in w.events("own_pending_found")]
    rc = _stop_cleanly(w, workers)

    result = finish("redis-server kill -9 + restart during the own-pending drain", main,
                    ledger.client, produced, recovery_s=recovery, in_flight_window=0,
                    notes={"downtime_s": DOWNTIME, "pending_under_wA_at_start": n,
                           "handled_before_kill": done_before,
                           "pending_under_wA_at_kill": pel_before,
                           "drain_failures_logged": len(failed),
                           "drain_recovered_logged_s_after_restart": _since(recovered, up_wall),
                           "own_pending_pages": pages,
                           "max_attempt_seen": max(e.attempt for e in read_executions(ledger.client)),
                           "exit_status_on_sigterm": rc})
    result.assert_invariants()
    assert result.handled == n and result.dead_lettered == 0, result.summary()
    assert failed, f"the outage was not seen by the drain:\n{w.log_text()[-3000:]}"
    assert recovered, f"no own_pending_drain_recovered:\n{w.log_text()[-3000:]}"
    # The walk read XPENDING again after the restart, and resumed after what it had handed over
    # (in_flight_window=0 above: from the start of the PEL it could claim and run again the entry
    # that was in flight at the kill, whose XACK the outage held back).
    assert len(pages) >= 2 and pages[-1] <= pel_before, result.summary()
    assert rc == 0, f"exit status {rc} on SIGTERM:\n{w.log_text()[-3000:]}"
    assert w.events("worker_stopped"), w.log_text()[-3000:]


def test_server_restart_during_group_creation(servers: Servers, workers: Workers, ledger: Ledger,
                                              tmp_path: Path) -> None:
    """The server is killed -9 while a starting worker is past its PING and permission probes and
    before its XGROUP CREATE (held there by a startup hook, see ``apps.py``), and restarted 1 s
    later from its AOF. The worker logs ``group_create_failed``, retries, creates the group once
    the server is back, and handles the entries added before and after the outage; SIGTERM then
    ends it with status 0."""
    server = servers.start("--appendfsync", "always", persistent=True)
    main = servers.client(server)
    before = produce(main, (payload(i) for i in range(size(50, 1000))))
    gate = tmp_path / "start-gate"
    w = workers.spawn(server.url, env={"CHAOS_START_GATE": str(gate)}, ready=False)
    wait_for(lambda: w.events("chaos_start_gate_waiting") or not w.alive, 20,
             "the worker past its start-up checks", diagnose=workers.logs)
    assert w.alive, f"worker exited during its start-up checks:\n{workers.logs()}"
    assert group_info(main) is None, "the group must not exist before the worker creates it"

    server.kill()
    gate.touch()  # the worker goes on to XGROUP CREATE against the dead server
    wait_for(lambda: w.events("group_create_failed") or not w.alive, 10,
             "the worker's first XGROUP CREATE", diagnose=workers.logs)
    time.sleep(DOWNTIME)
    server.restart()
    t_up = time.monotonic()

    wait_for(lambda: w.events("worker_started") or not w.alive, 30,
             "the worker to start once the server is back", diagnose=workers.logs)
    assert w.alive, f"worker exited on the outage (rc {w.proc.returncode}):\n{workers.logs()}"
    up_after = time.monotonic() - t_up
    main = servers.client(server)
    after = produce(main, (payload(10**6 + i) for i in range(size(100, 2000))))
    settle(main, before + after, timeout=30, workers=workers)
    recovery = time.monotonic() - t_up
    assert w.alive, workers.logs()
    create_failed = w.events("group_create_failed")
    rc = _stop_cleanly(w, workers)

    result = finish("redis-server kill -9 + restart during group creation at start-up", main,
                    ledger.client, before + after, recovery_s=recovery, in_flight_window=0,
                    notes={"downtime_s": DOWNTIME, "entries_before_outage": len(before),
                           "entries_after_outage": len(after),
                           "group_create_failures_logged": len(create_failed),
                           "worker_started_s_after_restart": round(up_after, 3),
                           "exit_status_on_sigterm": rc})
    result.assert_invariants()
    assert result.handled == len(before) + len(after), result.summary()
    assert create_failed, w.log_text()[-3000:]
    assert w.events("group_created"), w.log_text()[-3000:]
    assert rc == 0, f"exit status {rc} on SIGTERM:\n{w.log_text()[-3000:]}"
