"""Apps run by the multi-process benchmarks through the real CLI.

    python -m streamflow run benchmarks.apps:noop_app --redis-url URL

Configured by environment variables (set by scaling.py / memory.py):

* ``BENCH_STREAM`` (default ``bench:stream``), ``BENCH_GROUP`` (default ``bench``);
* ``BENCH_CONCURRENCY``: handler concurrency (default 1000; ``slow_app`` 100);
* ``BENCH_SLEEP``: ``slow_app``'s handler sleep in seconds (default 0.01);
* ``BENCH_PARTITIONS``: ``partitioned_app``'s partitions of ``BENCH_STREAM`` (default 12);
* ``BENCH_GATE``: when set, each worker's startup hook increments ``<gate>:ready`` and
  waits until the key ``<gate>:go`` exists, so several processes start consuming at
  the same moment (process start-up is not measured).
"""

from __future__ import annotations

import os
from typing import Any

import anyio

from streamflow import App, Message

STREAM = os.environ.get("BENCH_STREAM", "bench:stream")
GROUP = os.environ.get("BENCH_GROUP", "bench")
GATE = os.environ.get("BENCH_GATE")


def _concurrency(default: int) -> int:
    return int(os.environ.get("BENCH_CONCURRENCY", default))


def _gated(app: App) -> App:
    if GATE:
        async def wait_for_go() -> None:
            client: Any = await app.connection.client()
            await client.incr(f"{GATE}:ready")
            while not await client.exists(f"{GATE}:go"):  # noqa: ASYNC110 (a Redis key, not an event)
                await anyio.sleep(0.001)

        app.on_startup(wait_for_go)
    return app


noop_app = _gated(App(name="bench-noop"))


@noop_app.handler(STREAM, group=GROUP, concurrency=_concurrency(1000), start_id="0")
async def noop(msg: Message) -> None:
    """Does nothing."""


json_app = _gated(App(name="bench-json"))


@json_app.handler(STREAM, group=GROUP, concurrency=_concurrency(1000), start_id="0")
async def decode(msg: Message) -> None:
    """Decodes the payload and sums its 20-element list."""
    sum(msg.payload["values"])


slow_app = _gated(App(name="bench-slow"))


@slow_app.handler(STREAM, group=GROUP, concurrency=_concurrency(100), start_id="0")
async def slow(msg: Message) -> None:
    """Sleeps BENCH_SLEEP seconds (default 10 ms)."""
    await anyio.sleep(float(os.environ.get("BENCH_SLEEP", "0.01")))


partitioned_app = _gated(App(name="bench-partitioned"))


@partitioned_app.handler(STREAM, group=GROUP, concurrency=_concurrency(1000), start_id="0",
                         partitions=int(os.environ.get("BENCH_PARTITIONS", "12")))
async def noop_partitioned(msg: Message) -> None:
    """Does nothing (on every partition of the stream)."""
