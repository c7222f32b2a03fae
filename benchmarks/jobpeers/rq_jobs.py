"""rq, run by its own CLI: ``python -m rq.cli worker --worker-class ... bench``.

Two ways of running it, measured as two tools:

* ``rq``: ``rq.worker.SimpleWorker``, which runs each job in the worker process itself;
* ``rq-fork``: rq's default ``Worker``, which forks a work horse per job (for reference).

rq's defaults otherwise (results kept 500 s); ``--logging_level WARNING`` (quiet: no
per-job lines) or INFO. rq runs sync functions one at a time (no J3a, no J3b). The jobs
are :func:`benchmarks.jobpeers.plain_noop`, imported by path from a light module.

Completion: rq adds each finished job to its ``FinishedJobRegistry`` (``rq:finished:bench``)
when it stores the result, so the registry's count reaching N means all done; verified
also by the started and failed registries being empty, ``Job.get_status() == finished``
and a successful ``Job.latest_result()`` for a sample. J2 waits with
``Job.latest_result(timeout=...)``, a blocking XREAD on the job's results stream.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.results import Result

from benchmarks.jobpeers import ENV_URL, plain_noop, plain_sync_sleep
from benchmarks.jobpeers.base import Adapter as BaseAdapter
from benchmarks.jobpeers.base import verdict

URL = os.environ.get(ENV_URL, "redis://127.0.0.1:1")
QUEUE = "bench"
FUNCS: dict[str, Any] = {"noop": plain_noop, "sync": plain_sync_sleep}
WORKER_CLASSES = {"rq": "rq.worker.SimpleWorker", "rq-fork": "rq.worker.Worker"}


class Adapter(BaseAdapter):
    tool = "rq"

    async def open(self) -> None:
        self.redis = Redis.from_url(self.url)
        self.queue = Queue(QUEUE, connection=self.redis)

    async def close(self) -> None:
        self.redis.close()

    def worker_argv(self, kind: str) -> list[str]:
        return ["-m", "rq.cli", "worker", "--url", self.url,
                "--worker-class", WORKER_CLASSES[self.params["tool"]],
                "--logging_level", "WARNING" if self.params.get("quiet", True) else "INFO", QUEUE]

    def settings(self, kind: str) -> dict[str, Any]:
        return {"worker_class": WORKER_CLASSES[self.params["tool"]]}

    async def enqueue(self, kind: str, n: int) -> list[Any]:
        func = FUNCS[kind]
        jobs: list[Any] = []
        for start in range(0, n, 1000):
            datas = [Queue.prepare_data(func) for _ in range(min(1000, n - start))]
            jobs.extend(self.queue.enqueue_many(datas))
        return jobs

    async def roundtrip(self, wait_s: float) -> Any:
        job = self.queue.enqueue(plain_noop)
        result = job.latest_result(timeout=max(1, math.ceil(wait_s)))
        if result is None or result.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"no successful result: {result!r}")
        return job

    async def done(self, kind: str, handles: list[Any]) -> bool:
        return self.queue.finished_job_registry.get_job_count(cleanup=False) >= len(handles)

    async def verify(self, kind: str, handles: list[Any], sample: Sequence[int]) -> dict[str, Any]:
        finished = self.queue.finished_job_registry.get_job_count(cleanup=False)
        started = self.queue.started_job_registry.get_job_count(cleanup=False)
        failed = self.queue.failed_job_registry.get_job_count(cleanup=False)
        bad = 0
        for i in sample:
            job = Job.fetch(handles[i].id, connection=self.redis)
            result = job.latest_result()
            ok = result is not None and result.type == Result.Type.SUCCESSFUL
            if job.get_status() != JobStatus.FINISHED or not ok:
                bad += 1
        checks = {"finished": finished, "started": started, "failed": failed, "queued": len(self.queue),
                  "results_checked": len(sample), "results_failed": bad}
        return verdict(checks, finished >= len(handles) and started == 0 and failed == 0 and bad == 0)
