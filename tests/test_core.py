"""Behavioural tests of the core runtime (App, Consumer, AckBuffer, Worker) against real servers.

Every test runs a :class:`~streamflow.Worker` in-process against a private Redis 7 and/or
Valkey 9 server from the ``streamflow.testing`` fixtures, and checks the outcome on the
server itself (XPENDING, XINFO GROUPS, INFO commandstats, the dead-letter stream).
"""

from __future__ import annotations

import collections
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from streamflow import App, ConfigError, Message, Retry, Settings
from streamflow.deadletter import parse_record
from streamflow.keys import RETRY_CONSUMER
from streamflow.testing import passes, running_worker, wait_until


@asynccontextmanager
async def client(url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain redis.asyncio client (str replies), as a producer outside streamflow would use."""
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        yield r
    finally:
        await r.aclose()


async def command_calls(r: aioredis.Redis, command: str) -> int:
    """How many times ``command`` ran since the last CONFIG RESETSTAT (INFO commandstats)."""
    stats = await r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def group_info(r: aioredis.Redis, stream: str, group: str) -> dict[str, Any]:
    """The XINFO GROUPS row of ``group`` on ``stream``."""
    for row in await r.xinfo_groups(stream):
        if row["name"] == group:
            return dict(row)
    raise AssertionError(f"group {group!r} not found on {stream!r}")


# -- 1. what a handler sees ----------------------------------------------------------------


@pytest.mark.anyio
async def test_raw_and_json_entries_reach_the_handler_unchanged(any_redis_url: str) -> None:
    """Raw entries from a plain redis client arrive as-is in fields and payload; publish() JSON is decoded."""
    app = App(any_redis_url)
    seen: dict[tuple[str, str], tuple[dict[str, str], Any]] = {}  # (stream, id) -> what arrived

    @app.handler("my_task_stream", group="squares")
    async def squares(msg: Message) -> None:
        seen[msg.stream, msg.id] = (msg.fields, msg.payload)

    @app.handler("image_resize_tasks", group="resizer")
    async def resize(msg: Message) -> None:
        seen[msg.stream, msg.id] = (msg.fields, msg.payload)

    task_id = str(uuid.uuid4())
    payload = {"n": 4, "name": "café ☕", "items": [1, None, True, 2.5], "nested": {"a": "b"}}
    async with client(any_redis_url) as r, running_worker(app, any_redis_url):
        square_id = await r.execute_command(
            "XADD", "my_task_stream", "*", "task_type", "calculate_square", "number", "4"
        )
        image_id = await r.execute_command(
            "XADD", "image_resize_tasks", "*", "image_path", "/p/1.jpg", "task_id", task_id
        )
        json_id = await app.publish("my_task_stream", payload)
        await wait_until(lambda: len(seen) == 3, what="3 messages handled")

    square = {"task_type": "calculate_square", "number": "4"}
    assert seen["my_task_stream", square_id] == (square, square)
    image = {"image_path": "/p/1.jpg", "task_id": task_id}
    assert seen["image_resize_tasks", image_id] == (image, image)
    fields, decoded = seen["my_task_stream", json_id]
    assert decoded == payload
    assert list(fields) == ["sf:json"]
    assert json.loads(fields["sf:json"]) == payload


# -- 2. exactly once, everything acked -------------------------------------------------------


@pytest.mark.anyio
async def test_every_published_message_is_handled_exactly_once_and_acked(any_redis_url: str) -> None:
    """5000 published messages are each handled exactly once, none fail, and nothing stays pending."""
    n = 5000
    app = App(any_redis_url)
    counts: collections.Counter[str] = collections.Counter()
    values: set[int] = set()

    @app.handler("jobs", group="workers")
    async def work(msg: Message) -> None:
        counts[msg.id] += 1
        values.add(msg.payload["i"])

    async with client(any_redis_url) as r:
        async with running_worker(app, any_redis_url) as worker:
            ids = await app.publish_many("jobs", ({"i": i} for i in range(n)))
            await wait_until(lambda: sum(counts.values()) >= n, what=f"{n} handler calls")
        assert set(counts) == set(ids)
        assert max(counts.values()) == 1
        assert values == set(range(n))
        stats = worker.stats()
        assert stats.handled == n
        assert stats.failed == 0
        assert stats.dead_lettered == 0
        assert (stats.acked, stats.ack_missing) == (n, 0)
        assert (await r.xpending("jobs", "workers"))["pending"] == 0
        info = await group_info(r, "jobs", "workers")
        assert info["pending"] == 0
        assert info["lag"] == 0
        assert info["last-delivered-id"] == ids[-1]


# -- 3. pipelined acks ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_acks_are_batched_into_few_xack_calls(any_redis_url: str) -> None:
    """All 5000 entries are acked with far fewer XACK commands than entries (acks are batched)."""
    n = 5000
    app = App(any_redis_url)
    handled = 0

    @app.handler("batched", group="g")
    async def work(msg: Message) -> None:
        nonlocal handled
        handled += 1

    async with client(any_redis_url) as r:
        async with running_worker(app, any_redis_url):
            await r.config_resetstat()
            await app.publish_many("batched", range(n))
            await wait_until(lambda: handled >= n, what=f"{n} handled")
        xacks = await command_calls(r, "xack")
        assert (await r.xpending("batched", "g"))["pending"] == 0
        assert 1 <= xacks < n / 10, f"{xacks} XACK calls for {n} entries"


# -- 4. bounded concurrency -------------------------------------------------------------------


@pytest.mark.anyio
async def test_in_flight_handlers_never_exceed_concurrency(redis_url: str) -> None:
    """At most `concurrency` handlers run at once, and the limit is actually reached under load."""
    concurrency = 8
    app = App(redis_url)
    current = peak = done = 0

    @app.handler("bounded", group="g", concurrency=concurrency)
    async def work(msg: Message) -> None:
        nonlocal current, peak, done
        current += 1
        peak = max(peak, current)
        try:
            await anyio.sleep(0.02)  # the handler's work: keeps its slot busy
        finally:
            current -= 1
            done += 1

    async with running_worker(app, redis_url) as worker:
        await app.publish_many("bounded", range(200))
        await wait_until(lambda: done >= 200, what="200 handled")
    assert peak == concurrency
    assert worker.stats().high_water == concurrency


@pytest.mark.anyio
@pytest.mark.parametrize(("readers", "concurrency"), [(1, 5), (2, 5), (2, 1), (4, 7)])
async def test_entries_taken_never_exceed_concurrency_with_several_read_loops(
    redis_url: str, readers: int, concurrency: int
) -> None:
    """With any number of read loops, entries taken from Redis and not finished (queued plus
    running) never exceed `concurrency`: memory is bounded by it, not by the backlog."""
    app = App(redis_url)
    seen: list[int] = []
    done = 0

    @app.handler("taken", group="g", concurrency=concurrency)
    async def work(msg: Message) -> None:
        nonlocal done
        seen.append(worker.stats().in_flight)
        await anyio.sleep(0.002)  # the handler's work
        seen.append(worker.stats().in_flight)
        done += 1

    async with running_worker(app, redis_url, readers=readers, batch_size=1000) as worker:
        await app.publish_many("taken", range(300))
        await wait_until(lambda: done >= 300, what="300 handled")
    assert max(seen) == concurrency, max(seen)


@pytest.mark.anyio
async def test_reads_blocked_on_an_idle_stream_hold_one_slot_each(redis_url: str) -> None:
    """On an idle stream each read loop's blocked read holds a single slot (after its first empty
    read), leaving the rest to the reclaimer; a backlog gets whole batches again."""
    app = App(redis_url)
    done = 0

    @app.handler("idle", group="g", concurrency=30)
    async def work(msg: Message) -> None:
        nonlocal done
        done += 1

    async with running_worker(app, redis_url, readers=2, block_ms=100) as worker:
        # Both loops start asking for a batch of 10; after its first empty read each asks for 1.
        await wait_until(lambda: worker.stats().handlers[0].free == 30 - 2,
                         what="both read loops to hold one slot each",
                         detail=lambda: repr(worker.stats().handlers[0]))
        await passes(worker, read=4)  # and they keep to one while their reads come back empty
        assert worker.stats().handlers[0].free == 30 - 2
        reads_before = worker.stats().reads
        await app.publish_many("idle", range(3000))
        await wait_until(lambda: done >= 3000, what="3000 handled")
        # 3000 entries at up to 10 per read (30 slots, 2 loops): ramping up from 1 costs a few
        # extra reads, not one per entry.
        assert worker.stats().reads - reads_before < 3000 / 10 + 50, worker.stats().reads - reads_before


@pytest.mark.anyio
async def test_settings_concurrency_overrides_the_handler_limit(redis_url: str) -> None:
    """Settings.concurrency (the --concurrency option) caps every handler below its own limit."""
    app = App(redis_url)
    current = peak = done = 0

    @app.handler("capped", group="g", concurrency=50)
    async def work(msg: Message) -> None:
        nonlocal current, peak, done
        current += 1
        peak = max(peak, current)
        await anyio.sleep(0.02)  # the handler's work: keeps its slot busy
        current -= 1
        done += 1

    async with running_worker(app, redis_url, concurrency=3) as worker:
        await app.publish_many("capped", range(30))
        await wait_until(lambda: done >= 30, what="30 handled")
    assert peak == 3
    assert worker.stats().high_water == 3


# -- 5. streams and groups ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_handler_reads_two_streams(redis_url: str) -> None:
    """A handler registered on two streams gets the entries of both, each tagged with its stream."""
    app = App(redis_url)
    got: list[tuple[str, int]] = []

    @app.handler("left", "right", group="both")
    async def work(msg: Message) -> None:
        got.append((msg.stream, msg.payload))

    async with running_worker(app, redis_url):
        for i in range(5):
            await app.publish("left", i)
            await app.publish("right", 100 + i)
        await wait_until(lambda: len(got) == 10, what="10 handled")
    assert sorted(got) == [("left", i) for i in range(5)] + [("right", 100 + i) for i in range(5)]


@pytest.mark.anyio
async def test_two_groups_on_one_stream_each_get_every_message(redis_url: str) -> None:
    """Two handlers on the same stream with default (qualname-derived) groups each get every entry."""
    app = App(redis_url)
    first: list[str] = []
    second: list[str] = []

    @app.handler("events")
    async def audit(msg: Message) -> None:
        first.append(msg.id)

    @app.handler("events")
    async def notify(msg: Message) -> None:
        second.append(msg.id)

    def expected_group(func: Any) -> str:
        return re.sub(r"[^A-Za-z0-9_.:\-]", "_", f"{func.__module__}.{func.__qualname__}")

    async with client(redis_url) as r:
        async with running_worker(app, redis_url) as worker:
            ids = await app.publish_many("events", range(50))
            await wait_until(lambda: len(first) == 50 and len(second) == 50, what="both groups")
        groups = sorted(g["name"] for g in await r.xinfo_groups("events"))
        assert groups == sorted([expected_group(audit), expected_group(notify)])
        assert [h.group for h in worker.stats().handlers] == [
            expected_group(audit), expected_group(notify)]
        assert expected_group(audit) == (
            "test_core.test_two_groups_on_one_stream_each_get_every_message._locals_.audit"
        )
        for g in groups:
            assert (await group_info(r, "events", g))["pending"] == 0
    assert sorted(first) == sorted(ids)
    assert sorted(second) == sorted(ids)


def test_same_group_twice_on_a_stream_is_refused() -> None:
    """Registering two handlers with the same group on the same stream raises ConfigError('group')."""
    app = App("redis://127.0.0.1:1/0")

    @app.handler("s", group="g")
    async def one(msg: Message) -> None: ...

    with pytest.raises(ConfigError) as info:

        @app.handler("s", group="g")
        async def two(msg: Message) -> None: ...

    assert info.value.setting == "group"


# -- 6. failing handlers ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_failing_handler_does_not_stop_the_worker_and_is_not_acked(
    any_redis_url: str,
) -> None:
    """A raising handler leaves its entry pending on the retry consumer while other entries are handled."""
    app = App(any_redis_url)
    ok: list[int] = []

    @app.handler("mixed", group="g", retry=Retry(max_attempts=3, backoff=60, max_backoff=60))
    async def work(msg: Message) -> None:
        if msg.payload == "bad":
            raise ValueError("this one is broken")
        ok.append(msg.payload)

    async with client(any_redis_url) as r:
        async with running_worker(app, any_redis_url) as worker:
            await app.publish_many("mixed", range(10))
            bad_id = await app.publish("mixed", "bad")
            await app.publish_many("mixed", range(10, 20))
            await wait_until(lambda: len(ok) == 20 and worker.stats().retried == 1, what="20 ok, 1 parked")
            # the worker is still consuming after the failure
            await app.publish("mixed", 99)
            await wait_until(lambda: 99 in ok, what="message after the failure")
        assert worker.stats().failed == 1
        assert worker.stats().dead_lettered == 0
        rows = await r.xpending_range("mixed", "g", "-", "+", 10)
        assert [(row["message_id"], row["consumer"]) for row in rows] == [(bad_id, RETRY_CONSUMER)]
        assert await r.xlen("mixed:dlq") == 0
    assert sorted(ok) == [*range(20), 99]


@pytest.mark.anyio
async def test_failed_entry_is_retried_then_dead_lettered(redis_url: str) -> None:
    """An always-failing entry is delivered max_attempts times, then moved to <stream>:dlq and acked."""
    app = App(redis_url)
    attempts: list[int] = []

    @app.handler("flaky", group="g", retry=Retry(max_attempts=3, backoff=0.05, jitter=0))
    async def work(msg: Message) -> None:
        attempts.append(msg.attempt)
        raise RuntimeError(f"attempt {msg.attempt} failed")

    async with client(redis_url) as r:
        async with running_worker(app, redis_url) as worker:
            bad_id = await app.publish("flaky", {"x": 1})
            await wait_until(lambda: worker.stats().dead_lettered == 1, what="dead letter")
        assert attempts == [1, 2, 3]
        assert (await r.xpending("flaky", "g"))["pending"] == 0
    records = await _dlq_records(redis_url, "flaky:dlq")
    assert len(records) == 1
    rec = records[0]
    assert (rec.stream, rec.id, rec.group, rec.attempts) == ("flaky", bad_id, "g", 3)
    assert rec.error_type == "RuntimeError"
    assert rec.error == "attempt 3 failed"
    assert json.loads(rec.fields["sf:json"]) == {"x": 1}


async def _dlq_records(url: str, dlq: str) -> list[Any]:
    r = aioredis.Redis.from_url(url, decode_responses=False)
    r.set_response_callback("XRANGE", lambda response, **_: response)  # flat field lists
    try:
        rows = await r.execute_command("XRANGE", dlq, "-", "+")
    finally:
        await r.aclose()
    return [parse_record(rid, fields) for rid, fields in rows]


# -- 8. NOGROUP recovery --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_worker_recovers_from_flushall_without_busy_looping(any_redis_url: str) -> None:
    """After FLUSHALL the worker recreates its group, handles new entries, and polls at a modest rate."""
    app = App(any_redis_url)
    got: list[int] = []

    @app.handler("survivor", group="g")
    async def work(msg: Message) -> None:
        got.append(msg.payload)

    async with client(any_redis_url) as r, running_worker(app, any_redis_url) as worker:
        await app.publish_many("survivor", range(5))
        await wait_until(lambda: len(got) == 5, what="5 before the flush")
        await r.flushall()
        # The readers' next XREADGROUP fails with NOGROUP; they recreate the group (and the
        # stream), and read from it again.
        await wait_until(lambda: r.exists("survivor"), what="the group recreated")
        await passes(worker, read=2)
        await app.publish_many("survivor", range(5, 10))
        await wait_until(lambda: len(got) == 10, what="5 after the flush")
        assert "g" in [g["name"] for g in await r.xinfo_groups("survivor")]
        await r.config_resetstat()
        await anyio.sleep(1.0)  # the behaviour under test: how many reads one idle second costs
        reads = await command_calls(r, "xreadgroup")
        # block_ms=100: about 10 reads a second when idle; a busy loop makes thousands
        assert reads < 50, f"{reads} XREADGROUP calls in 1 s while idle"
    assert sorted(got) == list(range(10))


@pytest.mark.anyio
async def test_worker_recovers_when_flushed_while_idle_before_any_read(redis_url: str) -> None:
    """A worker that never read anything recreates its group from 0 after FLUSHALL and gets new entries."""
    app = App(redis_url)
    got: list[int] = []

    @app.handler("fresh", group="g")
    async def work(msg: Message) -> None:
        got.append(msg.payload)

    async with client(redis_url) as r, running_worker(app, redis_url):
        await r.flushall()
        await app.publish("fresh", 1)
        await wait_until(lambda: got == [1], what="entry after flush")


# -- 10. settings validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 2.5}, "concurrency"),
        ({"grace_period": -1}, "grace_period"),
        ({"block_ms": 0}, "block_ms"),
        ({"ack_interval": "fast"}, "ack_interval"),
        ({"redis_url": "localhost:6379"}, "redis_url"),
        ({"redis_url": "http://localhost:6379"}, "redis_url"),
        ({"log_level": "loud"}, "log_level"),
        ({"log_format": "xml"}, "log_format"),
        ({"visibility_timeout": 5, "reclaim_interval": 10}, "reclaim_interval"),
        ({"consumer_name": "has space"}, "consumer_name"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_setting(
    overrides: dict[str, Any], setting: str
) -> None:
    """Each invalid setting is refused with a ConfigError that names it."""
    with pytest.raises(ConfigError) as info:
        Settings.load(overrides, env={})
    assert info.value.setting == setting
    assert setting in str(info.value)


def test_bad_env_setting_raises_config_error_naming_the_variable() -> None:
    """A non-numeric STREAMFLOW_* number is refused with a ConfigError naming the variable."""
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"STREAMFLOW_GRACE_PERIOD": "abc"})
    assert info.value.setting == "STREAMFLOW_GRACE_PERIOD"
    assert "abc" in str(info.value)


@pytest.mark.parametrize("setting", ["grace_period", "visibility_timeout", "ack_interval"])
def test_nan_settings_are_refused(setting: str) -> None:
    """NaN is not a valid duration: ConfigError names the setting."""
    with pytest.raises(ConfigError) as info:
        Settings.load({setting: math.nan}, env={})
    assert info.value.setting == setting


@pytest.mark.parametrize("setting", ["batch_size", "readers", "block_ms", "ack_batch"])
def test_fractional_counts_are_refused(setting: str) -> None:
    """Counts (batch_size, readers, block_ms, ack_batch) must be whole numbers: ConfigError names them."""
    with pytest.raises(ConfigError) as info:
        Settings.load({setting: 2.5}, env={})
    assert info.value.setting == setting


def test_non_string_log_level_is_a_config_error() -> None:
    """A non-string log_level raises ConfigError('log_level'), not an AttributeError."""
    with pytest.raises(ConfigError) as info:
        Settings.load({"log_level": 10}, env={})
    assert info.value.setting == "log_level"


def test_bad_handler_options_raise_config_error() -> None:
    """Bad handler registrations (concurrency 0, sync function, bad stream name) raise ConfigError."""
    app = App("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError) as info:
        app.handler("s", concurrency=0)
    assert info.value.setting == "concurrency"
    with pytest.raises(ConfigError) as info:
        app.handler("bad stream")
    assert info.value.setting == "stream name"

    def sync_handler(msg: Message) -> None: ...

    with pytest.raises(ConfigError) as info:
        app.handler("s")(sync_handler)  # type: ignore[arg-type]
    assert info.value.setting == "handler"


# -- 11. invalid JSON goes to the dead-letter stream ----------------------------------------------


@pytest.mark.anyio
async def test_invalid_json_payload_is_dead_lettered_and_worker_continues(
    any_redis_url: str,
) -> None:
    """An sf:json entry with invalid JSON goes to <stream>:dlq at once (no retry); the worker goes on."""
    app = App(any_redis_url)
    good: list[Any] = []
    calls = 0

    @app.handler("orders", group="billing")
    async def bill(msg: Message) -> None:
        nonlocal calls
        calls += 1
        good.append(msg.payload)

    async with client(any_redis_url) as r:
        async with running_worker(app, any_redis_url) as worker:
            bad_id = await r.execute_command("XADD", "orders", "*", "sf:json", "{not json")
            await wait_until(lambda: worker.stats().dead_lettered == 1, what="dead letter")
            await app.publish("orders", {"order_id": 7})
            await wait_until(lambda: good == [{"order_id": 7}], what="next order")
        assert calls == 2
        assert worker.stats().retried == 0
        assert (await r.xpending("orders", "billing"))["pending"] == 0
    records = await _dlq_records(any_redis_url, "orders:dlq")
    assert len(records) == 1
    rec = records[0]
    assert (rec.stream, rec.id, rec.group, rec.attempts) == ("orders", bad_id, "billing", 1)
    assert rec.error_type == "PayloadError"
    assert "invalid JSON" in rec.error
    assert rec.fields == {"sf:json": "{not json"}
    assert rec.handler.endswith("bill")


# -- grace period ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_grace_period_expiry_cancels_handlers_and_leaves_entries_pending(
    redis_url: str,
) -> None:
    """Handlers still running when the grace period ends are cancelled and their entries stay pending."""
    app = App(redis_url)
    started: list[str] = []
    cancelled: list[str] = []

    @app.handler("stuck", group="g", concurrency=4)
    async def work(msg: Message) -> None:
        started.append(msg.id)
        try:
            await anyio.sleep(30)  # a handler that outlives the grace period
        except anyio.get_cancelled_exc_class():
            cancelled.append(msg.id)
            raise

    async with client(redis_url) as r:
        async with running_worker(app, redis_url, grace_period=0.3) as worker:
            ids = await app.publish_many("stuck", range(4))
            await wait_until(lambda: len(started) == 4, what="4 handlers running")
            t0 = time.monotonic()
        elapsed = time.monotonic() - t0
        assert elapsed < 5, f"stop took {elapsed:.1f}s with grace_period=0.3"
        assert sorted(cancelled) == sorted(ids)
        assert worker.stats().handled == 0
        rows = await r.xpending_range("stuck", "g", "-", "+", 10)
        assert sorted(row["message_id"] for row in rows) == sorted(ids)
        assert {row["consumer"] for row in rows} == {worker.name}
