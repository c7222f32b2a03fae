"""Jobs: enqueue checks, results, statuses, sync functions, retries, foreign producers."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from streamflow import App, Retry
from streamflow.errors import (
    BadJob,
    ConfigError,
    EnqueueError,
    JobFailed,
    JobNotFound,
    ResultTimeout,
    StreamflowError,
)
from streamflow.jobs import JobStatus
from streamflow.keys import JOBS_GROUP, job_key, queue_stream
from streamflow.testing import running_worker, wait_until

pytestmark = pytest.mark.anyio


async def test_async_and_sync_tasks_return_their_results(any_redis_url: str) -> None:
    """An async task runs on the loop and a plain function in a worker thread; both results
    come back through job.result()."""
    app = App(redis_url=any_redis_url)
    threads: list[str] = []

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(threads=2)
    def count_words(text: str) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return {"words": len(text.split())}

    async with running_worker(app, any_redis_url):
        j1 = await add.enqueue(2, b=3)
        j2 = await count_words.enqueue("This is a test sentence")
        assert await j1.result(timeout=10) == 5
        assert await j2.result(timeout=10) == {"words": 5}
        info = await j2.info()
    assert info.status is JobStatus.SUCCEEDED
    assert info.task == "count_words" and info.args == ["This is a test sentence"]
    assert info.attempt == 1 and info.worker
    assert info.enqueued_at and info.started_at and info.ended_at
    assert info.enqueued_at <= info.ended_at
    assert threads and threads[0].startswith("streamflow-count_words")
    assert await add(1, 1) == 2  # a task is still a plain function when called
    assert count_words("a b") == {"words": 2}


async def test_enqueue_checks_arguments_before_writing(redis_url: str) -> None:
    """Arguments that do not fit the signature or cannot be JSON are refused in the caller,
    and nothing is written."""
    app = App(redis_url=redis_url)

    @app.task
    async def greet(name: str, *, loud: bool = False) -> str:
        return name

    with pytest.raises(EnqueueError, match="missing a required argument: 'name'"):
        await greet.enqueue()
    with pytest.raises(EnqueueError, match="unexpected keyword argument 'colour'"):
        await greet.enqueue("x", colour="red")  # type: ignore[call-arg]
    with pytest.raises(EnqueueError, match=r"argument 1 \(set\) cannot be sent"):
        await greet.enqueue({1, 2})  # type: ignore[arg-type]
    with pytest.raises(EnqueueError, match="job_id"):
        await greet.enqueue_call(("x",), job_id="has space")
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.exists(queue_stream("default")) == 0
    finally:
        await client.aclose()
        await app.aclose()


async def test_registration_errors_name_the_problem() -> None:
    """Bad task options and duplicate names stop at registration with a clear message."""
    app = App()

    @app.task
    async def one() -> None: ...

    with pytest.raises(ConfigError, match="already has a task of that name"):
        app.task(name="one")(lambda: None)
    with pytest.raises(ConfigError, match="threads= is for plain functions"):
        app.task(name="other", threads=2)(one.func)
    def two() -> None: ...

    with pytest.raises(ConfigError, match="result_ttl"):
        app.task(result_ttl=0)(two)
    with pytest.raises(ConfigError, match="timeout"):
        app.task(timeout=-1)(two)
    with pytest.raises(ConfigError, match="task name"):
        app.task(lambda: None)


async def test_failed_job_raises_its_error_after_its_own_retries(any_redis_url: str) -> None:
    """A task's own Retry applies: it runs max_attempts times, then result() raises
    JobFailed with the type, message and traceback, and the entry is dead-lettered."""
    app = App(redis_url=any_redis_url)
    calls: list[int] = []

    @app.task(retry=Retry(max_attempts=3, backoff=0.05, jitter=0))
    async def flaky() -> None:
        calls.append(1)
        raise ValueError("bad input")

    @app.task(retry=Retry(max_attempts=1))
    async def once() -> None:
        raise KeyError("k")

    async with running_worker(app, any_redis_url):
        job = await flaky.enqueue()
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=20)
        job2 = await once.enqueue()
        with pytest.raises(JobFailed, match="KeyError"):
            await job2.result(timeout=20)
        info = await job.info()
        client = aioredis.Redis.from_url(any_redis_url)
        try:
            dlq = await client.xlen(queue_stream("default") + ":dlq")
        finally:
            await client.aclose()
    assert len(calls) == 3
    assert failed.value.error_type == "ValueError" and failed.value.error == "bad input"
    assert "raise ValueError" in failed.value.traceback
    assert info.status is JobStatus.FAILED and info.attempt == 3
    assert info.started_at is not None and info.ended_at is not None
    assert dlq == 2


async def test_result_timeout_and_unknown_job(redis_url: str) -> None:
    """Waiting on a job nobody runs raises ResultTimeout naming its status; an unknown id
    raises JobNotFound."""
    app = App(redis_url=redis_url)

    @app.task
    async def never() -> None: ...

    job = await never.enqueue()
    started = time.monotonic()
    with pytest.raises(ResultTimeout, match="status: queued"):
        await job.result(timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3
    with pytest.raises(JobNotFound):
        await app.job("no-such-job").result(timeout=1)
    with pytest.raises(JobNotFound):
        await app.job("no-such-job").info()
    await app.aclose()


async def test_result_wakes_every_waiter(redis_url: str) -> None:
    """Several coroutines awaiting the same job are all woken by its result (no polling)."""
    app = App(redis_url=redis_url)
    gate = anyio.Event()

    @app.task
    async def slow() -> str:
        await gate.wait()
        return "done"

    results: list[str] = []
    async with running_worker(app, redis_url):
        job = await slow.enqueue()

        async def wait_one() -> None:
            results.append(await job.result(timeout=10))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(wait_one)
            await wait_until(lambda: _status_is(job, JobStatus.STARTED), what="job started")
            await anyio.sleep(0.05)  # let the waiters block in BLMOVE
            gate.set()
    assert results == ["done"] * 5


async def _status_is(job: Any, status: JobStatus) -> bool:
    return bool(await job.status() is status)


async def test_sync_job_overrunning_its_timeout_is_a_timeout(any_redis_url: str) -> None:
    """A sync function past its timeout fails the attempt as HandlerTimeout (retried, then
    failed), while its thread runs on and is counted as stuck until it returns."""
    app = App(redis_url=any_redis_url)
    release = threading.Event()

    @app.task(timeout=0.2, threads=1, retry=Retry(max_attempts=1))
    def stuck() -> str:
        release.wait(10)
        return "late"

    async with running_worker(app, any_redis_url):
        job = await stuck.enqueue()
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=10)
        lane = stuck.definition.lane
        assert lane is not None and lane.stuck == 1 and lane.overran == 1
        release.set()
        await wait_until(lambda: lane.stuck == 0, what="stuck thread finished")
    assert failed.value.error_type == "HandlerTimeout"
    assert "timed out after 0.2s" in failed.value.error
    assert (await _info(app, job.id)).status is JobStatus.FAILED


async def _info(app: App, job_id: str) -> Any:
    return await app.job(job_id).info()


async def test_async_job_timeout(redis_url: str) -> None:
    """An async task past its own timeout is cancelled and fails as HandlerTimeout."""
    app = App(redis_url=redis_url)

    @app.task(timeout=0.1, retry=Retry(max_attempts=1))
    async def sleepy() -> None:
        await anyio.sleep(30)

    async with running_worker(app, redis_url):
        job = await sleepy.enqueue()
        with pytest.raises(JobFailed, match="HandlerTimeout"):
            await job.result(timeout=10)


async def test_status_moves_queued_started_succeeded(redis_url: str) -> None:
    """status() reports queued before a worker runs, started (with the worker) while it
    runs, and succeeded after."""
    app = App(redis_url=redis_url)
    gate = anyio.Event()

    @app.task
    async def wait_for_gate() -> int:
        await gate.wait()
        return 1

    job = await wait_for_gate.enqueue()
    assert job.enqueue_status is JobStatus.QUEUED
    assert await job.status() is JobStatus.QUEUED
    await app.aclose()
    async with running_worker(app, redis_url) as worker:
        await wait_until(lambda: _status_is(job, JobStatus.STARTED), what="started")
        info = await job.info()
        assert info.worker == worker.name and info.attempt == 1
        gate.set()
        assert await job.result(timeout=10) == 1
    assert await job.status() is JobStatus.SUCCEEDED
    await app.aclose()


async def test_state_expires(redis_url: str) -> None:
    """A succeeded job's state carries result_ttl as its TTL and a failed one failure_ttl:
    memory does not grow with the number of jobs ever run."""
    app = App(redis_url=redis_url)

    @app.task(result_ttl=120)
    async def ok() -> None: ...

    @app.task(failure_ttl=300, retry=Retry(max_attempts=1))
    async def bad() -> None:
        raise RuntimeError("x")

    async with running_worker(app, redis_url):
        j1, j2 = await ok.enqueue(), await bad.enqueue()
        await j1.result(timeout=10)
        with pytest.raises(JobFailed):
            await j2.result(timeout=10)
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert 100 < await client.ttl(j1.key) <= 120
        assert 280 < await client.ttl(j2.key) <= 300
    finally:
        await client.aclose()


async def test_enqueue_many_and_sync_api(redis_url: str) -> None:
    """enqueue_many pipelines many jobs; enqueue_sync and result_sync work without a loop,
    and are refused inside one."""
    app = App(redis_url=redis_url)

    @app.task
    async def square(n: int) -> int:
        return n * n

    jobs = await square.enqueue_many([((i,), {}) for i in range(300)])
    assert len({j.id for j in jobs}) == 300
    with pytest.raises(StreamflowError, match="running event loop"):
        square.enqueue_sync(2)
    async with running_worker(app, redis_url):
        values = [await j.result(timeout=10) for j in jobs]

        def from_thread() -> int:
            job = square.enqueue_sync(9)
            value: int = job.result_sync(timeout=10)
            return value

        assert await anyio.to_thread.run_sync(from_thread) == 81
    assert values == [i * i for i in range(300)]
    await app.aclose()


async def test_foreign_producers(any_redis_url: str) -> None:
    """Plain XADDs enqueue jobs: the sf:* wire format, and the task_field style whose
    fields become keyword arguments converted by the annotations; a bad one is
    dead-lettered and recorded."""
    app = App(redis_url=any_redis_url)
    app.queue("tasks", stream="tasks", task_field="task_type")
    seen: list[Any] = []

    @app.task(queue="tasks")
    async def calculate_square(number: int, label: str = "", exact: bool = False) -> int:
        seen.append((number, label, exact))
        return number * number

    client = aioredis.Redis.from_url(any_redis_url)
    try:
        await client.xadd("tasks", {"task_type": "calculate_square", "number": "4",
                                    "label": "four", "exact": "true"})
        await client.xadd("tasks", {"sf:task": "calculate_square", "sf:job": "ext-1",
                                    "sf:args": "[5]"})
        await client.xadd("tasks", {"task_type": "calculate_square", "number": "four"})
        await client.xadd("tasks", {"task_type": "no_such_task"})
        async with running_worker(app, any_redis_url):
            assert await app.job("ext-1", "tasks").result(timeout=10) == 25
            await wait_until(lambda: _xlen(client, "tasks:dlq", 2), what="2 dead letters")
        records = await client.xrange("tasks:dlq")
    finally:
        await client.aclose()
    assert (4, "four", True) in seen and (5, "", False) in seen
    errors = b" ".join(v for _, r in records for k, v in r.items() if k == b"dlq:error")
    assert b"number='four'" in errors and b"no task named 'no_such_task'" in errors
    assert issubclass(BadJob, Exception)


async def _xlen(client: Any, key: str, n: int) -> bool:
    return bool(await client.xlen(key) >= n)


async def test_job_entry_layout_is_documented_format(redis_url: str) -> None:
    """An enqueued job is one entry with sf:task, sf:job, sf:args and sf:kwargs, and its
    state hash is streamflow:job:{default}:<id>."""
    app = App(redis_url=redis_url)

    @app.task
    async def hello(name: str, punct: str = "!") -> str:
        return name + punct

    job = await hello.enqueue("world", punct="?")
    client = aioredis.Redis.from_url(redis_url)
    try:
        [(_, fields)] = await client.xrange(queue_stream("default"))
        state = await client.hgetall(job_key(queue_stream("default"), job.id))
        groups = await client.xinfo_groups(queue_stream("default"))
    finally:
        await client.aclose()
        await app.aclose()
    assert fields == {b"sf:task": b"hello", b"sf:job": job.id.encode(),
                      b"sf:args": b'["world"]', b"sf:kwargs": b'{"punct":"?"}'}
    assert state[b"status"] == b"queued" and state[b"task"] == b"hello"
    assert groups == [] and JOBS_GROUP == "streamflow:jobs"


async def test_first_result_on_a_fresh_server_is_immediate(redis_url: str) -> None:
    """result() of a finished job returns at once even when the server has never seen the
    wait script (it used to block a whole wait chunk after a NOSCRIPT)."""
    app = App(redis_url=redis_url)

    @app.task
    async def one() -> int:
        return 1

    async with running_worker(app, redis_url):
        job = await one.enqueue()
        assert await job.result(timeout=10) == 1
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    started = time.monotonic()
    assert await job.result(timeout=5) == 1
    assert time.monotonic() - started < 1
    await app.aclose()


async def test_results_survive_a_script_flush(redis_url: str) -> None:
    """FINISH goes by digest once loaded; after the server forgot its scripts (SCRIPT FLUSH,
    as after a restart) the batch is sent again in full and the results are stored."""
    app = App(redis_url=redis_url)

    @app.task
    async def echo(n: int) -> int:
        return n

    client = aioredis.Redis.from_url(redis_url)
    try:
        async with running_worker(app, redis_url) as worker:
            assert [await (await echo.enqueue(i)).result(timeout=10) for i in range(3)] == [0, 1, 2]
            await client.script_flush()
            jobs = [await echo.enqueue(i) for i in range(20)]
            assert [await j.result(timeout=10) for j in jobs] == list(range(20))
            assert worker.stats().unacked == 0
    finally:
        await client.aclose()
