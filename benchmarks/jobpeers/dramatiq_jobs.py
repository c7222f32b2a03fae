"""dramatiq with its ``RedisBroker`` and the ``Results`` middleware (``RedisBackend``), run by its CLI.

    python -m dramatiq benchmarks.jobpeers.dramatiq_jobs:broker --processes 1 [--threads N]

dramatiq's defaults otherwise: 8 worker threads (``BENCH_JOBS_THREADS`` overrides; J3b:
32), prefetch per thread, results kept 10 minutes. ``--processes 1`` because the CLI's
default is one worker process per core; its supervisor process stays beside the one
worker. Actors are sync functions (dramatiq's async actors hold a worker thread each,
so there is no J3a). dramatiq logs no per-message lines at its default level.

Completion: the broker keeps each message in the ``dramatiq:bench.msgs`` hash until it is
acked, after the actor ran and the Results middleware stored its result, so ``HLEN == 0``
(with the ``dramatiq:bench`` list empty) means all done; verified also by the delay and
dead-letter queues being empty and by ``Message.get_result`` for a sample. J2 waits with
``get_result(block=True)``, a BRPOPLPUSH on the result key (no polling).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from benchmarks.jobpeers import ENV_URL, SLEEP_S, env_int, mark
from benchmarks.jobpeers.base import Adapter as BaseAdapter
from benchmarks.jobpeers.base import verdict

URL = os.environ.get(ENV_URL, "redis://127.0.0.1:1")
THREADS = env_int("BENCH_JOBS_THREADS")
QUEUE = "bench"

broker = RedisBroker(url=URL)
backend = RedisBackend(url=URL)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def noop() -> None:
    mark()


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def sync_sleep() -> None:
    mark()
    time.sleep(SLEEP_S)


ACTORS: dict[str, Any] = {"noop": noop, "sync": sync_sleep}


class Adapter(BaseAdapter):
    tool = "dramatiq"

    def worker_argv(self, kind: str) -> list[str]:
        argv = ["-m", "dramatiq", "benchmarks.jobpeers.dramatiq_jobs:broker", "--processes", "1"]
        if THREADS:
            argv += ["--threads", str(THREADS)]
        return argv

    def settings(self, kind: str) -> dict[str, Any]:
        return {"processes": 1, "threads": THREADS or 8}

    async def close(self) -> None:
        broker.close()

    async def enqueue(self, kind: str, n: int) -> list[Any]:
        actor = ACTORS[kind]
        return [actor.send() for _ in range(n)]

    async def roundtrip(self, wait_s: float) -> Any:
        message = noop.send()
        message.get_result(backend=backend, block=True, timeout=int(wait_s * 1000))
        return message

    def _lens(self) -> dict[str, int]:
        pipe = broker.client.pipeline(transaction=False)
        names = {"queued": f"dramatiq:{QUEUE}", "unacked": f"dramatiq:{QUEUE}.msgs",
                 "delayed": f"dramatiq:{QUEUE}.DQ.msgs", "dead": f"dramatiq:{QUEUE}.XQ.msgs"}
        pipe.llen(names["queued"])
        for key in ("unacked", "delayed", "dead"):
            pipe.hlen(names[key])
        return dict(zip(names, pipe.execute(), strict=True))

    async def done(self, kind: str, handles: list[Any]) -> bool:
        pipe = broker.client.pipeline(transaction=False)
        pipe.llen(f"dramatiq:{QUEUE}")
        pipe.hlen(f"dramatiq:{QUEUE}.msgs")
        return pipe.execute() == [0, 0]

    async def verify(self, kind: str, handles: list[Any], sample: Sequence[int]) -> dict[str, Any]:
        lens = self._lens()
        bad = 0
        for i in sample:
            try:
                handles[i].get_result(backend=backend)
            except Exception:  # ResultMissing, ResultFailure
                bad += 1
        checks = {**lens, "results_checked": len(sample), "results_failed": bad}
        return verdict(checks, all(v == 0 for v in lens.values()) and bad == 0)
