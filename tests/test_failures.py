"""Failure semantics of a handler: retries with backoff, timeouts, rejects, payload errors,
dead-lettering (record layout) and the DEAD_LETTER / REPLAY scripts.

Every test runs real workers in-process against a private server (``redis_url`` is the
system Redis 7, ``any_redis_url`` runs on Redis 7 and Valkey 9).
"""

from __future__ import annotations

import json
import time
from itertools import pairwise
from typing import Any

import anyio
import pytest
from failapps.support import pending_count, raw_client
from redis.exceptions import ResponseError

from streamflow import App, Message, Reject, Retry, scripts
from streamflow.deadletter import parse_record
from streamflow.testing import running_worker, wait_until

pytestmark = pytest.mark.anyio


def _pairs(raw: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(raw[::2], raw[1::2], strict=True))


async def _dlq_records(client: Any, dlq: str) -> list[tuple[bytes, list[bytes]]]:
    return [(r[0], r[1]) for r in await client.execute_command("XRANGE", dlq, "-", "+") or []]


async def test_fails_twice_then_succeeds_with_backoff(any_redis_url: str) -> None:
    """A handler failing twice then succeeding runs 3 times (attempts 1, 2, 3) with its backoff
    honoured, and is acked once."""
    backoff, reclaim = 0.3, 0.1
    retry = Retry(max_attempts=5, backoff=backoff, jitter=0)
    seen: list[tuple[int, float]] = []
    async with App(redis_url=any_redis_url) as app:

        @app.handler("jobs", group="g", retry=retry)
        async def flaky(msg: Message) -> None:
            seen.append((msg.attempt, time.monotonic()))
            if msg.attempt < 3:
                raise RuntimeError(f"boom {msg.attempt}")

        async with (raw_client(any_redis_url) as client,
                    running_worker(app, any_redis_url, reclaim_interval=reclaim) as w):
            await app.publish("jobs", {"n": 1})
            await wait_until(lambda: w.stats().handled == 1, what="third attempt to succeed")
            await wait_until(lambda: w.stats().acked == 1, what="the ack")
            assert await pending_count(client, "jobs", "g") == 0
            assert int(await client.execute_command("XLEN", "jobs:dlq")) == 0

    assert [a for a, _ in seen] == [1, 2, 3]
    assert (w.stats().handled, w.stats().failed, w.stats().retried, w.stats().dead_lettered) == (1, 2, 2, 0)
    assert w.stats().acked == 1
    # The gap between attempt k and k+1 is never shorter than the backoff delay after
    # attempt k (0.3 s, then 0.6 s; 1 ms tolerance for Redis' millisecond idle clock) and
    # at most one reclaim pass plus 0.5 s of scheduling slack later.
    for (attempt, t0), (_, t1) in pairwise(seen):
        delay = retry.base_delay(attempt)
        gap = t1 - t0
        assert gap >= delay - 0.001, (attempt, gap, delay)
        assert gap <= delay + reclaim + 0.5, (attempt, gap, delay)


@pytest.mark.parametrize("readers", [1, 2, 3])
async def test_retries_reach_a_single_slot_while_readers_wait_on_an_idle_stream(
    redis_url: str, readers: int
) -> None:
    """With concurrency 1 and reads blocked on an idle stream (holding the only slot in turns),
    the reclaimer still gets the slot for a due retry: the retry runs within its backoff plus a
    few read timeouts."""
    backoff, reclaim, block_ms = 0.2, 0.1, 100
    seen: list[tuple[int, float]] = []
    async with App(redis_url=redis_url) as app:

        @app.handler("jobs", group="g", concurrency=1,
                     retry=Retry(max_attempts=3, backoff=backoff, jitter=0))
        async def flaky(msg: Message) -> None:
            seen.append((msg.attempt, time.monotonic()))
            if msg.attempt == 1:
                raise RuntimeError("first attempt fails")

        async with running_worker(app, redis_url, reclaim_interval=reclaim, block_ms=block_ms,
                                  readers=readers) as w:
            await app.publish("jobs", {"n": 1})
            await wait_until(lambda: w.stats().handled == 1, what="the retry to succeed")
    assert [a for a, _ in seen] == [1, 2]
    gap = seen[1][1] - seen[0][1]
    assert gap <= backoff + reclaim + 5 * block_ms / 1000 + 0.5, gap


