"""streaQ (Redis Streams, coredis), run by its own CLI.

    python -m streaq run benchmarks.jobpeers.streaq_jobs:worker

One ``Worker(queue_name="bench")`` with its defaults (``concurrency=16``, prefetch
2 x concurrency, results kept 5 minutes) unless ``BENCH_JOBS_CONCURRENCY`` /
``BENCH_JOBS_THREADS`` (``sync_concurrency``; J3b sets both to 32) say otherwise. Sync
tasks run in threads (anyio, bounded by ``sync_concurrency``).

Completion: streaQ XACKs *and* XDELs a task's stream entry in the same transaction that
stores its result, so the stream's length (``Worker.queue_size()``) reaches 0 exactly when
every task finished; verified also by the results index (one entry per finished task),
``status_by_id`` and ``result_by_id`` for a sample.

J2 uses ``Task.result()``, which waits on a coredis pubsub subscription and, leaving it,
for the unsubscribe confirmation (coredis's ``unsubscription_timeout``, 0.1 s): seen in
dev runs as ~100 ms per round trip while the task itself was done after ~2 ms (a status
poll saw it). That is the API's cost as shipped, so J2 reports it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from streaq import TaskStatus, Worker

from benchmarks.jobpeers import ENV_URL, SLEEP_S, env_int, mark, quiet
from benchmarks.jobpeers.base import Adapter as BaseAdapter
from benchmarks.jobpeers.base import verdict

CONCURRENCY = env_int("BENCH_JOBS_CONCURRENCY")
THREADS = env_int("BENCH_JOBS_THREADS")


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    if quiet():  # the CLI configures INFO; each task logs a start and a finish line there
        logging.getLogger("streaq").setLevel(logging.WARNING)
    yield None


_kwargs: dict[str, Any] = {}
if CONCURRENCY or THREADS:
    _kwargs["concurrency"] = max(CONCURRENCY or 0, THREADS or 0)
if THREADS:
    _kwargs["sync_concurrency"] = THREADS
worker: Worker[None] = Worker(redis_url=os.environ.get(ENV_URL, "redis://127.0.0.1:1"), queue_name="bench",
                              lifespan=lifespan, **_kwargs)


@worker.task()
async def noop() -> None:
    mark()


@worker.task()
async def async_sleep() -> None:
    mark()
    await asyncio.sleep(SLEEP_S)


@worker.task()
def sync_sleep() -> None:
    mark()
    time.sleep(SLEEP_S)


TASKS: dict[str, Any] = {"noop": noop, "sleep": async_sleep, "sync": sync_sleep}


class Adapter(BaseAdapter):
    tool = "streaq"

    async def open(self) -> None:
        self._cm = worker.__asynccontextmanager__()
        await self._cm.__aenter__()

    async def close(self) -> None:
        await self._cm.__aexit__(None, None, None)

    def worker_argv(self, kind: str) -> list[str]:
        return ["-m", "streaq", "run", "benchmarks.jobpeers.streaq_jobs:worker"]

    def settings(self, kind: str) -> dict[str, Any]:
        return {"concurrency": worker.concurrency, "sync_concurrency": worker.sync_concurrency,
                "prefetch": worker.prefetch}

    async def enqueue(self, kind: str, n: int) -> list[Any]:
        task = TASKS[kind]
        tasks = []
        for start in range(0, n, 1000):
            chunk = [task.enqueue() for _ in range(min(1000, n - start))]
            await worker.enqueue_many(chunk)
            tasks.extend(chunk)
        return tasks

    async def roundtrip(self, wait_s: float) -> Any:
        task = await noop.enqueue()
        result = await task.result(timeout=wait_s)
        if not result.success:
            raise RuntimeError(f"task failed: {result.exception!r}")
        return task

    async def done(self, kind: str, handles: list[Any]) -> bool:
        return await worker.queue_size() == 0

    async def verify(self, kind: str, handles: list[Any], sample: Sequence[int]) -> dict[str, Any]:
        left = await worker.queue_size()
        results_index = await worker.redis.zcard(worker._results_set)
        bad = 0
        for i in sample:
            task = handles[i]
            if await task.status() != TaskStatus.DONE or not (await task.result(timeout=5)).success:
                bad += 1
        checks = {"queue_size": left, "results_index": results_index, "results_checked": len(sample),
                  "results_failed": bad}
        return verdict(checks, left == 0 and results_index >= len(handles) and bad == 0)
