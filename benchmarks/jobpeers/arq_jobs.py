"""arq (a Redis sorted set, polled), run by its own CLI.

    python -m arq benchmarks.jobpeers.arq_jobs.WorkerSettings

arq's defaults: queue ``arq:queue``, ``max_jobs=10`` (``BENCH_JOBS_CONCURRENCY``
overrides; J3a sets 100), results kept an hour, and ``poll_delay=0.5``: the worker looks at
its queue every 0.5 s when it found nothing to start, so an idle worker picks a new job up
after up to 0.5 s (J2 shows that). Each poll takes at most ``queue_read_limit`` ids
(``max(5 x max_jobs, 100)``) and the next poll comes 0.5 s after the previous one began,
so with fast jobs a backlog drains at about that many jobs per 0.5 s: ~200 jobs/s for
no-ops with the defaults (J1), ~1,000/s at ``max_jobs=100`` (J3a). arq runs only async
functions (no J3b). Logging: ``--custom-log-dict`` with arq's own config at WARNING
(quiet), else arq's default INFO (two lines per job).

Every arq release since 0.26 pins ``redis<6``; the benchmarks venv has a newer redis-py
(taskiq-redis needs it), see benchmarks/README.md. The run reports the redis-py version.

Completion: arq removes a job from ``arq:queue`` in the transaction that stores its result,
so ``ZCARD arq:queue == 0`` means all done; verified also by the ``arq:result:*`` keys
(one per job) and ``Job.result_info()`` (success) for a sample. J2 awaits each result
with ``Job.result(poll_delay=client_poll)`` (1 ms by default; arq's is 0.5 s).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import RedisSettings
from arq.constants import default_queue_name, result_key_prefix
from arq.jobs import Job
from arq.logs import default_log_config

from benchmarks.jobpeers import ENV_URL, SLEEP_S, env_int, mark
from benchmarks.jobpeers.base import Adapter as BaseAdapter
from benchmarks.jobpeers.base import verdict

URL = os.environ.get(ENV_URL, "redis://127.0.0.1:1")
CONCURRENCY = env_int("BENCH_JOBS_CONCURRENCY")

LOG_QUIET = default_log_config(False)
LOG_QUIET["handlers"]["arq.standard"]["level"] = "WARNING"
LOG_QUIET["loggers"]["arq"]["level"] = "WARNING"


async def noop(ctx: dict[str, Any]) -> None:
    mark()


async def async_sleep(ctx: dict[str, Any]) -> None:
    mark()
    await asyncio.sleep(SLEEP_S)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [noop, async_sleep]
    redis_settings = RedisSettings.from_dsn(URL)
    max_jobs = CONCURRENCY or 10


NAMES = {"noop": "noop", "sleep": "async_sleep"}


class Adapter(BaseAdapter):
    tool = "arq"

    async def open(self) -> None:
        self.redis = await create_pool(RedisSettings.from_dsn(self.url))

    async def close(self) -> None:
        await self.redis.aclose()

    def worker_argv(self, kind: str) -> list[str]:
        argv = ["-m", "arq", "benchmarks.jobpeers.arq_jobs.WorkerSettings"]
        if self.params.get("quiet", True):
            argv += ["--custom-log-dict", "benchmarks.jobpeers.arq_jobs.LOG_QUIET"]
        return argv

    def settings(self, kind: str) -> dict[str, Any]:
        return {"max_jobs": WorkerSettings.max_jobs, "poll_delay_s": 0.5}

    async def enqueue(self, kind: str, n: int) -> list[Any]:
        jobs: list[Any] = []
        for start in range(0, n, 200):
            jobs.extend(await asyncio.gather(*(self.redis.enqueue_job(NAMES[kind])
                                               for _ in range(min(200, n - start)))))
        return jobs

    async def roundtrip(self, wait_s: float) -> Any:
        job = await self.redis.enqueue_job("noop")
        await job.result(timeout=wait_s, poll_delay=self.client_poll)
        return job

    async def done(self, kind: str, handles: list[Any]) -> bool:
        return await self.redis.zcard(default_queue_name) == 0

    async def verify(self, kind: str, handles: list[Any], sample: Sequence[int]) -> dict[str, Any]:
        queued = await self.redis.zcard(default_queue_name)
        results = 0
        async for _ in self.redis.scan_iter(match=result_key_prefix + "*", count=1000):
            results += 1
        bad = 0
        for i in sample:
            job: Job = handles[i]
            info = await job.result_info()
            if info is None or not info.success:
                bad += 1
        checks = {"queued": queued, "result_keys": results, "results_checked": len(sample),
                  "results_failed": bad}
        return verdict(checks, queued == 0 and results >= len(handles) and bad == 0)