async def test_always_failing_goes_to_dlq_with_metadata(any_redis_url: str) -> None:
    """An always-failing handler dead-letters the entry after max_attempts with the full record
    layout, and the entry is acked."""
    calls: list[tuple[str, int]] = []
    async with App(redis_url=any_redis_url) as app:

        @app.handler("orders", group="billing",
                     retry=Retry(max_attempts=3, backoff=0.05, jitter=0))
        async def bill(msg: Message) -> None:
            calls.append((msg.id, msg.attempt))
            raise ValueError("bad order 7")

        async with raw_client(any_redis_url) as client, running_worker(app, any_redis_url) as w:
            t0 = int(time.time() * 1000)
            json_id = await app.publish("orders", {"order_id": 7})
            raw_id = await app.publish_fields("orders", {"k": "v", "bin": b"\xff\x00\x01"})
            await wait_until(lambda: w.stats().dead_lettered == 2, what="both dead-lettered")
            t1 = int(time.time() * 1000)
            assert await pending_count(client, "orders", "billing") == 0
            records = await _dlq_records(client, "orders:dlq")
            originals = {
                r[0].decode(): r[1]
                for r in await client.execute_command("XRANGE", "orders", "-", "+")
            }

    spec = app.handlers[0]
    assert sorted(calls) == sorted([(json_id, a) for a in (1, 2, 3)] + [(raw_id, a) for a in (1, 2, 3)])
    assert len(records) == 2
    by_id = {_pairs(raw)[b"dlq:id"].decode(): (dlq_id, raw) for dlq_id, raw in records}
    assert set(by_id) == {json_id, raw_id}
    for entry_id, (dlq_id, raw) in by_id.items():
        f = _pairs(raw)
        assert f[b"dlq:stream"] == b"orders"
        assert f[b"dlq:group"] == b"billing"
        assert f[b"dlq:consumer"] == w.name.encode()
        assert f[b"dlq:attempts"] == b"3"
        assert f[b"dlq:error_type"] == b"ValueError"
        assert f[b"dlq:error"] == b"bad order 7"
        assert f[b"dlq:handler"] == spec.name.encode()
        assert t0 <= int(f[b"dlq:failed_at"]) <= t1
        assert b"ValueError: bad order 7" in f[b"dlq:traceback"]
        original = originals[entry_id]  # still in the stream: dead-lettering does not XDEL
        assert [k for k in raw if k.startswith(b"f:")] == [b"f:" + k for k in original[::2]]
        rec = parse_record(dlq_id, raw)
        assert (rec.stream, rec.id, rec.group, rec.attempts) == ("orders", entry_id, "billing", 3)
        assert (rec.error_type, rec.error, rec.handler) == ("ValueError", "bad order 7", spec.name)
        assert rec.consumer == w.name
        assert rec.original == original  # byte for byte
    assert _pairs(by_id[json_id][1])[b"f:sf:json"] == b'{"order_id":7}'
    assert parse_record(*by_id[json_id]).fields == {"sf:json": '{"order_id":7}'}
    assert _pairs(by_id[raw_id][1])[b"f:bin"] == b"\xff\x00\x01"
    assert parse_record(*by_id[raw_id]).fields["k"] == "v"


async def test_timeout_is_a_failed_attempt(redis_url: str) -> None:
    """A handler exceeding its timeout is cancelled, counts as a failed attempt and ends in the DLQ
    as HandlerTimeout."""
    started: list[int] = []
    finished: list[int] = []
    async with App(redis_url=redis_url) as app:

        @app.handler("slow", group="g", timeout=0.2,
                     retry=Retry(max_attempts=2, backoff=0.05, jitter=0))
        async def sleepy(msg: Message) -> None:
            started.append(msg.attempt)
            await anyio.sleep(2.0)  # the handler's work: 10x its timeout
            finished.append(msg.attempt)

        async with raw_client(redis_url) as client, running_worker(app, redis_url) as w:
            entry_id = await app.publish("slow", {"n": 1})
            await wait_until(lambda: w.stats().dead_lettered == 1, what="dead-lettered")
            assert await pending_count(client, "slow", "g") == 0
            records = await _dlq_records(client, "slow:dlq")

    assert started == [1, 2]
    assert finished == []
    assert w.stats().failed == 2
    assert len(records) == 1
    rec = parse_record(*records[0])
    assert (rec.id, rec.attempts, rec.error_type) == (entry_id, 2, "HandlerTimeout")
    assert "timed out after 0.2s" in rec.error


