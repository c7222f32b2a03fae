"""Jobs under faults: a worker killed -9 mid-job; every job finishes once, its result stored
by the attempt that acked it."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from streamflow import App
from streamflow.jobs import JobStatus
from streamflow.keys import JOBS_GROUP, job_key, queue_stream

from .checker import consumer_pending, pending_ids, wait_for
from .conftest import Ledger, Servers
from .harness import Workers, group_info, size

pytestmark = pytest.mark.chaos

QUEUE = "chaos-jobs"
STREAM = queue_stream(QUEUE)


def _enqueue(url: str, n: int, sleep: float) -> list[str]:
    async def main() -> list[str]:
        producer = App(redis_url=url)
        producer.queue(QUEUE)
        task = producer.task(queue=QUEUE, name="job_work")(_signature_of_job_work)
        try:
            jobs = await task.enqueue_many([((i,), {"sleep": sleep}) for i in range(n)])
        finally:
            await producer.aclose()
        return [j.id for j in jobs]

    return anyio.run(main)


async def _signature_of_job_work(n: int, sleep: float = 0.0) -> dict[str, int]:
    """The producer's view of tests.chaos.apps.job_work (same name and signature)."""
    raise AssertionError("runs on the workers only")


def test_kill9_mid_job(servers: Servers, workers: Workers, ledger: Ledger) -> None:
    """Two workers; one killed -9 while it runs jobs. Its jobs are reclaimed and finish on
    the other; every job succeeds, and each result is the one of the attempt that acked it
    (the worker named in its state ran it)."""
    server = servers.start()
    main = servers.client(server)
    n = size(400, 5000)
    ids = _enqueue(server.url, n, 0.02)
    env = {"CHAOS_CONCURRENCY": "8"}
    victim, survivor = workers.spawn_many(2, server.url, vis=1.0, env=env, app="jobs_app")
    wait_for(lambda: (group_info(main, STREAM, JOBS_GROUP) or {}).get("entries-read", 0) > n // 4,
             20, "a quarter of the jobs read")
    held = pending_ids(main, STREAM, JOBS_GROUP, victim.consumer())
    victim.kill9()
    assert held, "the victim held no jobs when killed"

    def drained() -> bool:
        info = group_info(main, STREAM, JOBS_GROUP) or {}
        return info.get("lag") == 0 and info.get("pending") == 0

    wait_for(drained, 60, "the queue drained",
             diagnose=lambda: str(consumer_pending(main, STREAM, JOBS_GROUP)))
    starts = {int(k): int(v) for k, v in ledger.client.hgetall("chaos:job_starts").items()}
    pids = {w.consumer(): w.pid for w in (victim, survivor)}
    reclaimed = 0
    for i, jid in enumerate(ids):
        state: dict[bytes, Any] = main.hgetall(job_key(STREAM, jid))
        assert state[b"status"] == JobStatus.SUCCEEDED.value.encode(), (jid, state)
        result = json.loads(state[b"result"])
        assert result["n"] == i
        assert result["pid"] == pids[state[b"worker"].decode()], state  # stored by its acker
        assert starts.get(i, 0) >= 1
        if int(state[b"attempt"]) > 1:
            reclaimed += 1
    extra = sum(starts.values()) - n
    assert reclaimed >= 1
    assert 0 <= extra <= len(held), (extra, len(held))  # re-runs only of what the victim held
