"""Poison messages and bad payloads: they end in the dead-letter stream, the rest is unaffected."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest

from .checker import dlq_error_types, dlq_ids
from .conftest import Ledger, Servers
from .harness import DLQ, Supervisor, Workers, finish, payload, produce, settle, size
from .ledger import read_executions

pytestmark = pytest.mark.chaos


def test_poison_raise_goes_to_dlq(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """1% of the entries always raise: exactly those are dead-lettered after max_attempts, every
    other entry is handled once."""
    server = servers.start()
    main = servers.client(server)
    n = size(1000, 20_000)
    rng = random.Random(11)
    poison = set(rng.sample(range(n), n // 100))
    items = [payload(i, fail=True) if i in poison else payload(i, sleep=0.002) for i in range(n)]
    workers.spawn_many(2, server.url, vis=2.0, env={"CHAOS_MAX_ATTEMPTS": "3"})
    produced = produce(main, items)
    poison_ids = {produced[i] for i in poison}
    settle(main, produced, timeout=40, workers=workers)
    result = finish("poison messages (raise, 1%)", main, ledger.client, produced, in_flight_window=0)
    result.assert_invariants()
    dead = {e for e in set(produced) if e in poison_ids}
    assert result.dead_lettered == len(dead)
    assert dlq_error_types(main, DLQ) == {"RuntimeError": len(poison_ids)}
    runs = read_executions(ledger.client)
    others = [e for e in runs if e.id not in poison_ids]
    assert {e.attempt for e in others} == {1}, "other entries are unaffected"


class _Evil:
    """Pickles to a payload that would create a file if anyone unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_bad_payloads_go_to_dlq(servers: Servers, workers: Workers, ledger: Ledger,
                                tmp_path: Path) -> None:
    """Invalid JSON, invalid UTF-8, a 5 MB body, pickle bytes (never unpickled) and foreign field
    maps are dead-lettered without a retry or a crash; the good entries around them are handled."""
    server = servers.start()
    main = servers.client(server)
    w = workers.spawn(server.url, vis=2.0)
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_Evil(marker))
    good = [payload(i) for i in range(size(200, 5000))]
    bad: list[bytes | dict[str, bytes | str]] = [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b'"' + b"x" * (5 << 20) + b'"',  # 5 MB JSON string: over max_payload_bytes (1 MiB)
        evil,  # pickle bytes in the JSON field
        {"pickle": evil},  # pickle bytes as a foreign field map
        b"[1, 2, 3]",  # valid JSON, not a chaos payload: rejected by the handler
        {"task_type": "calculate", "number": "4"},  # a foreign producer's field map
    ]
    items: list[bytes | dict[str, bytes | str]] = list(good)
    for k, item in enumerate(bad):
        items.insert(1 + k * len(good) // len(bad), item)
    produced = produce(main, items, chunk=50)
    bad_ids = {rid for rid, item in zip(produced, items, strict=True) if item not in good}
    settle(main, produced, timeout=30, workers=workers)
    assert w.alive
    result = finish("bad payloads", main, ledger.client, produced, in_flight_window=0)
    result.assert_invariants()
    assert result.dead_lettered == len(bad_ids) and result.handled == len(good)
    assert not marker.exists(), "a pickle payload was unpickled"
    types = dlq_error_types(main, DLQ)
    assert types == {"PayloadError": 2, "PayloadTooLarge": 1, "Reject": 4} or (
        sum(types.values()) == len(bad_ids)), types
    runs = [e for e in read_executions(ledger.client) if e.id in bad_ids]
    assert {e.attempt for e in runs} == {1}, "a bad payload is never retried"


def test_oversized_raw_entry_goes_to_dlq(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """A raw (field-map) entry larger than max_payload_bytes is dead-lettered as PayloadTooLarge,
    like an oversized JSON payload, instead of reaching the handler."""
    server = servers.start()
    main = servers.client(server)
    workers.spawn(server.url, vis=2.0)
    produced = produce(main, [{"n": "1", "blob": "x" * (5 << 20)}, payload(2)], chunk=1)
    settle(main, produced, timeout=30, workers=workers)
    result = finish("oversized raw entry", main, ledger.client, produced, in_flight_window=0)
    result.assert_invariants()
    assert dlq_error_types(main, DLQ) == {"PayloadTooLarge": 1}


def test_poison_exit_kills_workers(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """1% poison entries, a few of which make the handler call os._exit(1) (the worker dies each
    time, a supervisor restarts it): every poison entry is dead-lettered, no entry is lost, and the
    other entries are not dead-lettered."""
    server = servers.start()
    main = servers.client(server)
    n = size(1000, 20_000)
    rng = random.Random(5)
    chosen = rng.sample(range(n), n // 100)
    exits = set(chosen[:2])
    fails = set(chosen[2:])
    items = [payload(i, exit=True) if i in exits else payload(i, fail=True) if i in fails
             else payload(i, sleep=0.005) for i in range(n)]
    sup = Supervisor(workers, 2, server.url, vis=1.0,
                     env={"CHAOS_MAX_ATTEMPTS": "3", "CHAOS_CONCURRENCY": "16"}).start()
    try:
        produced = produce(main, items)
        settle(main, produced, timeout=60, workers=workers)
    finally:
        sup.stop()
    poison_ids = {produced[i] for i in exits | fails}
    innocent_dead = len(set(dlq_ids(main, DLQ)) - poison_ids)
    result = finish("poison messages (raise + os._exit, 1%)", main, ledger.client, produced,
                    notes={"worker_restarts": sup.restarts, "innocent_dead_lettered": innocent_dead,
                           "dlq_error_types": dict(dlq_error_types(main, DLQ))})
    result.assert_invariants()
    assert sup.restarts >= 2
    assert innocent_dead == 0, f"innocent entries dead-lettered: {result.summary()}"