async def test_reject_and_bad_payloads_dead_letter_at_once(redis_url: str) -> None:
    """Reject, invalid JSON and an over-size JSON payload dead-letter at attempt 1 without
    retries."""
    calls: dict[str, list[int]] = {"r": [], "j": [], "big": []}
    retry = Retry(max_attempts=5, backoff=0.05, jitter=0)
    async with App(redis_url=redis_url) as app:

        @app.handler("r", group="g", retry=retry)
        async def rejecting(msg: Message) -> None:
            calls["r"].append(msg.attempt)
            raise Reject("not for us")

        @app.handler("j", group="g", retry=retry)
        async def json_reader(msg: Message) -> None:
            calls["j"].append(msg.attempt)
            msg.payload  # noqa: B018  (decoding is what fails)

        @app.handler("big", group="g", retry=retry)
        async def big_reader(msg: Message) -> None:
            calls["big"].append(msg.attempt)
            msg.payload  # noqa: B018

        async with (raw_client(redis_url) as client,
                    running_worker(app, redis_url, max_payload_bytes=64) as w):
            ids = {
                "r": await app.publish("r", {"n": 1}),
                "j": (await client.execute_command("XADD", "j", "*", "sf:json", b"{nope")).decode(),
                "big": (await client.execute_command(
                    "XADD", "big", "*", "sf:json", json.dumps("x" * 200))).decode(),
            }
            await wait_until(lambda: w.stats().dead_lettered == 3,
                             what="three dead-lettered entries")
            for stream in ids:
                assert await pending_count(client, stream, "g") == 0
            records = {s: await _dlq_records(client, f"{s}:dlq") for s in ids}

    assert calls == {"r": [1], "j": [1], "big": [1]}
    assert w.stats().retried == 0
    expected = {"r": ("Reject", "not for us"), "j": ("PayloadError", "invalid JSON payload"),
                "big": ("PayloadTooLarge", "more than max_payload_bytes=64")}
    for stream, (error_type, error) in expected.items():
        assert len(records[stream]) == 1
        rec = parse_record(*records[stream][0])
        assert (rec.id, rec.attempts, rec.error_type) == (ids[stream], 1, error_type)
        assert error in rec.error


async def test_oversize_raw_entry_dead_letters(redis_url: str) -> None:
    """A raw field-map entry larger than max_payload_bytes is dead-lettered as PayloadTooLarge, like
    a JSON one."""
    seen: list[int] = []
    async with App(redis_url=redis_url) as app:

        @app.handler("raw", group="g", retry=Retry(max_attempts=2, backoff=0.05, jitter=0))
        async def reader(msg: Message) -> None:
            msg.payload  # noqa: B018
            seen.append(len(msg.fields["blob"]))

        async with (raw_client(redis_url) as client,
                    running_worker(app, redis_url, max_payload_bytes=64) as w):
            await client.execute_command("XADD", "raw", "*", "blob", "x" * 500)
            await wait_until(lambda: w.stats().finished == 1, what="the entry to finish")
            records = await _dlq_records(client, "raw:dlq")

    assert seen == []
    assert len(records) == 1
    assert parse_record(*records[0]).error_type == "PayloadTooLarge"


