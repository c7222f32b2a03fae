"""Helpers of the failure-semantics tests that reach below the public API: raw clients,
XPENDING views, and a consumer that is not running (to drive its parts directly).

Running workers and waiting are :mod:`streamflow.testing`'s (``running_worker``,
``serving``, ``make_worker``, ``wait_until``, ``passes``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from streamflow import App, Settings
from streamflow.connection import Connection
from streamflow.runtime.acks import AckBuffer
from streamflow.runtime.consumer import Consumer

__all__ = [
    "make_consumer",
    "pending_count",
    "pending_rows",
    "raw_client",
]


@asynccontextmanager
async def raw_client(url: str) -> AsyncIterator[Any]:
    """A client built like the worker's (RESP2, bytes, raw stream replies), closed on exit."""
    conn = Connection(url)
    try:
        yield await conn.client()
    finally:
        await conn.aclose()


async def pending_count(client: Any, stream: str, group: str) -> int:
    """Entries pending in ``group`` of ``stream`` (XPENDING summary count)."""
    summary = await client.execute_command("XPENDING", stream, group)
    return int(summary[0])


async def pending_rows(client: Any, stream: str, group: str) -> list[tuple[str, str, int, int]]:
    """Every pending entry as ``(id, consumer, idle_ms, deliveries)``."""
    rows = await client.execute_command("XPENDING", stream, group, "-", "+", 10_000)
    return [(r[0].decode(), r[1].decode(), int(r[2]), int(r[3])) for r in rows or []]


def make_consumer(app: App, client: Any, settings: Settings, name: str = "tester") -> Consumer:
    """A :class:`Consumer` for the app's first handler, not running (to drive its parts)."""
    return Consumer(app.handlers[0], client, AckBuffer(client), settings, name)
