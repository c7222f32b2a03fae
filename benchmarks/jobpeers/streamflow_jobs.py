"""streamflow's jobs, run by its own CLI.

    python -m streamflow run benchmarks.jobpeers.streamflow_jobs:app --redis-url URL

Written against the jobs API contract (``App.task``, ``Task.enqueue`` / ``enqueue_many``,
``Job.id`` / ``Job.result``); jobs.py skips streamflow with ``{"skipped": "streamflow jobs
API not available"}`` while ``App.task`` does not exist, and never imports this module then.

* ``noop``: queue ``bench``, ``concurrency=1000`` (``BENCH_JOBS_CONCURRENCY`` overrides);
* ``async_sleep``: queue ``bench-sleep``, concurrency 100 (J3a; same override);
* ``sync_sleep``: queue ``bench-sync``, ``threads=32, concurrency=32`` (J3b; ``BENCH_JOBS_THREADS``).

Completion: ``XINFO GROUPS streamflow:queue:{<queue>}`` shows group ``streamflow:jobs`` with
pending 0 and lag 0, and entries-read equal to the stream's entries-added (N); verified
also by ``await job.result()`` for a sample of the jobs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from benchmarks.jobpeers import ENV_URL, SLEEP_S, env_int, mark
from benchmarks.jobpeers.base import Adapter as BaseAdapter
from benchmarks.jobpeers.base import verdict
from streamflow import App

QUEUES = {"noop": "bench", "sleep": "bench-sleep", "sync": "bench-sync"}
GROUP = "streamflow:jobs"
CONCURRENCY = env_int("BENCH_JOBS_CONCURRENCY")
THREADS = env_int("BENCH_JOBS_THREADS") or 32

app = App(redis_url=os.environ.get(ENV_URL))

if hasattr(App, "task"):  # the jobs API (jobs.py does not import this module without it)

    app.queue(QUEUES["noop"], concurrency=CONCURRENCY or 1000)
    app.queue(QUEUES["sleep"], concurrency=CONCURRENCY or 100)
    app.queue(QUEUES["sync"], concurrency=THREADS, threads=THREADS)

    @app.task(queue=QUEUES["noop"])
    async def noop() -> None:
        mark()

    @app.task(queue=QUEUES["sleep"])
    async def async_sleep() -> None:
        mark()
        await asyncio.sleep(SLEEP_S)

    @app.task(queue=QUEUES["sync"])
    def sync_sleep() -> None:
        mark()
        time.sleep(SLEEP_S)

    TASKS = {"noop": noop, "sleep": async_sleep, "sync": sync_sleep}


def queue_key(queue: str) -> str:
    return f"streamflow:queue:{{{queue}}}"


class Adapter(BaseAdapter):
    tool = "streamflow"

    async def open(self) -> None:
        self.redis = aioredis.Redis.from_url(self.url, decode_responses=True)

    async def close(self) -> None:
        await self.redis.aclose()
        await app.aclose()

    def worker_argv(self, kind: str) -> list[str]:
        level = "warning" if self.params.get("quiet", True) else "info"
        return ["-m", "streamflow", "run", "benchmarks.jobpeers.streamflow_jobs:app", "--redis-url", self.url,
                "--log-level", level, "--log-format", "console"]

    def settings(self, kind: str) -> dict[str, Any]:
        if kind == "sync":
            return {"threads": THREADS, "concurrency": THREADS}
        return {"concurrency": CONCURRENCY or (1000 if kind == "noop" else 100)}

    async def enqueue(self, kind: str, n: int) -> list[Any]:
        task = TASKS[kind]
        jobs: list[Any] = []
        for start in range(0, n, 10_000):
            jobs.extend(await task.enqueue_many([((), {})] * min(10_000, n - start)))
        return jobs

    async def roundtrip(self, wait_s: float) -> Any:
        job = await TASKS["noop"].enqueue()
        await job.result(timeout=wait_s)
        return job

    async def _group(self, kind: str) -> dict[str, Any] | None:
        for row in await self.redis.xinfo_groups(queue_key(QUEUES[kind])):
            if row["name"] == GROUP:
                return dict(row)
        return None

    async def _lag(self, kind: str, row: dict[str, Any]) -> int | None:
        """The group's lag; when Redis cannot tell (None, e.g. after XDELs), 0 if the group's
        last-delivered id is the stream's last id, else None."""
        if row.get("lag") is not None:
            return int(row["lag"])
        info = await self.redis.xinfo_stream(queue_key(QUEUES[kind]))
        return 0 if row.get("last-delivered-id") == info["last-generated-id"] else None

    async def done(self, kind: str, handles: list[Any]) -> bool:
        try:
            row = await self._group(kind)
        except aioredis.ResponseError:  # no stream yet
            return False
        if not row or row["pending"] != 0 or (row.get("entries-read") or 0) < len(handles):
            return False
        return await self._lag(kind, row) == 0

    async def verify(self, kind: str, handles: list[Any], sample: Sequence[int]) -> dict[str, Any]:
        row = await self._group(kind) or {}
        lag = await self._lag(kind, row) if row else None
        added = (await self.redis.xinfo_stream(queue_key(QUEUES[kind])))["entries-added"]
        ids = {h.id for h in handles}
        failed = 0
        for i in sample:
            try:
                await handles[i].result(timeout=5)
            except Exception:
                failed += 1
        checks = {"pending": row.get("pending"), "lag": lag,
                  "entries_read": row.get("entries-read"), "entries_added": added, "unique_ids": len(ids),
                  "results_checked": len(sample), "results_failed": failed}
        ok = (row.get("pending") == 0 and lag == 0 and row.get("entries-read") == added
              and added >= len(handles) and len(ids) == len(handles) and failed == 0)
        return verdict(checks, ok)