async def test_dlq_replay_round_trip(any_redis_url: str) -> None:
    """A dead-lettered entry replayed with the REPLAY script comes back byte for byte, leaves the
    DLQ, and cannot be replayed twice."""
    state = {"reject": True}
    seen: list[tuple[str, int, list[bytes] | None]] = []
    async with App(redis_url=any_redis_url) as app:

        @app.handler("tasks", group="g")
        async def handle(msg: Message) -> None:
            seen.append((msg.id, msg.attempt, msg.raw_fields))
            if state["reject"]:
                raise Reject("later")

        async with raw_client(any_redis_url) as client, running_worker(app, any_redis_url) as w:
            first_id = await app.publish_fields("tasks", {"a": "1", "bin": b"\x00\xfe"})
            await wait_until(lambda: w.stats().dead_lettered == 1, what="dead-lettered")
            (dlq_id, raw), = await _dlq_records(client, "tasks:dlq")
            rec = parse_record(dlq_id, raw)
            assert rec.original == [b"a", b"1", b"bin", b"\x00\xfe"]

            state["reject"] = False
            new_id = await client.eval(scripts.REPLAY, 2, "tasks:dlq", "tasks", rec.dlq_id,
                                       *rec.original)
            assert new_id
            new_id = new_id.decode()
            assert new_id > first_id
            await wait_until(lambda: w.stats().handled == 1, what="the replayed entry")
            assert await _dlq_records(client, "tasks:dlq") == []
            again = await client.eval(scripts.REPLAY, 2, "tasks:dlq", "tasks", rec.dlq_id,
                                      *rec.original)
            assert again is None
            assert int(await client.execute_command("XLEN", "tasks")) == 2
            await wait_until(lambda: w.stats().acked == 1, what="the ack")
            assert await pending_count(client, "tasks", "g") == 0

    assert [(i, a) for i, a, _ in seen] == [(first_id, 1), (new_id, 1)]
    assert seen[1][2] == [b"a", b"1", b"bin", b"\x00\xfe"]


async def test_dead_letter_script_only_moves_pending_entries(any_redis_url: str) -> None:
    """DEAD_LETTER acks and records a pending entry exactly once and does nothing for an entry that
    is not pending."""
    async with raw_client(any_redis_url) as client:
        await client.execute_command("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM")
        entry = await client.execute_command("XADD", "s", "*", "k", "v")
        await client.execute_command("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">")
        record = ["dlq:stream", "s", "dlq:id", entry, "f:k", "v"]
        first = await client.eval(scripts.DEAD_LETTER, 2, "s", "s:dlq", "g", entry, *record)
        assert first
        assert await pending_count(client, "s", "g") == 0
        second = await client.eval(scripts.DEAD_LETTER, 2, "s", "s:dlq", "g", entry, *record)
        assert second is None
        records = await _dlq_records(client, "s:dlq")
        assert [r[0] for r in records] == [first]
        assert parse_record(*records[0]).original == [b"k", b"v"]


async def test_dead_letter_script_never_loses_a_wide_entry(any_redis_url: str) -> None:
    """DEAD_LETTER on an entry with 4100 fields either writes the DLQ record or leaves the entry
    pending, never acks it without a record."""
    async with raw_client(any_redis_url) as client:
        await client.execute_command("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM")
        fields: list[Any] = []
        for i in range(4100):
            fields += [f"k{i}", "v"]
        entry = await client.execute_command("XADD", "s", "*", *fields)
        await client.execute_command("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">")
        record = ["dlq:stream", "s", "dlq:id", entry]
        for i in range(0, len(fields), 2):
            record += ["f:" + fields[i], fields[i + 1]]
        try:
            result = await client.eval(scripts.DEAD_LETTER, 2, "s", "s:dlq", "g", entry, *record)
        except ResponseError:
            result = None
        if result:
            records = await _dlq_records(client, "s:dlq")
            assert len(parse_record(*records[0]).original) == len(fields)
        else:
            assert await pending_count(client, "s", "g") == 1


async def test_replay_script_never_loses_a_wide_record(any_redis_url: str) -> None:
    """REPLAY of a dead-letter record with 4100 original fields either re-publishes it or keeps it
    in the DLQ, never deletes it without re-publishing."""
    async with raw_client(any_redis_url) as client:
        original: list[Any] = []
        for i in range(4100):
            original += [f"k{i}", "v"]
        record: list[Any] = ["dlq:stream", "s", "dlq:id", "1-0"]
        for i in range(0, len(original), 2):
            record += ["f:" + original[i], original[i + 1]]
        dlq_id = await client.execute_command("XADD", "s:dlq", "*", *record)
        try:
            result = await client.eval(scripts.REPLAY, 2, "s:dlq", "s", dlq_id, *original)
        except ResponseError:
            result = None
        if result:
            assert int(await client.execute_command("XLEN", "s")) == 1
        else:
            assert int(await client.execute_command("XLEN", "s:dlq")) == 1
