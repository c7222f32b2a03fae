"""Tests for :func:`streamflow.deadletter.move_to_dead_letter` (the atomic move on its own)."""

from __future__ import annotations

from typing import Any

import pytest

from streamflow import scripts
from streamflow.connection import Connection
from streamflow.deadletter import move_to_dead_letter, parse_record, read_records

FIELDS = [b"sf:json", b'{"order_id": 7}', b"blob", b"\xff\x00 raw"]


async def _pending_entry(client: Any, fields: list[bytes]) -> bytes:
    raw_id: bytes = await client.execute_command("XADD", "orders", "*", *fields)
    await client.execute_command("XGROUP", "CREATE", "orders", "billing", "0")
    await client.execute_command("XREADGROUP", "GROUP", "billing", "w-1", "STREAMS", "orders", ">")
    return raw_id


async def _move(client: Any, raw_id: bytes, fields: list[bytes]) -> bytes | None:
    return await move_to_dead_letter(
        client, stream="orders", dlq="orders:dlq", group="billing", consumer="w-1",
        handler="tests.bill", msg_raw_id=raw_id, raw_fields=fields, attempts=3,
        error_type="ValueError", error="bad order", traceback="Traceback ...\nValueError\n",
    )


@pytest.mark.anyio
@pytest.mark.parametrize("width", ["script", "multi"])
async def test_move_adds_the_record_and_acks_the_entry(any_redis_url: str, width: str) -> None:
    fields = FIELDS if width == "script" else FIELDS + [
        b"f%d" % i for i in range(scripts.MAX_SCRIPT_ARGS)  # too wide for one script call
    ]
    conn = Connection(any_redis_url)
    try:
        client = await conn.client()
        raw_id = await _pending_entry(client, fields)
        dlq_id = await _move(client, raw_id, fields)
        assert isinstance(dlq_id, bytes)
        summary = await client.execute_command("XPENDING", "orders", "billing")
        assert int(summary[0]) == 0
        rows = await client.execute_command("XRANGE", "orders:dlq", "-", "+")
        assert [r[0] for r in rows] == [dlq_id]
        rec = parse_record(rows[0][0], rows[0][1])
        assert (rec.stream, rec.id, rec.group, rec.consumer, rec.handler) == (
            "orders", raw_id.decode(), "billing", "w-1", "tests.bill")
        assert (rec.attempts, rec.error_type, rec.error) == (3, "ValueError", "bad order")
        assert rec.original == fields
        records, more = await read_records(client, "orders", "orders:dlq")
        assert [r.dlq_id for r in records] == [dlq_id.decode()] and not more
    finally:
        await conn.aclose()


@pytest.mark.anyio
async def test_move_of_an_entry_no_longer_pending_writes_nothing(any_redis_url: str) -> None:
    conn = Connection(any_redis_url)
    try:
        client = await conn.client()
        raw_id = await _pending_entry(client, FIELDS)
        await client.execute_command("XACK", "orders", "billing", raw_id)
        assert await _move(client, raw_id, FIELDS) is None
        assert int(await client.execute_command("EXISTS", "orders:dlq")) == 0
    finally:
        await conn.aclose()
