"""Redis Cluster: partitioned streams, per-key order, jobs and durable publishing on a
local 3 masters + 3 replicas cluster (Redis 7 and Valkey 9), and the faults of a cluster:
a worker killed with -9, a master killed and its replica promoted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from streamflow import App, ConfigError, Message, Retry
from streamflow.clustering import key_slot
from streamflow.embedded import LocalCluster
from streamflow.errors import NotReplicated
from streamflow.testing import running_worker, wait_idle

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


def cluster_client(cluster: LocalCluster) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(cluster.client_url, socket_timeout=10)


def first_seen_in_order(seen: list[int]) -> bool:
    """True when the first run of each entry came in increasing order (repeats allowed:
    at-least-once lets an entry run again, never before an earlier one ran)."""
    firsts: list[int] = []
    done: set[int] = set()
    for n in seen:
        if n not in done:
            done.add(n)
            firsts.append(n)
    return firsts == sorted(firsts)


async def test_partitions_spread_over_every_master(any_cluster: LocalCluster,
                                                   cluster_url: str) -> None:
    app = App(redis_url=cluster_url)
    keys = app.stream("orders", partitions=6)
    masters = {any_cluster.master_of_slot(key_slot(k)).port for k in keys}
    assert len(masters) == 3
    for key in keys:  # a partition's dead-letter and replay streams share its slot
        assert key_slot(key + ":dlq") == key_slot(key) == key_slot(key + ":replay:g")
    await app.aclose()


async def test_partitioned_publish_and_consume(any_cluster: LocalCluster, cluster_url: str) -> None:
    app = App(redis_url=cluster_url)
    handled: Counter[int] = Counter()
    by_key: dict[str, set[str]] = {}

    @app.handler("orders", group="billing", partitions=8)
    async def bill(msg: Message) -> None:
        handled[msg.payload["n"]] += 1
        if msg.partition_key is not None:
            by_key.setdefault(msg.partition_key, set()).add(msg.stream)

    async with running_worker(app, cluster_url) as worker:
        ids = await app.publish_many("orders", [{"n": i} for i in range(2000)],
                                     keys=[f"c{i % 37}" if i % 2 else None for i in range(2000)])
        for i in range(2000, 2100):
            await app.publish("orders", {"n": i}, key=f"c{i % 37}")
        await wait_idle(worker, timeout=30)
        stats = worker.stats()
    assert len(ids) == 2000 and set(handled) == set(range(2100))
    assert stats.handled >= 2100 and stats.dead_lettered == 0
    assert all(len(streams) == 1 for streams in by_key.values())  # a key keeps its partition
    client = cluster_client(any_cluster)
    try:
        lengths = [client.xlen(k) for k in app.stream("orders", partitions=8)]
        assert sum(lengths) == 2100 and min(lengths) > 0
        for key in app.stream("orders", partitions=8):
            [group] = client.xinfo_groups(key)
            assert group["pending"] == 0 and group["lag"] == 0
    finally:
        client.close()


async def test_retries_and_dead_letters_per_partition(any_cluster: LocalCluster,
                                                      cluster_url: str) -> None:
    app = App(redis_url=cluster_url)
    attempts: Counter[int] = Counter()

    @app.handler("pay", group="g", partitions=4, retry=Retry(max_attempts=3, backoff=0.05))
    async def pay(msg: Message) -> None:
        n = msg.payload["n"]
        attempts[n] += 1
        if n % 10 == 0:
            raise ValueError(f"bad {n}")
        if n % 10 == 1 and attempts[n] < 2:
            raise RuntimeError("flaky")

    async with running_worker(app, cluster_url) as worker:
        await app.publish_many("pay", [{"n": i} for i in range(100)],
                               keys=[str(i) for i in range(100)])
        await wait_idle(worker, timeout=30)
        stats = worker.stats()
    assert stats.dead_lettered == 10 and stats.handled == 90
    assert all(attempts[n] == 3 for n in range(0, 100, 10))
    assert all(attempts[n] == 2 for n in range(1, 100, 10))
    client = cluster_client(any_cluster)
    try:
        dead = [client.xlen(k + ":dlq") for k in app.stream("pay", partitions=4)]
        assert sum(dead) == 10
    finally:
        client.close()


async def test_stream_without_a_slot_of_its_own_is_refused(cluster_url: str) -> None:
    app = App(redis_url=cluster_url)

    @app.handler("plain", group="g")
    async def handle(msg: Message) -> None:
        pass

    with pytest.raises(ConfigError, match=r"partitions=N.*hash tag"):
        async with running_worker(app, cluster_url):
            pass


async def test_hash_tagged_stream_runs_on_a_cluster(cluster_url: str) -> None:
    app = App(redis_url=cluster_url)
    got: list[int] = []

    @app.handler("{plain}", group="g")
    async def handle(msg: Message) -> None:
        got.append(msg.payload)

    async with running_worker(app, cluster_url) as worker:
        await app.publish_many("{plain}", list(range(50)))
        await wait_idle(worker)
    assert sorted(got) == list(range(50))


async def test_ordered_per_key_under_concurrency_100(cluster_url: str) -> None:
    app = App(redis_url=cluster_url)
    seen: dict[str, list[int]] = {}
    running: set[str] = set()
    overlaps: list[str] = []
    failed_once: set[tuple[str, int]] = set()

    @app.handler("ev", group="o", partitions=6, ordered=True, concurrency=100,
                 retry=Retry(max_attempts=3, backoff=0.02))
    async def handle(msg: Message) -> None:
        k, n = msg.payload["k"], msg.payload["n"]
        if k in running:
            overlaps.append(k)
        running.add(k)
        try:
            await anyio.sleep(random.random() * 0.003)
            if n % 13 == 5 and (k, n) not in failed_once:
                failed_once.add((k, n))
                raise ValueError("fails once, then holds its key back until it succeeds")
            if n == 20 and k == "k7":
                raise ValueError("always: dead-lettered, then the key goes on")
            seen.setdefault(k, []).append(n)
        finally:
            running.discard(k)

    items = [{"k": f"k{i % 40}", "n": i // 40} for i in range(1000)]
    async with running_worker(app, cluster_url, concurrency=100) as worker:
        await app.publish_many("ev", items, keys=[x["k"] for x in items])
        await wait_idle(worker, timeout=60)
        stats = worker.stats()
        high_water = stats.handler("handle").high_water
    assert not overlaps
    assert stats.dead_lettered == 1
    assert high_water > 10  # different keys did run concurrently
    for k in (f"k{i}" for i in range(40)):
        expected = [n for n in range(25) if not (k == "k7" and n == 20)]
        assert seen[k] == expected, k


async def test_ordered_through_a_worker_killed_with_9(cluster_url: str, redis_url: str,
                                                     tmp_path: Path) -> None:
    """Two worker processes share 6 ordered partitions; one is killed mid-run; the other
    takes its partitions over (its name lease shows it dead) and every key's entries run
    in order, the killed worker's unfinished ones first."""
    ledger = redis.Redis.from_url(redis_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")} | {
        "ORD_LEDGER": redis_url, "STREAMFLOW_VISIBILITY_TIMEOUT": "3",
        "STREAMFLOW_RECLAIM_INTERVAL": "0.2", "STREAMFLOW_BLOCK_MS": "100"}
    procs = []
    try:
        for slot in (0, 1):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "streamflow", "run", "tests.apps.ordered:app",
                 "--redis-url", cluster_url],
                cwd=ROOT, env=env | {"STREAMFLOW_WORKER_SLOT": str(slot)},
                stdout=(tmp_path / f"worker{slot}.log").open("w"),
                stderr=subprocess.STDOUT))
        app = App(redis_url=cluster_url)
        app.stream("ord", partitions=6)
        items = [{"k": f"k{i % 30}", "n": i // 30, "sleep": 0.01} for i in range(1200)]
        await app.publish_many("ord", items, keys=[x["k"] for x in items])
        await app.aclose()
        with anyio.fail_after(30):  # both running, some work done
            while sum(ledger.llen(f"seen:k{i}") for i in range(30)) < 200:
                await anyio.sleep(0.05)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        with anyio.fail_after(60):
            while len({(k, n) for k in range(30) for n in ledger.lrange(f"seen:k{k}", 0, -1)}) < 1200:
                await anyio.sleep(0.1)
        for k in range(30):
            seen = [int(n) for n in ledger.lrange(f"seen:k{k}", 0, -1)]
            assert set(seen) == set(range(40)), k
            assert first_seen_in_order(seen), (k, seen)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        ledger.close()


async def test_jobs_on_a_cluster(cluster_url: str) -> None:
    app = App(redis_url=cluster_url)

    @app.task(queue="math")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(queue="other")
    def mul(a: int, b: int) -> int:
        return a * b

    @app.task(queue="other")
    async def sleepy() -> None:
        await anyio.sleep(30)

    async with running_worker(app, cluster_url):
        assert await (await add.enqueue(2, 3)).result(timeout=10) == 5
        assert await (await mul.enqueue_in(0.2, 4, 5)).result(timeout=10) == 20
        jobs = await add.enqueue_many([((i, i), {}) for i in range(50)])
        assert [await j.result(timeout=10) for j in jobs] == [2 * i for i in range(50)]
        first = await add.enqueue(1, 1, job_id="first")
        second = await add.enqueue(2, 2, depends_on=[first])
        assert await second.result(timeout=10) == 4
        again = await add.enqueue(1, 1, job_id="first")  # dedup by id
        assert again.id == first.id
        slow = await sleepy.enqueue()
        with anyio.fail_after(10):
            while str(await slow.status()) != "started":
                await anyio.sleep(0.05)
        await slow.cancel()
        with anyio.fail_after(10):
            while str(await slow.status()) != "cancelled":
                await anyio.sleep(0.05)


async def test_durable_publish_waits_for_a_replica(cluster_url: str) -> None:
    app = App(redis_url=cluster_url)
    app.stream("d", partitions=3)
    ids = [await app.publish("d", {"n": i}, key=str(i), durable=True) for i in range(20)]
    ids += await app.publish_many("d", [{"n": i} for i in range(20, 60)], durable=True)
    assert len(ids) == 60 and all("-" in i for i in ids)  # (partitions may repeat an id)
    client = await app.connection.client()
    assert sum([await client.xlen(k) for k in app.stream("d", partitions=3)]) == 60
    await app.aclose()


async def test_durable_publish_without_replicas_raises(redis_url: str) -> None:
    app = App(redis_url=redis_url)
    with pytest.raises(NotReplicated, match="acknowledged by 0 of 1 replica") as info:
        await app.publish("solo", {"n": 1}, durable=True, durable_timeout=0.2)
    assert info.value.entry_ids and info.value.acked == 0
    client = redis.Redis.from_url(redis_url)
    assert client.xlen("solo") == 1  # written to the master all the same
    client.close()
    with pytest.raises(ConfigError, match="durable"):
        await app.publish("solo", {"n": 1}, durable="yes")  # type: ignore[arg-type]
    await app.aclose()


async def test_failover_keeps_durable_entries_retries_and_order(make_cluster: Any) -> None:
    """Kill a master while a worker consumes (ordered, with failing entries) and a producer
    publishes with durable=True: the replica takes over, the old master is restarted and
    rejoins as its replica, the worker goes on without a restart, every durable entry is
    handled, the failing ones are dead-lettered, and each key's entries ran in order.
    Entries that ran twice are counted and reported."""
    cluster: LocalCluster = make_cluster()
    url = cluster.url
    app = App(redis_url=url)
    seen: dict[str, list[int]] = {}

    @app.handler("fo", group="fo", partitions=6, ordered=True, concurrency=50,
                 retry=Retry(max_attempts=2, backoff=0.05))
    async def handle(msg: Message) -> None:
        k, n = msg.payload["k"], msg.payload["n"]
        if n % 50 == 49:
            raise ValueError("poison")
        seen.setdefault(k, []).append(n)

    published: list[dict[str, Any]] = []
    counts = {"retried_publish": 0}
    producer = App(redis_url=url)
    producer.stream("fo", partitions=6)

    async def produce(start: int, stop: int) -> None:
        for i in range(start, stop):
            item = {"k": f"k{i % 12}", "n": i // 12}
            while True:
                try:
                    await producer.publish("fo", item, key=item["k"], durable=True,
                                           durable_timeout=0.5)
                    break
                except (NotReplicated, redis.RedisError, OSError):
                    counts["retried_publish"] += 1  # written twice at worst: at-least-once
                    await anyio.sleep(0.1)
            published.append(item)

    victim = cluster.master_of_slot(key_slot(producer.stream("fo", partitions=6)[0]))
    async with running_worker(app, url, timeout=120) as worker:
        await produce(0, 600)
        cluster.kill(victim)
        killed_at = time.monotonic()
        failover_s: list[float] = []

        async def promoted() -> None:
            await anyio.to_thread.run_sync(lambda: cluster.wait_failover(victim, timeout=30))
            failover_s.append(time.monotonic() - killed_at)
            # The promoted replica has no replica of its own until the old master comes
            # back (as its replica): until then durable publishes to its slots raise
            # NotReplicated, and the producer retries them.
            await anyio.to_thread.run_sync(lambda: cluster.restart(victim))

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce, 600, 1200)
            tg.start_soon(promoted)
        await wait_idle(worker, timeout=60)
        stats = worker.stats()
    await producer.aclose()
    expected = {(x["k"], x["n"]) for x in published if x["n"] % 50 != 49}
    got = {(k, n) for k, ns in seen.items() for n in ns}
    assert expected <= got, f"{len(expected - got)} durable entries never handled"
    for k, ns in seen.items():
        assert first_seen_in_order(ns), (k, ns)
    ran_twice = sum(len(ns) - len(set(ns)) for ns in seen.values())
    print(f"\nfailover ({cluster.kind}): {failover_s[0]:.1f} s to a promoted replica; "
          f"{ran_twice} entries ran twice (acked, not replicated: redis/redis#5433); "
          f"{counts['retried_publish']} publishes retried; dead-lettered {stats.dead_lettered}")
    assert stats.dead_lettered >= len({(x["k"], x["n"]) for x in published if x["n"] % 50 == 49})


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            out.append(event)
    return out


async def test_two_processes_share_partitions_survive_a_kill_and_drain(
        any_cluster: LocalCluster, cluster_url: str, redis_url: str, tmp_path: Path) -> None:
    """``run --processes 2`` on the cluster: both children own partitions, a child killed
    with -9 is restarted under its slot and takes its partitions back, every entry runs
    (each key in order), and SIGTERM drains both: exit 0, nothing pending."""
    ledger = redis.Redis.from_url(redis_url)
    log = tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")} | {
        "ORD_LEDGER": redis_url, "STREAMFLOW_VISIBILITY_TIMEOUT": "3",
        "STREAMFLOW_BLOCK_MS": "100", "STREAMFLOW_GRACE_PERIOD": "10"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamflow", "run", "tests.apps.ordered:app", "--processes", "2",
             "--redis-url", cluster_url, "--log-format", "json"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with anyio.fail_after(30):
            while len(_events(log, "partition_taken")) < 6 or len(
                    {e["consumer"] for e in _events(log, "partition_taken")}) < 2:
                await anyio.sleep(0.05)
        app = App(redis_url=cluster_url)
        app.stream("ord", partitions=6)
        items = [{"k": f"k{i % 12}", "n": i // 12, "sleep": 0.005} for i in range(1200)]
        await app.publish_many("ord", items, keys=[x["k"] for x in items])
        with anyio.fail_after(30):
            while sum(ledger.llen(f"seen:k{i}") for i in range(12)) < 300:
                await anyio.sleep(0.05)
        [first] = [e for e in _events(log, "worker_process_started") if e["slot"] == 0]
        os.kill(int(first["pid"]), signal.SIGKILL)
        with anyio.fail_after(30):
            while not [e for e in _events(log, "worker_process_restarted") if e["slot"] == 0]:
                await anyio.sleep(0.05)
            while len({(k, n) for k in range(12) for n in ledger.lrange(f"seen:k{k}", 0, -1)}) < 1200:
                await anyio.sleep(0.05)
        for k in range(12):
            seen = [int(n) for n in ledger.lrange(f"seen:k{k}", 0, -1)]
            assert set(seen) == set(range(100)) and first_seen_in_order(seen), k
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
        client = cluster_client(any_cluster)
        try:
            for key in app.stream("ord", partitions=6):
                [group] = client.xinfo_groups(key)
                assert group["pending"] == 0 and group["lag"] == 0, key
        finally:
            client.close()
        await app.aclose()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        ledger.close()


async def test_an_acl_user_in_the_url_reaches_every_node(any_cluster: LocalCluster,
                                                         cluster_url: str) -> None:
    """user:password in a redis+cluster:// URL authenticates on every node the client
    discovers; a wrong password is a clear start-up error."""
    for node in any_cluster.masters() + any_cluster.replicas():
        plain = redis.Redis.from_url(node.url)
        plain.execute_command("ACL", "SETUSER", "sf-cluster", "on", ">s3cret", "~*", "&*", "+@all",
                              "-flushall", "-flushdb")
        plain.close()
    host_port = cluster_url.split("://", 1)[1]
    url = f"redis+cluster://sf-cluster:s3cret@{host_port}"
    app = App(redis_url=url)
    got: list[int] = []

    @app.handler("acl", group="g", partitions=3)
    async def handle(msg: Message) -> None:
        got.append(msg.payload)

    try:
        async with running_worker(app, url) as worker:
            await app.publish_many("acl", list(range(30)))
            await wait_idle(worker)
        assert sorted(got) == list(range(30))
        bad = App(redis_url=f"redis+cluster://sf-cluster:wrong@{host_port}")

        @bad.handler("acl", group="g", partitions=3)
        async def never(msg: Message) -> None:
            pass

        with pytest.raises(Exception, match=r"(?i)auth|password|credentials"):
            async with running_worker(bad, bad.redis_url or ""):
                pass
    finally:
        for node in any_cluster.masters() + any_cluster.replicas():
            plain = redis.Redis.from_url(node.url)
            plain.execute_command("ACL", "DELUSER", "sf-cluster")
            plain.close()


async def test_durable_aof_needs_waitaof_and_appendonly(any_cluster: LocalCluster,
                                                       cluster_url: str) -> None:
    """durable="aof": Redis 7.0 has no WAITAOF, Valkey has it but these nodes run without
    appendonly: either way a ConfigError saying so (the entry itself was written)."""
    app = App(redis_url=cluster_url)
    app.stream("aof", partitions=3)
    expected = "needs WAITAOF" if any_cluster.kind == "redis" and tuple(
        any_cluster.nodes[0].server.version) < (7, 2) else "appendonly"
    with pytest.raises(ConfigError, match=expected):
        await app.publish("aof", {"n": 1}, key="a", durable="aof")
    await app.aclose()
