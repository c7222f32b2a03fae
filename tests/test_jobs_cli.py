"""The operator's job commands: ``streamflow job ID``, ``jobs QUEUE``, ``jobs cancel|requeue``
and the job counts of ``streamflow info``.

Against the private Redis 7 and Valkey 9 servers (``any_redis_url``), with real workers
in-process (:func:`streamflow.testing.running_worker`) and the command line in a
subprocess (``python -m streamflow ...``), so the worker's logs never mix with its output.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis
from cli_run import sf, sf_json

from streamflow import App, Retry
from streamflow.admin.jobs import CANCEL_REASON, VALUE_OPTIONS, expand_shorthand
from streamflow.cli import build_parser
from streamflow.errors import JobFailed, JobNotFound
from streamflow.jobs import Job
from streamflow.keys import scheduled_key
from streamflow.testing import running_worker, wait_until

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
STREAM = "streamflow:queue:{default}"  # the stream of queue "default"

#: Whether ``charge`` fails (module level: the requeue test flips it between two runs).
CHARGE_FAILS = {"now": True}


def two_queues(url: str) -> tuple[App, Any, Any]:
    """An app with task ``add`` on queue default and ``send`` on queue emails."""
    app = App(redis_url=url)

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(queue="emails")
    async def send(to: str) -> None: ...

    return app, add, send


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit 2 and one ``streamflow: error:`` line; return it."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamflow: error: "), result.stderr
    return lines[0]


async def status_is(job: Job, status: str) -> bool:
    """True when ``job`` has ``status`` now."""
    return str(await job.status()) == status


def field_line(text: str, name: str) -> str:
    """The value on the ``name   value`` line of ``job ID``'s text."""
    match = re.search(rf"^{re.escape(name)} +(.*)$", text, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{text}"
    return match.group(1)


async def test_job_shows_result_error_with_traceback_and_reason(any_redis_url: str) -> None:
    """``job ID`` shows a succeeded job's result, a failed job's error type, message and
    traceback, and a cancelled job's reason, with task, args, attempts and worker."""
    url = any_redis_url
    app = App(redis_url=url)

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(retry=Retry(max_attempts=1))
    def boom(x: int) -> None:
        raise ValueError(f"bad input {x}")

    async with running_worker(app, url) as worker:
        ok = await add.enqueue(2, 3, job_id="sum")
        bad = await boom.enqueue(7, job_id="bad")
        assert await ok.result(timeout=10) == 5
        with pytest.raises(JobFailed):
            await bad.result(timeout=10)
        later = await add.enqueue_in(3600, 1, 1, job_id="later")
        assert await later.cancel("not needed any more")
    docs = {jid: await sf_json(url, "job", jid, "--queue", "default")
            for jid in ("sum", "bad", "later")}
    assert {k: docs["sum"][k] for k in ("status", "task", "args", "result", "attempt", "worker",
                                         "queue", "stream")} == {
        "status": "succeeded", "task": "add", "args": [2, 3], "result": 5, "attempt": 1,
        "worker": worker.name, "queue": "default", "stream": STREAM}
    assert docs["sum"]["ended_at"] is not None and docs["sum"]["error"] is None
    assert (docs["bad"]["status"], docs["bad"]["error_type"], docs["bad"]["error"]) == (
        "failed", "ValueError", "bad input 7")
    assert 'raise ValueError(f"bad input {x}")' in docs["bad"]["traceback"]
    assert docs["bad"]["attempt"] == 1 and docs["bad"]["result"] is None
    assert (docs["later"]["status"], docs["later"]["reason"]) == ("cancelled", "not needed any more")
    assert docs["later"]["scheduled_for"] is not None

    text = (await sf(url, "job", "sum")).stdout
    assert text.splitlines()[0] == f"job sum in queue default (stream {STREAM})"
    assert (field_line(text, "status"), field_line(text, "result")) == ("succeeded", "5")
    assert field_line(text, "args") == "[2, 3]" and field_line(text, "worker") == worker.name
    text = (await sf(url, "job", "bad")).stdout
    assert field_line(text, "error") == "ValueError: bad input 7"
    assert "\ntraceback:\n" in text and "ValueError: bad input 7" in text.split("traceback:")[1]
    assert not re.search(r"^result ", text, re.MULTILINE)  # no result line for a failed job
    text = (await sf(url, "job", "later")).stdout
    assert (field_line(text, "status"), field_line(text, "reason")) == (
        "cancelled", "not needed any more")


async def test_job_without_queue_finds_the_queue_that_has_it(any_redis_url: str) -> None:
    """Without ``--queue``, ``job ID`` looks in every registered queue and names the one that
    has the job; an id in two queues asks for ``--queue``, which then picks one."""
    url = any_redis_url
    app, add, send = two_queues(url)

    async with app:
        await add.enqueue(1, 2)
        await send.enqueue("a@example.com", job_id="mail-1")
        await send.enqueue("b@example.com", job_id="dup")
        await add.enqueue(3, 4, job_id="dup")
    doc = await sf_json(url, "job", "mail-1")
    assert (doc["queue"], doc["stream"], doc["status"], doc["args"]) == (
        "emails", "streamflow:queue:{emails}", "queued", ["a@example.com"])
    text = (await sf(url, "job", "mail-1")).stdout
    assert text.startswith("job mail-1 in queue emails (stream streamflow:queue:{emails})\n")
    line = one_error_line(await sf(url, "job", "dup"))
    assert "'dup' is in several queues (default, emails); give one with --queue" in line
    assert (await sf_json(url, "job", "dup", "--queue", "default"))["args"] == [3, 4]
    assert (await sf_json(url, "job", "dup", "--queue", "emails"))["args"] == ["b@example.com"]


async def test_an_unknown_id_is_a_clear_error_with_a_non_zero_exit(any_redis_url: str) -> None:
    """``job``, ``jobs cancel`` and ``jobs requeue`` of an id no queue keeps (a waiter's mark is
    no job) exit 2 with one line naming the id and the queues looked in (or saying none is
    registered)."""
    url = any_redis_url
    line = one_error_line(await sf(url, "job", "ghost"))
    assert line == ("streamflow: error: no job 'ghost' in any queue (none is registered in "
                    "streamflow:queues) (never enqueued, or its state expired)")
    app, add, send = two_queues(url)

    async with app:
        await add.enqueue(1, 2)
        await send.enqueue("a@example.com")
        with pytest.raises(JobNotFound):  # waiting for it leaves a waiter's mark, no job
            await app.job("ghost", "emails").result(timeout=0.2)
    c = redis.Redis.from_url(url)
    try:
        assert c.hkeys("streamflow:job:{emails}:ghost") == [b"waiting"]
    finally:
        c.close()
    for command in (["job"], ["jobs", "cancel"], ["jobs", "requeue"]):
        line = one_error_line(await sf(url, *command, "ghost"))
        assert line == ("streamflow: error: no job 'ghost' in any of the queues 'default', "
                        "'emails' (never enqueued, or its state expired)"), command
    line = one_error_line(await sf(url, "job", "ghost", "--queue", "emails"))
    assert "no job 'ghost' in queue 'emails'" in line
    line = one_error_line(await sf(url, "job", "ghost", "--queue", "nope"))
    assert line == ("streamflow: error: queue 'nope' is not registered in streamflow:queues "
                    "(registered: default, emails)")
    assert "queue 'nope' is not registered" in one_error_line(await sf(url, "jobs", "nope"))


async def test_jobs_counts_every_status_and_lists_the_jobs_of_each(any_redis_url: str) -> None:
    """``jobs QUEUE`` counts queued (enqueued while no worker ran), scheduled, running,
    retrying and failed jobs, and lists each one under its status, in JSON and as text
    (and ``job ID`` of the running one names its worker)."""
    url = any_redis_url
    release = anyio.Event()
    app = App(redis_url=url)
    app.queue("default", concurrency=1)  # the held job keeps the queued ones waiting

    @app.task()
    async def hold() -> str:
        await release.wait()
        return "released"

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(retry=Retry(max_attempts=1))
    def boom() -> None:
        raise ValueError("boom")

    @app.task(retry=Retry(max_attempts=2, backoff=3600, max_backoff=3600))
    def flaky() -> None:
        raise RuntimeError("try again in an hour")

    async with running_worker(app, url):
        failed, retrying = await boom.enqueue(job_id="boom"), await flaky.enqueue(job_id="flaky")
        await wait_until(lambda: status_is(failed, "failed"), what="boom failed")
        await wait_until(lambda: status_is(retrying, "retrying"), what="flaky parked for retry")
    held = await hold.enqueue(job_id="hold")  # no worker runs: these wait in the stream
    for i in range(3):
        await add.enqueue(i, i, job_id=f"q-{i}")
    await add.enqueue_in(3600, 5, 6, job_id="later")
    await app.aclose()
    try:
        async with running_worker(app, url) as worker:
            await wait_until(lambda: status_is(held, "started"), what="hold running")
            doc = await sf_json(url, "jobs", "default")
            text = (await sf(url, "jobs", "default")).stdout
            held_text = (await sf(url, "job", "hold")).stdout
            release.set()
            assert await held.result(timeout=10) == "released"
    finally:
        release.set()
    counts = {k: doc["counts"][k] for k in ("queued", "scheduled", "running", "retrying",
                                            "failed", "queued_exact")}
    assert counts == {"queued": 3, "scheduled": 1, "running": 1, "retrying": 1, "failed": 1,
                      "queued_exact": True}
    lists = doc["lists"]
    assert [j["id"] for j in lists["queued"]["jobs"]] == ["q-0", "q-1", "q-2"]
    assert [(j["task"], j["status"]) for j in lists["queued"]["jobs"]] == [("add", "queued")] * 3
    (sched,) = lists["scheduled"]["jobs"]
    assert (sched["id"], sched["task"]) == ("later", "add")
    assert 3500_000 < sched["due_in_ms"] <= 3600_000 and sched["due_at"].endswith("Z")
    (running,) = lists["running"]["jobs"]
    assert (running["id"], running["status"], running["worker"], running["attempt"]) == (
        "hold", "started", worker.name, 1)
    (parked,) = lists["retrying"]["jobs"]
    assert (parked["id"], parked["status"], parked["worker"], parked["attempt"]) == (
        "flaky", "retrying", None, 1)
    (dead,) = lists["failed"]["jobs"]
    assert (dead["id"], dead["error_type"], dead["error"]) == ("boom", "ValueError", "boom")
    assert not any(lst["more"] for lst in lists.values())

    assert (field_line(held_text, "status"), field_line(held_text, "worker")) == (
        "started", worker.name)
    assert field_line(held_text, "started").endswith("(its entry's last delivery or lease renewal)")
    lines = text.splitlines()
    assert lines[0] == f"queue default (stream {STREAM})"
    header = lines.index("QUEUED  SCHEDULED  RUNNING  RETRYING  FAILED")
    assert lines[header + 1].split() == ["3", "1", "1", "1", "1"]
    for title, job_id in (("queued (3 of 3):", "q-2"), ("scheduled (1 of 1):", "later"),
                          ("running (1 of 1):", "hold"), ("retrying (1 of 1):", "flaky"),
                          ("failed (1 of 1):", "boom")):
        start = lines.index(title)
        assert lines[start + 1].startswith("JOB ID"), text
        assert any(line.split()[0] == job_id for line in lines[start + 2:start + 5]), text


async def test_jobs_status_failed_json_and_requeue_runs_the_job_again(any_redis_url: str) -> None:
    """``jobs Q --status failed --json`` lists a failed job with its error; ``jobs requeue ID``
    runs it again (it succeeds once its task does), after which it is no longer listed as
    failed, and requeueing a succeeded job changes nothing and exits 1."""
    url = any_redis_url
    CHARGE_FAILS["now"] = True
    app = App(redis_url=url)

    @app.task(retry=Retry(max_attempts=1))
    def charge(order: int) -> str:
        if CHARGE_FAILS["now"]:
            raise RuntimeError(f"card declined for order {order}")
        return f"charged {order}"

    async with running_worker(app, url):
        job = await charge.enqueue(7, job_id="order-7")
        await wait_until(lambda: status_is(job, "failed"), what="order-7 failed")
        doc = await sf_json(url, "jobs", "default", "--status", "failed")
        assert (doc["status"], doc["total"], doc["more"], doc["skipped"]) == ("failed", 1, False, 0)
        (failed,) = doc["jobs"]
        assert {k: failed[k] for k in ("id", "task", "status", "attempt", "error_type", "error",
                                       "state_kept")} == {
            "id": "order-7", "task": "charge", "status": "failed", "attempt": 1,
            "error_type": "RuntimeError", "error": "card declined for order 7",
            "state_kept": True}
        assert failed["dlq_id"] and failed["entry"] and failed["ended_at"].endswith("Z")

        CHARGE_FAILS["now"] = False
        result = await sf(url, "jobs", "requeue", "order-7")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("requeued job order-7 of queue default (it was failed)")
        assert await job.result(timeout=10) == "charged 7"
        info = await job.info()
        assert (info.status, info.attempt, info.error) == ("succeeded", 1, None)
    assert "was deleted, so a later dlq replay does not run it once more" in result.stdout
    doc = await sf_json(url, "jobs", "default", "--status", "failed")
    assert (doc["total"], doc["jobs"], doc["skipped"]) == (0, [], 0)  # the requeue deleted it
    client = aioredis.Redis.from_url(url)
    try:
        assert await client.xlen(STREAM + ":dlq") == 0  # nothing a dlq replay could run again
    finally:
        await client.aclose()
    again = await sf(url, "jobs", "requeue", "order-7", "--queue", "default")
    assert again.returncode == 1, again.stderr
    assert "not requeued: it is succeeded" in again.stdout


async def test_jobs_cancel_stops_a_scheduled_and_a_running_job(any_redis_url: str) -> None:
    """``jobs cancel ID`` takes a scheduled job out of the scheduled set and cancels a running
    async task (its coroutine sees CancelledError) with the given reason; cancelling a
    cancelled job again exits 1."""
    url = any_redis_url
    release, cancelled = anyio.Event(), anyio.Event()
    app = App(redis_url=url)

    @app.task()
    async def hold() -> str:
        try:
            await release.wait()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return "released"

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    try:
        async with running_worker(app, url):
            await add.enqueue_in(3600, 1, 2, job_id="later")
            running = await hold.enqueue(job_id="hold")
            await wait_until(lambda: status_is(running, "started"), what="hold running")
            result = await sf(url, "jobs", "cancel", "later")
            assert (result.returncode, result.stdout.strip()) == (
                0, "cancelled job later of queue default (it was scheduled)"), result.stderr
            result = await sf(url, "jobs", "cancel", "hold", "--reason", "operator stop")
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("cancelled job hold of queue default (it was started)")
            with anyio.fail_after(10):
                await cancelled.wait()
            await wait_until(lambda: status_is(running, "cancelled"), what="hold cancelled")
    finally:
        release.set()
    c = redis.Redis.from_url(url)
    try:
        assert c.zcard(scheduled_key(STREAM)) == 0
    finally:
        c.close()
    doc = await sf_json(url, "job", "later")
    assert (doc["status"], doc["reason"]) == ("cancelled", CANCEL_REASON)
    doc = await sf_json(url, "job", "hold")
    assert (doc["status"], doc["reason"]) == ("cancelled", "operator stop")
    again = await sf(url, "jobs", "cancel", "later")
    assert again.returncode == 1, again.stderr
    assert again.stdout.strip() == "job later of queue default not cancelled: it is cancelled already"
    cancelled_list = await sf_json(url, "jobs", "default", "--status", "cancelled")
    assert [j["id"] for j in cancelled_list["jobs"]] == ["hold"]  # "later" never had an entry


async def test_info_shows_job_counts_per_registered_queue(any_redis_url: str) -> None:
    """``info`` has a line per registered queue: queued (the group's lag, counted entry by entry
    once a cancelled job's deletion makes the lag unknown, or the stream's length while no
    group exists), scheduled, running, retrying and failed (the DLQ length)."""
    url = any_redis_url
    app = App(redis_url=url)

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(retry=Retry(max_attempts=1))
    def boom() -> None:
        raise ValueError("boom")

    producer = App(redis_url=url)  # no worker of this app runs: "emails" never gets a group

    @producer.task(queue="emails")
    async def send(to: str) -> None: ...

    async with running_worker(app, url):
        failed = await boom.enqueue()
        await wait_until(lambda: status_is(failed, "failed"), what="boom failed")
    await add.enqueue_in(3600, 1, 1)
    queued = [await add.enqueue(i, i) for i in range(3)]  # no worker runs now
    await queued[1].cancel()  # deletes its entry, ahead of the group: the lag is unknown now
    async with producer:
        for to in ("a", "b"):
            await send.enqueue(to)
    await app.aclose()
    doc = await sf_json(url, "info")
    queues = {q["queue"]: q for q in doc["queues"]}
    assert set(queues) == {"default", "emails"}
    keys = ("queued", "queued_exact", "scheduled", "running", "retrying", "failed")
    assert {k: queues["default"][k] for k in keys} == {
        "queued": 2, "queued_exact": True, "scheduled": 1, "running": 0, "retrying": 0, "failed": 1}
    assert {k: queues["emails"][k] for k in keys} == {
        "queued": 2, "queued_exact": True, "scheduled": 0, "running": 0, "retrying": 0, "failed": 0}
    assert queues["emails"]["last_delivered_id"] is None
    assert doc["hidden_queues"] == [] and doc["queues_note"] is None
    lines = (await sf(url, "info")).stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["QUEUE", "STREAM"])
    assert lines[header].split() == ["QUEUE", "STREAM", "QUEUED", "SCHEDULED", "RUNNING",
                                     "RETRYING", "FAILED"]
    assert lines[header + 1].split() == ["default", STREAM, "2", "1", "0", "0", "1"]
    assert lines[header + 2].split() == ["emails", "streamflow:queue:{emails}", "2", "0", "0",
                                         "0", "0"]
    named = await sf_json(url, "info", "streamflow:queue:{emails}")  # no worker group there
    assert named["queues"] == []
    named = await sf_json(url, "info", STREAM)
    assert [q["queue"] for q in named["queues"]] == ["default"]


