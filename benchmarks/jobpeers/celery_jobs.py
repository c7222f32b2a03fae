"""Celery with the redis broker (kombu) and the redis result backend, run by its own CLI.

    python -m celery -A benchmarks.jobpeers.celery_jobs worker --pool solo        (J1, J2)
    python -m celery -A benchmarks.jobpeers.celery_jobs worker --pool threads -c 32  (J3b)

One worker process: ``--pool solo`` runs tasks in the worker process itself (the default
prefork pool would add a child per core); J3b uses the threads pool with
``BENCH_JOBS_THREADS`` threads. Celery's defaults otherwise (prefetch multiplier 4, early
ack, results kept a day); ``--loglevel WARNING`` (quiet: no per-task lines) or INFO.
Celery runs no async tasks (no J3a).

Completion: the backend stores ``celery-task-meta-<id>`` per finished task; there is no
count, so the poll walks the ids in order with EXISTS on the first unfinished one (see
``PrefixPoll``); verified also by all N result keys existing and ``AsyncResult.state ==
SUCCESS`` for a sample. J2 uses ``AsyncResult.get()``, which the redis backend answers
through pubsub.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from benchmarks.jobpeers import ENV_URL, SLEEP_S, env_int, mark
from benchmarks.jobpeers.base import Adapter as BaseAdapter
from benchmarks.jobpeers.base import PrefixPoll, verdict

URL = os.environ.get(ENV_URL, "redis://127.0.0.1:1")
THREADS = env_int("BENCH_JOBS_THREADS")

app = Celery("bench", broker=URL, backend=URL)
app.conf.broker_connection_retry_on_startup = True  # silences a deprecation warning; the default


@app.task(name="noop")
def noop() -> None:
    mark()


@app.task(name="sync_sleep")
def sync_sleep() -> None:
    mark()
    time.sleep(SLEEP_S)


TASKS: dict[str, Any] = {"noop": noop, "sync": sync_sleep}


class Adapter(BaseAdapter):
    tool = "celery"

    async def open(self) -> None:
        self.redis = app.backend.client  # the backend's redis-py client
        self.polls: dict[int, PrefixPoll] = {}

    async def close(self) -> None:
        app.close()

    def worker_argv(self, kind: str) -> list[str]:
        argv = ["-m", "celery", "-A", "benchmarks.jobpeers.celery_jobs", "worker",
                "--loglevel", "WARNING" if self.params.get("quiet", True) else "INFO"]
        if kind == "sync":
            argv += ["--pool", "threads", "--concurrency", str(THREADS or 32)]
        else:
            argv += ["--pool", "solo"]
        return argv

    def settings(self, kind: str) -> dict[str, Any]:
        if kind == "sync":
            return {"pool": "threads", "concurrency": THREADS or 32}
        return {"pool": "solo"}

    async def enqueue(self, kind: str, n: int) -> list[Any]:
        task = TASKS[kind]
        return [task.delay() for _ in range(n)]

    async def roundtrip(self, wait_s: float) -> Any:
        result = noop.delay()
        result.get(timeout=wait_s)
        return result

    def _exists(self, keys: list[str]) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return sum(pipe.execute())

    async def done(self, kind: str, handles: list[Any]) -> bool:
        poll = self.polls.get(id(handles))
        if poll is None:
            poll = self.polls[id(handles)] = PrefixPoll(
                [app.backend.get_key_for_task(r.id).decode() for r in handles])

        async def exists(keys: list[str]) -> int:
            return self._exists(keys)

        return await poll.done(exists)

    async def verify(self, kind: str, handles: list[Any], sample: Sequence[int]) -> dict[str, Any]:
        keys = [app.backend.get_key_for_task(r.id).decode() for r in handles]
        stored = sum(self._exists(keys[i:i + 1000]) for i in range(0, len(keys), 1000))
        bad = sum(1 for i in sample if AsyncResult(handles[i].id, app=app).state != "SUCCESS")
        checks = {"result_keys": stored, "results_checked": len(sample), "results_failed": bad}
        return verdict(checks, stored == len(handles) and bad == 0)
