"""Jobs over time: delays, periodic ticks, dedup, cancel and dependencies."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from streamflow import App, Retry
from streamflow.errors import EnqueueError, JobCancelled, JobFailed
from streamflow.jobs import JobStatus
from streamflow.jobs.cron import Every
from streamflow.keys import scheduled_key
from streamflow.testing import running_worker, wait_until

pytestmark = pytest.mark.anyio


async def _status_is(job: Any, status: JobStatus) -> bool:
    return bool(await job.status() is status)


async def test_delayed_job_runs_on_time(any_redis_url: str) -> None:
    """enqueue_in keeps the job scheduled until its time, then a worker promotes and runs
    it within 100 ms of that time."""
    app = App(redis_url=any_redis_url)
    ran_at: list[float] = []

    @app.task
    async def stamp() -> None:
        ran_at.append(time.time())

    async with running_worker(app, any_redis_url):
        before = time.time()
        job = await stamp.enqueue_in(0.5)
        assert job.enqueue_status is JobStatus.SCHEDULED
        assert await job.status() is JobStatus.SCHEDULED
        await job.result(timeout=10)
        info = await job.info()
    assert info.scheduled_for is not None
    due = info.scheduled_for.timestamp()
    assert 0.45 <= due - before <= 0.6
    assert 0 <= ran_at[0] - due < 0.1, ran_at[0] - due


async def test_enqueue_at_and_timedelta(redis_url: str) -> None:
    """enqueue_at takes an aware datetime, enqueue_in a timedelta; a time in the past runs
    at once."""
    app = App(redis_url=redis_url)

    @app.task
    async def one() -> int:
        return 1

    async with running_worker(app, redis_url):
        at = datetime.now(UTC) + timedelta(milliseconds=300)
        j1 = await one.enqueue_at(at)
        j2 = await one.enqueue_in(timedelta(milliseconds=200))
        j3 = await one.enqueue_at(datetime.now(UTC) - timedelta(hours=1))
        assert j3.enqueue_status is JobStatus.QUEUED
        assert [await j.result(timeout=10) for j in (j1, j2, j3)] == [1, 1, 1]
    with pytest.raises(EnqueueError, match="delay"):
        await one.enqueue_in(-1)


async def test_two_workers_promote_a_scheduled_job_once(redis_url: str) -> None:
    """Many delayed jobs due at once, two workers promoting: each runs exactly once."""
    app = App(redis_url=redis_url)
    runs: list[int] = []

    @app.task
    async def mark(i: int) -> None:
        runs.append(i)

    async with running_worker(app, redis_url), running_worker(app, redis_url):
        jobs = [await mark.enqueue_in(0.3, i) for i in range(200)]
        for j in jobs:
            await j.result(timeout=15)
    assert sorted(runs) == list(range(200))


async def test_scheduled_jobs_survive_a_server_restart() -> None:
    """Delayed jobs are kept in Redis: with AOF on, a server restart (kill -9 included)
    keeps them and they run afterwards, once."""
    from streamflow.embedded import ServerProcess

    app = App()
    ran: list[str] = []

    @app.task
    async def later(tag: str) -> None:
        ran.append(tag)

    server = ServerProcess(persistent=True, args=["--appendfsync", "always"])
    await anyio.to_thread.run_sync(server.start)
    try:
        producer = App(redis_url=server.url)
        job = await producer.task(name="later")(later.func).enqueue_in(1.0, "x")
        await producer.aclose()
        await anyio.to_thread.run_sync(server.kill)
        await anyio.to_thread.run_sync(server.restart)
        async with running_worker(app, server.url):
            assert await app.job(job.id).status() is JobStatus.SCHEDULED
            await app.job(job.id).result(timeout=15)
            await anyio.sleep(0.2)
    finally:
        await anyio.to_thread.run_sync(server.stop)
    assert ran == ["x"]


async def test_periodic_runs_once_per_tick_across_workers(redis_url: str) -> None:
    """Two workers with the same periodic task: each tick is one job, run exactly once,
    on time."""
    app = App(redis_url=redis_url)
    ticks: list[float] = []

    @app.periodic(every=0.5)
    async def heartbeat() -> None:
        ticks.append(time.time())

    async with running_worker(app, redis_url), running_worker(app, redis_url):
        await wait_until(lambda: len(ticks) >= 4, timeout=10, what="4 ticks")
        await anyio.sleep(0.1)
        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter("streamflow:job:{default}:cron:heartbeat:*")]
            done = [k for k in keys if await client.hget(k, "status") == b"succeeded"]
        finally:
            await client.aclose()
    tick_ms = sorted(int(k.rsplit(b":", 1)[1]) for k in done)
    assert len(ticks) == len(done), (ticks, tick_ms)  # one run per tick job
    assert all(b - a == 500 for a, b in itertools.pairwise(tick_ms)), tick_ms
    assert tick_ms[-1] / 1000 <= max(ticks) < tick_ms[-1] / 1000 + 0.3


async def test_periodic_restart_neither_reruns_nor_skips(redis_url: str) -> None:
    """A worker restarting between ticks: the tick scheduled before the restart runs once,
    and no tick is run twice."""
    app = App(redis_url=redis_url)
    ticks: list[int] = []

    @app.periodic(every=Every(0.4))
    async def beat() -> None:
        ticks.append(round(time.time() / 0.4))

    async with running_worker(app, redis_url):
        await wait_until(lambda: len(ticks) >= 1, timeout=10, what="a tick")
    async with running_worker(app, redis_url):
        await wait_until(lambda: len(ticks) >= 4, timeout=10, what="4 ticks")
    assert len(ticks) == len(set(ticks)), ticks
    assert max(ticks) - min(ticks) + 1 - len(ticks) <= 1, ticks  # at most the restart's gap


async def test_cron_expression_registers(redis_url: str) -> None:
    """@app.cron parses its expression at registration, refusing a bad one, and schedules
    its next tick in the scheduled set while a worker runs."""
    app = App(redis_url=redis_url)

    @app.cron("*/5 * * * *")
    async def report() -> None: ...

    with pytest.raises(Exception, match="minute"):
        app.cron("61 * * * *")(lambda: None)
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with running_worker(app, redis_url):
            await wait_until(lambda: client.zcard(scheduled_key("streamflow:queue:{default}")),
                             what="the next tick scheduled")
            [(member, score)] = await client.zrange(
                scheduled_key("streamflow:queue:{default}"), 0, -1, withscores=True)
    finally:
        await client.aclose()
    assert member.startswith(b"cron:report:")
    due = datetime.fromtimestamp(score / 1000, UTC)
    assert due.minute % 5 == 0 and due.second == 0 and due > datetime.now(UTC)


async def test_dedup_returns_the_existing_job(any_redis_url: str) -> None:
    """job_id dedup: enqueueing an id that exists returns that job and runs nothing,
    while it waits and after it finished."""
    app = App(redis_url=any_redis_url)
    runs: list[int] = []

    @app.task
    async def order(n: int) -> int:
        runs.append(n)
        return n

    async with running_worker(app, any_redis_url):
        first = await order.enqueue(7, job_id="order-7")
        again = await order.enqueue(8, job_id="order-7")
        assert first.created and not again.created and again.id == "order-7"
        assert await first.result(timeout=10) == 7
        after = await order.enqueue(9, job_id="order-7")
        assert not after.created and after.enqueue_status is JobStatus.SUCCEEDED
        await anyio.sleep(0.2)
    assert runs == [7]


async def test_cancel_queued_and_scheduled_never_run(redis_url: str) -> None:
    """Cancelled queued and scheduled jobs never run; their status is cancelled and
    result() raises JobCancelled."""
    app = App(redis_url=redis_url)
    runs: list[str] = []

    @app.task
    async def work(tag: str) -> None:
        runs.append(tag)

    queued = await work.enqueue("queued")
    scheduled = await work.enqueue_in(0.3, "scheduled")
    kept = await work.enqueue("kept")
    assert await queued.cancel() and await scheduled.cancel()
    assert not await queued.cancel()  # already cancelled
    await app.aclose()
    async with running_worker(app, redis_url):
        await kept.result(timeout=10)
        await anyio.sleep(0.6)
        with pytest.raises(JobCancelled, match="cancelled by request"):
            await queued.result(timeout=1)
    assert runs == ["kept"]
    assert await scheduled.status() is JobStatus.CANCELLED
    await app.aclose()


async def test_cancel_running_async_job(any_redis_url: str) -> None:
    """Cancelling a running async job cancels its coroutine (CancelledError inside it) and
    its status is cancelled."""
    app = App(redis_url=any_redis_url)
    saw_cancel = anyio.Event()

    @app.task
    async def long() -> None:
        try:
            await anyio.sleep(30)
        except BaseException:
            saw_cancel.set()
            raise

    async with running_worker(app, any_redis_url) as worker:
        job = await long.enqueue()
        await wait_until(lambda: _status_is(job, JobStatus.STARTED), what="started")
        assert await job.cancel()
        with anyio.fail_after(5):
            await saw_cancel.wait()
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)
        await wait_until(lambda: worker.stats().in_flight == 0, what="slot free")
    assert await job.status() is JobStatus.CANCELLED


async def test_cancel_running_sync_job_discards_result(redis_url: str) -> None:
    """A running sync job cannot be stopped: cancel marks it, it runs on, and its result
    is discarded (the status stays cancelled)."""
    app = App(redis_url=redis_url)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    @app.task(threads=1)
    def blocking() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "value"

    async with running_worker(app, redis_url):
        job = await blocking.enqueue()
        await anyio.to_thread.run_sync(started.wait, 10)
        assert await job.cancel()
        release.set()
        await anyio.to_thread.run_sync(finished.wait, 10)
        await anyio.sleep(0.2)
        with pytest.raises(JobCancelled):
            await job.result(timeout=2)
    info = await job.info()
    assert info.status is JobStatus.CANCELLED and info.result is None


async def test_dependencies_run_after_success(any_redis_url: str) -> None:
    """depends_on: a job runs only after all its dependencies succeeded."""
    app = App(redis_url=any_redis_url)
    order: list[str] = []
    gate = anyio.Event()

    @app.task
    async def step(name: str) -> str:
        if name == "a":
            await gate.wait()
        order.append(name)
        return name

    async with running_worker(app, any_redis_url):
        a, b = await step.enqueue("a"), await step.enqueue("b")
        c = await step.enqueue("c", depends_on=[a, b])
        assert c.enqueue_status is JobStatus.DEFERRED
        await b.result(timeout=10)
        await anyio.sleep(0.2)
        assert await c.status() is JobStatus.DEFERRED
        gate.set()
        assert await c.result(timeout=10) == "c"
        d = await step.enqueue("d", depends_on=c)  # already succeeded: runs at once
        assert await d.result(timeout=10) == "d"
    assert order.index("c") > order.index("a") and order.index("c") > order.index("b")


async def test_failed_dependency_cancels_dependents(redis_url: str) -> None:
    """If a dependency fails, its dependents (and theirs) are cancelled with that reason;
    a dependency that does not exist is refused at enqueue."""
    app = App(redis_url=redis_url)
    ran: list[str] = []

    @app.task(retry=Retry(max_attempts=1))
    async def fails() -> None:
        raise RuntimeError("no")

    @app.task
    async def after(tag: str) -> None:
        ran.append(tag)

    async with running_worker(app, redis_url):
        bad = await fails.enqueue()
        child = await after.enqueue("child", depends_on=[bad])
        grandchild = await after.enqueue("grandchild", depends_on=[child])
        with pytest.raises(JobFailed):
            await bad.result(timeout=10)
        with pytest.raises(JobCancelled, match=f"dependency {bad.id} failed"):
            await child.result(timeout=10)
        with pytest.raises(JobCancelled, match=f"dependency {child.id} was cancelled"):
            await grandchild.result(timeout=10)
        late = await after.enqueue("late", depends_on=bad)
        assert late.enqueue_status is JobStatus.CANCELLED
        with pytest.raises(EnqueueError, match="no state"):
            await after.enqueue("x", depends_on="never-enqueued")
    assert ran == []


async def test_dependencies_stay_within_a_hash_tag(redis_url: str) -> None:
    """depends_on a job of a queue with another hash tag is refused at enqueue (one script
    could not release it); queue names may not hold braces."""
    app = App(redis_url=redis_url)

    @app.task(queue="a")
    async def first() -> None: ...

    @app.task(queue="b")
    async def second() -> None: ...

    parent = await first.enqueue()
    with pytest.raises(EnqueueError, match="another hash tag"):
        await second.enqueue(depends_on=parent)
    with pytest.raises(Exception, match="may not contain"):
        app.queue("x}y")
    await app.aclose()