async def test_limit_bounds_each_list(any_redis_url: str) -> None:
    """``--limit N`` lists at most N jobs and says more are left; without ``--status`` each
    status shows at most the first five."""
    url = any_redis_url
    app = App(redis_url=url)

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        for i in range(7):
            await add.enqueue(i, i, job_id=f"q-{i}")
    doc = await sf_json(url, "jobs", "default", "--status", "queued", "--limit", "2")
    assert ([j["id"] for j in doc["jobs"]], doc["total"], doc["more"]) == (["q-0", "q-1"], 7, True)
    text = (await sf(url, "jobs", "default", "--status", "queued", "--limit", "2")).stdout
    assert "queued (2 of 7):" in text and "(more not shown; use --limit N above 2)" in text
    doc = await sf_json(url, "jobs", "default")
    assert [j["id"] for j in doc["lists"]["queued"]["jobs"]] == [f"q-{i}" for i in range(5)]
    assert doc["lists"]["queued"]["more"] is True and doc["counts"]["queued"] == 7


async def test_a_queue_named_like_a_subcommand_is_given_with_queue(any_redis_url: str) -> None:
    """``jobs QUEUE`` is ``jobs list QUEUE``; a queue named ``cancel`` is listed with
    ``jobs --queue cancel`` or ``jobs list cancel``, while ``jobs cancel`` wants a job id."""
    assert expand_shorthand(["jobs", "default", "--json"]) == ["jobs", "list", "default", "--json"]
    assert expand_shorthand(["jobs", "--redis-url", "u", "cancel", "x"]) == [
        "jobs", "--redis-url", "u", "cancel", "x"]
    assert expand_shorthand(["jobs", "--queue", "cancel"]) == ["jobs", "list", "--queue", "cancel"]
    assert expand_shorthand(["jobs", "--help"]) == ["jobs", "--help"]
    assert expand_shorthand(["info", "default"]) == ["info", "default"]
    url = any_redis_url
    app = App(redis_url=url)

    @app.task(queue="cancel")
    async def odd() -> None: ...

    async with app:
        await odd.enqueue(job_id="odd-1")
    for args in (["jobs", "--queue", "cancel"], ["jobs", "list", "cancel"]):
        doc = await sf_json(url, *args)
        assert (doc["queue"], doc["counts"]["queued"]) == ("cancel", 1), args
        assert [j["id"] for j in doc["lists"]["queued"]["jobs"]] == ["odd-1"]
    result = await sf(url, "jobs", "cancel")
    assert result.returncode == 2 and "the following arguments are required: ID" in result.stderr
    result = await sf(url, "jobs", "cancel", "odd-1")  # a job id, found in queue "cancel"
    assert result.stdout.strip() == "cancelled job odd-1 of queue cancel (it was queued)"


