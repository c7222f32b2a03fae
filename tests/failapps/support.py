"""Helpers shared by the failure-semantics tests: polling, running workers, raw clients."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from streamflow import App, Settings, Worker
from streamflow.connection import Connection
from streamflow.runtime.acks import AckBuffer
from streamflow.runtime.consumer import Consumer

__all__ = [
    "fast_settings",
    "make_consumer",
    "pending_count",
    "pending_rows",
    "raw_client",
    "serving",
    "until",
]


async def until(
    predicate: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it is truthy; fail after ``timeout`` seconds."""
    deadline = anyio.current_time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if anyio.current_time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(interval)


def fast_settings(app: App, url: str, **overrides: Any) -> Settings:
    """Worker settings scaled down for tests: 1 s visibility timeout, 0.1 s reclaim, 100 ms block."""
    values: dict[str, Any] = {
        "redis_url": url,
        "visibility_timeout": 1.0,
        "reclaim_interval": 0.1,
        "block_ms": 100,
        "grace_period": 2.0,
        "log_level": "warning",
    }
    values.update(overrides)
    return app.settings(**values)


@asynccontextmanager
async def serving(*workers: Worker, ready_timeout: float = 10.0) -> AsyncIterator[None]:
    """Run ``workers`` in a task group until the block exits, then stop them gracefully."""
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.serve)
        with anyio.fail_after(ready_timeout):
            for w in workers:
                await w.ready.wait()
        try:
            yield
        finally:
            for w in workers:
                w.stop()


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
