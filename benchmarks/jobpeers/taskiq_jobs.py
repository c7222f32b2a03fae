"""taskiq + taskiq-redis's ``RedisStreamBroker`` and ``RedisAsyncResultBackend``, run by taskiq's CLI.

    python -m taskiq worker benchmarks.jobpeers.taskiq_jobs:broker --workers 1

taskiq's defaults otherwise: stream ``taskiq``, group ``taskiq``, ``--max-async-tasks 100``,
acknowledgement ``when_saved`` (the entry is XACKed after its result is stored), sync tasks
in a thread pool (``--max-threadpool-threads``, J3b: 32, with ``--max-async-tasks 32``).
``--workers 1`` because the CLI's default is 2 worker processes; the CLI's manager
process stays beside the one worker. Logging: ``--log-level WARNING`` (quiet) or INFO.

Completion: ``XINFO GROUPS taskiq`` shows pending 0 and lag 0 with entries-read = N (every
entry read and acked after its result was saved); verified also by reading the result
back (``result_backend.get_result``, not an error) for a sample. J2 awaits each result
with ``wait_result(check_interval=client_poll)`` (1 ms by default; taskiq's is 0.2 s).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from benchmarks.jobpeers import ENV_URL, SLEEP_S, env_int, mark
from benchmarks.jobpeers.base import Adapter as BaseAdapter
from benchmarks.jobpeers.base import verdict

URL = os.environ.get(ENV_URL, "redis://127.0.0.1:1")
CONCURRENCY = env_int("BENCH_JOBS_CONCURRENCY")
THREADS = env_int("BENCH_JOBS_THREADS")
STREAM, GROUP = "taskiq", "taskiq"

broker = RedisStreamBroker(URL).with_result_backend(RedisAsyncResultBackend(URL))


@broker.task(task_name="noop")
async def noop() -> None:
    mark()


@broker.task(task_name="async_sleep")
async def async_sleep() -> None:
    mark()
    await asyncio.sleep(SLEEP_S)


@broker.task(task_name="sync_sleep")
def sync_sleep() -> None:
    mark()
    time.sleep(SLEEP_S)


TASKS: dict[str, Any] = {"noop": noop, "sleep": async_sleep, "sync": sync_sleep}


class Adapter(BaseAdapter):
    tool = "taskiq"

    async def open(self) -> None:
        await broker.startup()  # also creates the group (at "$" of the still empty stream)
        self.redis = broker.connection_pool  # redis-py BlockingConnectionPool

    async def close(self) -> None:
        await broker.shutdown()

    def worker_argv(self, kind: str) -> list[str]:
        argv = ["-m", "taskiq", "worker", "benchmarks.jobpeers.taskiq_jobs:broker", "--workers", "1",
                "--log-level", "WARNING" if self.params.get("quiet", True) else "INFO"]
        if THREADS:
            argv += ["--max-threadpool-threads", str(THREADS), "--max-async-tasks", str(THREADS)]
        elif CONCURRENCY:
            argv += ["--max-async-tasks", str(CONCURRENCY)]
        return argv

    def settings(self, kind: str) -> dict[str, Any]:
        return {"workers": 1, "max_async_tasks": THREADS or CONCURRENCY or 100,
                "max_threadpool_threads": THREADS, "ack": "when_saved"}

    async def enqueue(self, kind: str, n: int) -> list[Any]:
        task = TASKS[kind]
        handles: list[Any] = []
        for start in range(0, n, 200):
            handles.extend(await asyncio.gather(*(task.kiq() for _ in range(min(200, n - start)))))
        return handles

    async def roundtrip(self, wait_s: float) -> Any:
        handle = await noop.kiq()
        result = await handle.wait_result(check_interval=self.client_poll, timeout=wait_s)
        if result.is_err:
            raise RuntimeError(f"task failed: {result.error!r}")
        return handle

    async def _group(self) -> dict[str, Any]:
        from redis.asyncio import Redis

        async with Redis(connection_pool=self.redis) as conn:
            for row in await conn.xinfo_groups(STREAM):
                name = row["name"]
                if (name.decode() if isinstance(name, bytes) else name) == GROUP:
                    return dict(row)
        return {}

    async def done(self, kind: str, handles: list[Any]) -> bool:
        row = await self._group()
        read = row.get("entries-read") or 0
        return row.get("pending") == 0 and row.get("lag") == 0 and read >= len(handles)

    async def verify(self, kind: str, handles: list[Any], sample: Sequence[int]) -> dict[str, Any]:
        row = await self._group()
        bad = 0
        for i in sample:
            try:
                result = await broker.result_backend.get_result(handles[i].task_id)
            except Exception:  # ResultIsMissingError
                bad += 1
                continue
            if result.is_err:
                bad += 1
        checks = {"pending": row.get("pending"), "lag": row.get("lag"),
                  "entries_read": row.get("entries-read"), "results_checked": len(sample),
                  "results_failed": bad}
        ok = (row.get("pending") == 0 and row.get("lag") == 0
              and (row.get("entries-read") or 0) >= len(handles) and bad == 0)
        return verdict(checks, ok)