async def test_a_job_no_worker_has_read_yet_can_be_cancelled(any_redis_url: str) -> None:
    """A queued job of a queue whose group no worker created yet is cancelled by ``Job.cancel()``
    and by ``jobs cancel ID``, its entry deleted (the CANCEL script once failed with NOGROUP)."""
    url = any_redis_url
    app = App(redis_url=url)

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        first = await add.enqueue(1, 2, job_id="first")
        await add.enqueue(3, 4, job_id="second")
        assert await first.cancel() is True
        assert await first.status() == "cancelled"
    result = await sf(url, "jobs", "cancel", "second")
    assert (result.returncode, result.stdout.strip()) == (
        0, "cancelled job second of queue default (it was queued)"), result.stderr
    c = redis.Redis.from_url(url)
    try:
        assert c.xlen(STREAM) == 0
        assert c.hget("streamflow:job:{default}:second", "status") == b"cancelled"
    finally:
        c.close()


def test_the_shorthand_knows_every_option_that_takes_a_value() -> None:
    """``expand_shorthand`` skips the value of every ``jobs`` option that takes one (so
    ``jobs --queue cancel`` lists queue "cancel"): its list matches the parsers' options."""

    def subparsers(parser: argparse.ArgumentParser) -> Any:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return action

    jobs = subparsers(subparsers(build_parser()).choices["jobs"])
    taking = {opt for p in jobs.choices.values() for a in p._actions if a.nargs != 0
              for opt in a.option_strings}
    assert taking == VALUE_OPTIONS
