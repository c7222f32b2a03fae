"""Partitioned streams on one server: key names and routing, publish with ``key=``, a
consumer per partition bounded by ``concurrency``, and ``ordered=True`` shared by two
workers (partition ownership, rebalancing)."""

from __future__ import annotations

import random
import zlib
from collections import Counter

import anyio
import pytest
import redis
import structlog

from streamflow import App, ConfigError, Message
from streamflow.clustering import SLOTS, key_slot
from streamflow.partitions import partition_index, partition_keys
from streamflow.testing import make_worker, running_worker, serving, wait_idle

pytestmark = pytest.mark.anyio


def test_partition_keys_spread_over_the_slots() -> None:
    for n in (1, 3, 7, 16, 100):
        keys = partition_keys("orders", n)
        assert len(set(keys)) == n
        for i, key in enumerate(keys):
            assert key.startswith("orders:{p")
            assert i * SLOTS // n <= key_slot(key) < (i + 1) * SLOTS // n
            assert key_slot(key + ":dlq") == key_slot(key)
    # the tag depends on (i, n) only: partition i of two streams shares a slot
    assert [key_slot(k) for k in partition_keys("a", 8)] == [key_slot(k) for k in partition_keys("b", 8)]


def test_partition_index_is_crc32_of_the_key() -> None:
    assert partition_index("customer-42", 12) == zlib.crc32(b"customer-42") % 12
    assert partition_index(42, 5) == partition_index("42", 5) == partition_index(b"42", 5)
    with pytest.raises(ConfigError, match="key"):
        partition_index(4.2, 3)  # type: ignore[arg-type]


def test_bad_partition_counts_and_conflicting_declarations_are_refused() -> None:
    app = App()
    for bad in (0, -1, 1025, 2.5, True, "4"):
        with pytest.raises(ConfigError, match="partitions"):
            app.stream("s", partitions=bad)  # type: ignore[arg-type]
    app.stream("s", partitions=4)
    with pytest.raises(ConfigError, match="declared with 4 partitions"):
        @app.handler("s", group="g", partitions=8)
        async def handle(msg: Message) -> None:
            pass


async def test_publish_routes_by_key_and_keeps_it(redis_url: str) -> None:
    app = App(redis_url=redis_url)
    keys = app.stream("orders", partitions=4)
    for i in range(40):
        await app.publish("orders", {"n": i}, key=f"c{i % 5}")
    await app.publish_many("orders", [{"n": i} for i in range(40, 48)])  # round robin
    client = redis.Redis.from_url(redis_url)
    try:
        for c in range(5):
            where = {k for k in keys for _, f in client.xrange(k) if f.get(b"sf:key") == f"c{c}".encode()}
            assert where == {keys[partition_index(f"c{c}", 4)]}
        assert sum(client.xlen(k) for k in keys) == 48
        assert min(client.xlen(k) for k in keys) >= 2
    finally:
        client.close()
        await app.aclose()


async def test_partitioned_consumer_stays_within_concurrency(redis_url: str) -> None:
    app = App(redis_url=redis_url)
    seen: Counter[int] = Counter()
    keys_of: dict[str, str] = {}

    @app.handler("p", group="g", partitions=12, concurrency=20)
    async def handle(msg: Message) -> None:
        await anyio.sleep(0.001)
        seen[msg.payload["n"]] += 1
        if msg.partition_key is not None:
            assert keys_of.setdefault(msg.partition_key, msg.stream) == msg.stream

    await app.publish_many("p", [{"n": i} for i in range(3000)], keys=[str(i % 97) for i in range(3000)])
    async with running_worker(app, redis_url) as worker:
        await wait_idle(worker, timeout=30)
        stats = worker.stats().handler("handle")
    assert set(seen) == set(range(3000))
    assert stats.high_water <= 20


async def test_ordered_partitions_shared_by_two_workers(redis_url: str) -> None:
    app = App(redis_url=redis_url)
    seen: dict[str, list[int]] = {}
    running: set[str] = set()
    overlaps: list[str] = []
    consumers: dict[str, set[str]] = {}

    @app.handler("o", group="g", partitions=6, ordered=True, concurrency=50)
    async def handle(msg: Message) -> None:
        k = msg.payload["k"]
        if k in running:
            overlaps.append(k)
        running.add(k)
        try:
            await anyio.sleep(0.01 + random.random() * 0.01)
            seen.setdefault(k, []).append(msg.payload["n"])
        finally:
            running.discard(k)

    items = [{"k": f"k{i % 24}", "n": i // 24} for i in range(1200)]
    one = make_worker(app, redis_url, consumer_name="w1")
    two = make_worker(app, redis_url, consumer_name="w2")
    def owned() -> dict[str, set[str]]:
        return {w.name: {k for c in w.consumers if c.owners for k in c.owners.owned}
                for w in (one, two)}

    await app.publish_many("o", items, keys=[x["k"] for x in items])
    async with serving(one), serving(two):
        with anyio.fail_after(20):  # the newcomer gets its share while work remains
            while len(owned()["w2"]) < 3:
                await anyio.sleep(0.05)
        consumers.update(owned())
        with anyio.fail_after(30):
            while sum(map(len, seen.values())) < 1200:
                await anyio.sleep(0.05)
    assert not overlaps
    for k, ns in seen.items():
        assert ns == sorted(ns) and len(ns) == 50, k
    # the second worker got its share: 3 partitions each, none owned twice
    assert len(consumers["w1"]) == len(consumers["w2"]) == 3
    assert not consumers["w1"] & consumers["w2"]


async def test_ordered_gates_open_for_equal_ids_in_two_partitions() -> None:
    """Entry ids repeat across partitions: two final failures with the same id in two
    partitions each open their own key's gate (a gate left shut would stall the key)."""
    from streamflow import HandlerSpec, Retry
    from streamflow.runtime.ordering import KeyOrder
    from streamflow.stats import Counters
    from streamflow.testing import make_message

    async def fail(msg: Message) -> None:
        raise ValueError("no")

    failed: list[str] = []

    async def on_failure(msg: Message, exc: BaseException) -> None:
        await anyio.sleep(0.01)
        failed.append(msg.key)

    spec = HandlerSpec(func=fail, name="fail", streams=("a", "b"), group="g",
                       retry=Retry(max_attempts=1))
    order = KeyOrder(fail, spec, on_failure=on_failure, counters=Counters(), log=structlog.get_logger())
    msgs = [make_message(fields={"sf:json": "1", "sf:key": "k"}, stream=s, id="5-0") for s in ("a", "b")]

    async def run(msg: Message) -> None:
        try:
            await order.handle(msg)
        except ValueError as exc:
            await order.on_failure(msg, exc)

    async with anyio.create_task_group() as tg:
        for msg in msgs:
            tg.start_soon(run, msg)
    assert sorted(failed) == ["a", "b"]
    assert not order._gates and not order._holding  # every gate opened and was dropped
