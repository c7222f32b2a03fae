"""Reclaiming work of dead or restarted consumers, lease renewal, deleted pending entries
and pruning of idle consumers.

Workers run in-process (and once as a ``python -m streamflow run`` subprocess killed with
SIGKILL) against private servers; ``any_redis_url`` runs a test on Redis 7 and Valkey 9
where XCLAIM / XPENDING / XINFO semantics could differ.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import pytest
from failapps.support import make_consumer, pending_count, pending_rows, raw_client

from streamflow import App, Message, Retry, scripts
from streamflow.deadletter import parse_record
from streamflow.keys import RETRY_CONSUMER
from streamflow.testing import (
    fast_settings,
    make_worker,
    passes,
    running_worker,
    serving,
    wait_until,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


async def _publish_raw(client: Any, stream: str, n: int) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("XADD", stream, "*", "i", i)
    return [r.decode() for r in await pipe.execute()]


async def _read_as(client: Any, stream: str, group: str, consumer: str, count: int) -> list[str]:
    """Deliver up to ``count`` new entries to ``consumer`` and never ack them."""
    reply = await client.execute_command(
        "XREADGROUP", "GROUP", group, consumer, "COUNT", count, "STREAMS", stream, ">"
    )
    return [e[0].decode() for _, entries in reply or [] for e in entries]


async def _consumers(client: Any, stream: str, group: str) -> dict[str, int]:
    """Consumer name -> pending count, from XINFO CONSUMERS."""
    out: dict[str, int] = {}
    for row in await client.execute_command("XINFO", "CONSUMERS", stream, group) or []:
        info = dict(zip(row[::2], row[1::2], strict=True))
        out[info[b"name"].decode()] = int(info[b"pending"])
    return out


def _no_overlap(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(ordered))


# -- dead workers ---------------------------------------------------------------------------


async def test_kill9_worker_entries_are_finished_by_another(redis_url: str, tmp_path: Path) -> None:
    """After SIGKILL of a worker subprocess mid-batch, a second worker reclaims and finishes every
    entry."""
    n = 30
    async with raw_client(redis_url) as client:
        ids = await _publish_raw(client, "jobs", n)
        env = {
            **os.environ,
            "STREAMFLOW_RECLAIM_INTERVAL": "0.2",
            "STREAMFLOW_BLOCK_MS": "100",
            "FAILAPP_DELAY": "0.4",
            "FAILAPP_STREAM": "jobs",
            "PYTHONPATH": str(ROOT),
        }
        log = (tmp_path / "worker.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamflow", "run", "tests.failapps.killapp:app",
             "--redis-url", redis_url, "--visibility-timeout", "1", "--log-format", "json"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            async def mid_batch() -> bool:
                started = int(await client.llen("ledger:start"))
                done = int(await client.scard("ledger:done"))
                assert proc.poll() is None, (tmp_path / "worker.log").read_text()
                return started >= 12 and done >= 4
            await wait_until(mid_batch, timeout=20, what="the subprocess to be mid-batch")
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()

        started_a = [i.decode() for i in await client.lrange("ledger:start", 0, -1)]
        done_a = {i.decode() for i in await client.smembers("ledger:done")}
        in_flight = set(started_a) - done_a
        assert in_flight, "the kill should leave handlers in flight"
        assert await pending_count(client, "jobs", "kill-test") >= len(in_flight)

        seen_b: list[tuple[str, int]] = []
        async with App(redis_url=redis_url) as app:

            @app.handler("jobs", group="kill-test", start_id="0")
            async def work(msg: Message) -> None:
                seen_b.append((msg.id, msg.attempt))
                await client.sadd("ledger:done", msg.id)

            async with running_worker(app, redis_url):
                async def all_done() -> bool:
                    return (int(await client.scard("ledger:done")) == n
                            and await pending_count(client, "jobs", "kill-test") == 0)
                await wait_until(all_done, timeout=20, what="every entry handled and acked")

        done = {i.decode() for i in await client.smembers("ledger:done")}
        assert done == set(ids)
        attempts_b = dict(seen_b)
        for entry_id in in_flight:  # reclaimed from the dead worker: second delivery
            assert attempts_b[entry_id] == 2
        assert set(attempts_b) >= set(ids) - set(started_a)  # never read by the dead worker


async def test_long_handler_with_lease_runs_once(any_redis_url: str) -> None:
    """A handler running 3x the visibility timeout keeps its lease and runs exactly once while
    another worker reclaims every 0.1 s."""
    starts: list[tuple[str, int]] = []
    ends: list[str] = []
    async with App(redis_url=any_redis_url) as app:

        @app.handler("long", group="g", timeout=10)
        async def long_job(msg: Message) -> None:
            starts.append((msg.id, msg.attempt))
            await anyio.sleep(3.0)  # the handler's work: 3x the visibility timeout
            ends.append(msg.id)

        a, b = (make_worker(app, any_redis_url, visibility_timeout=1.0, reclaim_interval=0.1)
                for _ in range(2))
        async with raw_client(any_redis_url) as client, serving(a, b):
            ids = [await app.publish("long", {"n": i}) for i in range(3)]
            await wait_until(lambda: len(ends) == 3, timeout=15, what="three long handlers")
            async def acked() -> bool:
                return await pending_count(client, "long", "g") == 0
            await wait_until(acked, what="acks")

    assert sorted(starts) == sorted((i, 1) for i in ids)
    assert sorted(ends) == sorted(ids)


async def test_concurrent_reclaimers_never_overlap(any_redis_url: str) -> None:
    """Three workers reclaiming one dead consumer's entries at once run each entry once and never
    concurrently."""
    n = 24
    runs: dict[str, list[tuple[float, float]]] = {}
    attempts: dict[str, list[int]] = {}
    async with raw_client(any_redis_url) as client, App(redis_url=any_redis_url) as app:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        ids = await _publish_raw(client, "jobs", n)
        assert await _read_as(client, "jobs", "g", "dead", n) == ids
        long_ids = set(ids[::6])  # these outlive the visibility timeout: leases must hold

        @app.handler("jobs", group="g", timeout=10)
        async def work(msg: Message) -> None:
            t0 = time.monotonic()
            attempts.setdefault(msg.id, []).append(msg.attempt)
            await anyio.sleep(1.6 if msg.id in long_ids else 0.2)  # the handler's work
            runs.setdefault(msg.id, []).append((t0, time.monotonic()))

        workers = [make_worker(app, any_redis_url, concurrency=4) for _ in range(3)]
        async with serving(*workers):
            async def finished() -> bool:
                return (sum(len(v) for v in runs.values()) >= n
                        and await pending_count(client, "jobs", "g") == 0)
            await wait_until(finished, timeout=20, what="every entry handled and acked")

    assert set(runs) == set(ids)
    for entry_id, intervals in runs.items():
        assert _no_overlap(intervals), (entry_id, intervals)
    assert all(a == [2] for a in attempts.values()), attempts
    assert sum(w.stats().handled for w in workers) == n


async def test_entry_that_keeps_killing_workers_is_dead_lettered(any_redis_url: str) -> None:
    """A dead consumer's entry already delivered max_attempts times is dead-lettered as
    MaxAttemptsExceeded when reclaimed, without running the handler again."""
    calls: list[str] = []
    async with raw_client(any_redis_url) as client, App(redis_url=any_redis_url) as app:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        (poison, ok) = await _publish_raw(client, "jobs", 2)
        await _read_as(client, "jobs", "g", "dead", 2)
        for _ in range(2):  # two more deliveries of the poison entry: 3 in all
            await client.execute_command("XCLAIM", "jobs", "g", "dead", 0, poison)

        @app.handler("jobs", group="g", retry=Retry(max_attempts=3, backoff=0.05))
        async def work(msg: Message) -> None:
            calls.append(msg.id)

        async with running_worker(app, any_redis_url) as w:
            await wait_until(lambda: w.stats().dead_lettered == 1 and w.stats().handled == 1, what="reclaim")
            async def acked() -> bool:
                return await pending_count(client, "jobs", "g") == 0
            await wait_until(acked, what="an empty PEL")
            rows = await client.execute_command("XRANGE", "jobs:dlq", "-", "+")

    assert calls == [ok]
    assert len(rows) == 1
    rec = parse_record(rows[0][0], rows[0][1])
    assert (rec.id, rec.attempts, rec.error_type) == (poison, 4, "MaxAttemptsExceeded")
    assert rec.consumer == w.name
    assert rec.fields == {"i": "0"}


# -- restart under the same name -------------------------------------------------------------


async def _restart_scenario(url: str, *, concurrency: int, old: int, new: int,
                            wait_old: bool = True) -> tuple[list[str], list[str],
                                                            list[tuple[str, int]]]:
    """Leave ``old`` entries pending for consumer "fixed", add ``new`` undelivered ones, run a
    worker named "fixed" (visibility timeout 30 s) until the new entries (and, with
    ``wait_old``, the old ones) are handled; return (old ids, new ids, handler ledger).
    """
    seen: list[tuple[str, int]] = []
    async with raw_client(url) as client, App(redis_url=url) as app:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        old_ids = await _publish_raw(client, "jobs", old)
        assert await _read_as(client, "jobs", "g", "fixed", old) == old_ids
        new_ids = await _publish_raw(client, "jobs", new)

        @app.handler("jobs", group="g")
        async def work(msg: Message) -> None:
            seen.append((msg.id, msg.attempt))
            await anyio.sleep(0.02)  # the handler's work

        async with running_worker(app, url, consumer_name="fixed", visibility_timeout=30,
                                  concurrency=concurrency):
            await wait_until(lambda: {i for i, _ in seen} >= set(new_ids), what="the new entries")
            if wait_old:
                await wait_until(lambda: {i for i, _ in seen} >= set(old_ids), what="the old entries")

                async def acked() -> bool:
                    return await pending_count(client, "jobs", "g") == 0
                await wait_until(acked, what="acks")
    return old_ids, new_ids, seen


async def test_restart_same_name_drains_own_pending_first(redis_url: str) -> None:
    """A worker restarted under the same consumer name runs its own pending entries first, as
    attempt 2."""
    old_ids, new_ids, seen = await _restart_scenario(redis_url, concurrency=10, old=5, new=5)
    assert seen == [(i, 2) for i in old_ids] + [(i, 1) for i in new_ids]


async def test_restart_same_name_drains_more_than_concurrency(redis_url: str) -> None:
    """With fewer slots than own pending entries, a restarted worker still runs all its own pending
    entries before new ones."""
    old_ids, _, seen = await _restart_scenario(redis_url, concurrency=2, old=6, new=4,
                                               wait_old=False)
    assert seen[:6] == [(i, 2) for i in old_ids]


async def test_restart_same_name_drains_1000_plus_once(redis_url: str) -> None:
    """A restarted worker with more than 1000 own pending entries runs each of them exactly once,
    as attempt 2, without waiting for the visibility timeout."""
    runs: dict[str, list[tuple[float, float, int]]] = {}
    n = 1100
    async with raw_client(redis_url) as client, App(redis_url=redis_url) as app:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        ids = await _publish_raw(client, "jobs", n)
        assert len(await _read_as(client, "jobs", "g", "fixed", n)) == n

        @app.handler("jobs", group="g")
        async def work(msg: Message) -> None:
            t0 = time.monotonic()
            await anyio.sleep(0.01)  # the handler's work
            runs.setdefault(msg.id, []).append((t0, time.monotonic(), msg.attempt))

        async with running_worker(app, redis_url, consumer_name="fixed", visibility_timeout=30,
                                  concurrency=50) as w:
            async def drained() -> bool:
                return len(runs) == n and await pending_count(client, "jobs", "g") == 0
            # Takes well under a second (1100 x 10 ms / 50 slots); on a deadline, the
            # assertions below say what went wrong (duplicates first).
            with anyio.move_on_after(10):
                await wait_until(drained, timeout=60, what="every own pending entry")
            left = await pending_count(client, "jobs", "g")

    duplicates = {i: r for i, r in runs.items() if len(r) > 1}
    assert duplicates == {}, f"{len(duplicates)} entries ran more than once"
    assert w.stats().dead_lettered == 0
    assert set(runs) == set(ids)
    assert left == 0
    assert all(r[0][2] == 2 for r in runs.values())


# -- pending entries deleted from the stream ------------------------------------------------


async def test_deleted_pending_of_dead_consumer_are_acked_as_trimmed(any_redis_url: str) -> None:
    """Pending entries of a dead consumer that were XDEL'd or XTRIM'd are acked and counted as
    trimmed; the rest are handled."""
    seen: list[str] = []
    async with raw_client(any_redis_url) as client, App(redis_url=any_redis_url) as app:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        ids = await _publish_raw(client, "jobs", 10)
        await _read_as(client, "jobs", "g", "dead", 10)
        await client.execute_command("XTRIM", "jobs", "MINID", "=", ids[2])  # drops ids[0:2]
        await client.execute_command("XDEL", "jobs", ids[4], ids[6], ids[9])
        gone = {ids[0], ids[1], ids[4], ids[6], ids[9]}
        assert await pending_count(client, "jobs", "g") == 10

        @app.handler("jobs", group="g")
        async def work(msg: Message) -> None:
            seen.append(msg.id)

        async with running_worker(app, any_redis_url) as w:
            await wait_until(lambda: w.stats().handled == 5 and w.stats().trimmed == 5,
                             what="handled and trimmed")
            async def acked() -> bool:
                return await pending_count(client, "jobs", "g") == 0
            await wait_until(acked, what="acks")
            late = await app.publish("jobs", {"after": True})  # the worker is still healthy
            await wait_until(lambda: late in seen, what="an entry published afterwards")

    assert sorted(seen) == sorted([*(set(ids) - gone), late])
    assert w.stats().trimmed == 5


async def test_deleted_own_pending_are_acked_on_restart(any_redis_url: str) -> None:
    """Own pending entries deleted from the stream do not break the restart drain: they leave the
    PEL and the rest run."""
    seen: list[tuple[str, int]] = []
    async with raw_client(any_redis_url) as client, App(redis_url=any_redis_url) as app:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        ids = await _publish_raw(client, "jobs", 6)
        await _read_as(client, "jobs", "g", "fixed", 6)
        await client.execute_command("XDEL", "jobs", ids[1], ids[3])

        @app.handler("jobs", group="g")
        async def work(msg: Message) -> None:
            seen.append((msg.id, msg.attempt))

        async with running_worker(app, any_redis_url, consumer_name="fixed",
                                  visibility_timeout=30):
            async def done() -> bool:
                return len(seen) == 4 and await pending_count(client, "jobs", "g") == 0
            await wait_until(done, what="the surviving entries handled and the PEL empty")

    assert seen == [(i, 2) for i in ids if i not in (ids[1], ids[3])]


async def test_deleted_own_pending_counted_as_trimmed(any_redis_url: str) -> None:
    """Own pending entries found deleted by the restart drain are counted in Consumer.trimmed."""
    async with raw_client(any_redis_url) as client, App(redis_url=any_redis_url) as app:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        ids = await _publish_raw(client, "jobs", 4)
        await _read_as(client, "jobs", "g", "fixed", 4)
        await client.execute_command("XDEL", "jobs", ids[0], ids[2])

        @app.handler("jobs", group="g")
        async def work(msg: Message) -> None:
            pass

        async with running_worker(app, any_redis_url, consumer_name="fixed",
                                  visibility_timeout=30) as w:
            await wait_until(lambda: w.stats().handled == 2, what="the surviving entries")
            await passes(w, reclaim=3)  # none of them is counted again

    assert w.stats().trimmed == 2


async def test_deleted_while_parked_for_retry_is_acked_as_trimmed(any_redis_url: str) -> None:
    """An entry deleted while it waits for its retry backoff is acked and counted as trimmed, not
    run again."""
    calls: list[int] = []
    async with raw_client(any_redis_url) as client, App(redis_url=any_redis_url) as app:

        @app.handler("jobs", group="g", retry=Retry(max_attempts=3, backoff=0.5, jitter=0))
        async def work(msg: Message) -> None:
            calls.append(msg.attempt)
            raise RuntimeError("fail")

        async with running_worker(app, any_redis_url) as w:
            entry_id = await app.publish("jobs", {"n": 1})
            await wait_until(lambda: w.stats().retried == 1, what="the entry parked for retry")
            rows = await pending_rows(client, "jobs", "g")
            assert [(r[0], r[1]) for r in rows] == [(entry_id, RETRY_CONSUMER)]
            await client.execute_command("XDEL", "jobs", entry_id)
            await wait_until(lambda: w.stats().trimmed == 1, what="the deleted entry to be found")
            assert await pending_count(client, "jobs", "g") == 0
            await passes(w, reclaim=3)  # nothing left to run again or to dead-letter

    assert calls == [1]
    assert w.stats().dead_lettered == 0


async def test_deleted_while_running_does_not_crash(any_redis_url: str) -> None:
    """An entry deleted while its handler runs (through lease renewals) finishes without error and
    the worker keeps working."""
    seen: list[str] = []
    async with raw_client(any_redis_url) as client, App(redis_url=any_redis_url) as app:
        gate = anyio.Event()

        @app.handler("jobs", group="g")
        async def work(msg: Message) -> None:
            seen.append(msg.id)
            if len(seen) == 1:
                gate.set()
                await anyio.sleep(1.0)  # several lease renewals (every 0.25 s)

        async with running_worker(app, any_redis_url) as w:
            first = await app.publish("jobs", {"n": 1})
            await gate.wait()
            await client.execute_command("XDEL", "jobs", first)
            await wait_until(lambda: w.stats().handled == 1, what="the first handler")
            second = await app.publish("jobs", {"n": 2})
            await wait_until(lambda: w.stats().handled == 2, what="the second handler")
            async def acked() -> bool:
                return await pending_count(client, "jobs", "g") == 0
            await wait_until(acked, what="an empty PEL")

    assert seen == [first, second]
    assert w.stats().failed == 0


# -- idle consumers ---------------------------------------------------------------------------


async def test_prune_removes_only_idle_consumers_without_pending(any_redis_url: str) -> None:
    """Reclaimer.prune_consumers removes consumers idle past dead_consumer_after with 0 pending,
    never one holding entries."""
    async with raw_client(any_redis_url) as client, App(redis_url=any_redis_url) as app:

        @app.handler("jobs", group="g")
        async def work(msg: Message) -> None:
            pass

        settings = fast_settings(app, any_redis_url, dead_consumer_after=0.3)
        consumer = make_consumer(app, client, settings, name="me")
        await consumer.groups.ensure()
        await _publish_raw(client, "jobs", 3)
        await client.execute_command("XGROUP", "CREATECONSUMER", "jobs", "g", "idle-empty")
        await client.execute_command("XGROUP", "CREATECONSUMER", "jobs", "g", "me")
        await client.execute_command("XGROUP", "CREATECONSUMER", "jobs", "g", RETRY_CONSUMER)
        await _read_as(client, "jobs", "g", "holder", 2)

        async def all_idle() -> bool:
            rows = await client.execute_command("XINFO", "CONSUMERS", "jobs", "g")
            return all(int(dict(zip(r[::2], r[1::2], strict=True))[b"idle"]) >= 300
                       for r in rows)
        await wait_until(all_idle, what="consumers idle past dead_consumer_after")
        await client.execute_command("XGROUP", "CREATECONSUMER", "jobs", "g", "fresh")

        reclaimer = consumer.maintenance
        assert await reclaimer.prune_consumers("jobs") == ["idle-empty"]
        assert await _consumers(client, "jobs", "g") == {
            "fresh": 0, "holder": 2, "me": 0, RETRY_CONSUMER: 0}
        # The script re-checks atomically: a consumer with pending entries is never deleted.
        assert await client.eval(scripts.DELETE_IDLE_CONSUMER, 1, "jobs", "g", "holder", 0) == 0
        assert await reclaimer.prune_consumers("jobs") == []

        rows = await pending_rows(client, "jobs", "g")
        await client.execute_command("XACK", "jobs", "g", *[r[0] for r in rows])
        await wait_until(all_idle, what="consumers idle again")
        assert sorted(await reclaimer.prune_consumers("jobs")) == ["fresh", "holder"]
        assert await _consumers(client, "jobs", "g") == {"me": 0, RETRY_CONSUMER: 0}


async def test_worker_prunes_dead_consumers_but_keeps_pending(any_redis_url: str) -> None:
    """A running worker removes an idle consumer without pending entries and keeps one that still
    holds entries."""
    async with raw_client(any_redis_url) as client, App(redis_url=any_redis_url) as app:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        await _publish_raw(client, "jobs", 2)
        await client.execute_command("XGROUP", "CREATECONSUMER", "jobs", "g", "gone-empty")
        await _read_as(client, "jobs", "g", "gone-holding", 2)

        @app.handler("jobs", group="g")
        async def work(msg: Message) -> None:
            pass

        # Visibility timeout 30 s: the holder's entries stay pending for the whole test.
        async with running_worker(app, any_redis_url, dead_consumer_after=0.5,
                                  visibility_timeout=30) as w:
            async def pruned() -> bool:
                return "gone-empty" not in await _consumers(client, "jobs", "g")
            await wait_until(pruned, timeout=5, what="the idle empty consumer to be removed")
            # Maintenance runs every max(1 s, dead_consumer_after / 10): one more whole pass.
            await passes(w, maintenance=2, timeout=10)
            consumers = await _consumers(client, "jobs", "g")

    # (The worker's own consumer may be absent: Redis 7.0 creates a consumer on its first
    # delivery, not on a blocking XREADGROUP that returns nothing.)
    assert consumers.get("gone-holding") == 2
    assert "gone-empty" not in consumers
