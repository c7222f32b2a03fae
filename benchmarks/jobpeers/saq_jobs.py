"""saq (Redis lists + pubsub), run by its own CLI: ``python -m saq benchmarks.jobpeers.saq_jobs.settings``.

One queue ``bench`` and saq's defaults (``concurrency=10``, job results kept 600 s; the CLI
logs at WARNING) unless ``BENCH_JOBS_CONCURRENCY`` says otherwise. saq runs sync functions
in the worker's ``ThreadPoolExecutor()``, whose size saq does not expose (``min(32, cores +
4)`` workers: 6 here); with ``BENCH_JOBS_THREADS`` (J3b) a startup hook replaces it by a
pool of that many threads, and concurrency is set to the same number.

Completion: saq keeps every unfinished job in the ``saq:bench:incomplete`` sorted set and
removes it in the transaction that stores the finished job, so ``count("incomplete") == 0``
means all done; verified also by the job records (status ``complete``) for a sample.
saq's sweep (at worker start, then every 60 s) aborts the jobs it finds in the active list
whose record does not say ``active`` yet; at start-up with a backlog it can catch a job the
worker just moved there (seen in dev J1 runs: 2 of 100 aborted). Such a run is reported
``valid: false`` with the statuses (``not_complete``): the harness does not work around it.
J2 uses ``Queue.apply`` (saq's enqueue-and-wait), which polls the job record every
``poll_interval``: set to the benchmark's client poll (1 ms by default, saq's is 0.5 s).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from saq import Queue
from saq.job import Status

from benchmarks.jobpeers import ENV_URL, SLEEP_S, env_int, mark
from benchmarks.jobpeers.base import Adapter as BaseAdapter
from benchmarks.jobpeers.base import verdict

CONCURRENCY = env_int("BENCH_JOBS_CONCURRENCY")
THREADS = env_int("BENCH_JOBS_THREADS")

queue = Queue.from_url(os.environ.get(ENV_URL, "redis://127.0.0.1:1"), name="bench")


async def noop(ctx: dict[str, Any]) -> None:
    mark()


async def async_sleep(ctx: dict[str, Any]) -> None:
    mark()
    await asyncio.sleep(SLEEP_S)


def sync_sleep(ctx: dict[str, Any]) -> None:
    mark()
    time.sleep(SLEEP_S)


async def _threads(ctx: dict[str, Any]) -> None:
    worker = ctx["worker"]
    old, worker.pool = worker.pool, ThreadPoolExecutor(max_workers=THREADS)
    old.shutdown(wait=False)


settings: dict[str, Any] = {"queue": queue, "functions": [noop, async_sleep, sync_sleep]}
if CONCURRENCY or THREADS:
    settings["concurrency"] = THREADS or CONCURRENCY
if THREADS:
    settings["startup"] = _threads

NAMES = {"noop": "noop", "sleep": "async_sleep", "sync": "sync_sleep"}


class Adapter(BaseAdapter):
    tool = "saq"

    async def open(self) -> None:
        await queue.connect()

    async def close(self) -> None:
        await queue.disconnect()

    def worker_argv(self, kind: str) -> list[str]:
        return ["-m", "saq", "benchmarks.jobpeers.saq_jobs.settings"]

    def settings(self, kind: str) -> dict[str, Any]:
        return {"concurrency": settings.get("concurrency", 10),
                "threads": THREADS if THREADS else "ThreadPoolExecutor() default"}

    async def enqueue(self, kind: str, n: int) -> list[Any]:
        keys: list[str] = []
        for start in range(0, n, 200):
            jobs = await asyncio.gather(*(queue.enqueue(NAMES[kind]) for _ in range(min(200, n - start))))
            keys.extend(job.key for job in jobs if job is not None)
        return keys

    async def roundtrip(self, wait_s: float) -> Any:
        key = uuid.uuid4().hex
        await queue.apply("noop", timeout=wait_s, poll_interval=self.client_poll, key=key)
        return key

    async def done(self, kind: str, handles: list[Any]) -> bool:
        return await queue.count("incomplete") == 0

    async def verify(self, kind: str, handles: list[Any], sample: Sequence[int]) -> dict[str, Any]:
        incomplete = await queue.count("incomplete")
        keys = [handles[i] for i in sample]
        bad: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            for job in await queue.jobs(keys[start:start + 500]):
                status = "missing" if job is None else str(job.status.value)
                if status != Status.COMPLETE.value:
                    bad[status] = bad.get(status, 0) + 1
        checks = {"incomplete": incomplete, "enqueued": len(handles), "results_checked": len(keys),
                  "results_failed": sum(bad.values()), "not_complete": bad}
        return verdict(checks, incomplete == 0 and not bad)
