"""Least-privilege ACL users for job queues: the three lines of docs/security.md, "Job queues".

The worker, producer and operator lines are read from the document itself (so the
document and this test cannot drift), created on the private server with its default
user, and used for everything each role does: a worker (``running_worker``) as the
worker user, tasks enqueued, awaited, cancelled and requeued as the producer user, the
``streamflow job`` / ``jobs`` / ``info`` commands (subprocesses) as the operator user.
The server's ``ACL LOG`` must stay empty: no command was ever refused, also not one
inside a script or on the cancel listener's connection, whose failures are only logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from acl_users import AclUsers
from cli_run import sf, sf_json
from redis.exceptions import ResponseError

from streamflow import App, JobCancelled, JobFailed, Retry
from streamflow.connection import Connection
from streamflow.jobs import Job, JobStatus
from streamflow.keys import queue_stream, scheduled_key
from streamflow.permissions import PermissionDenied, check_permissions, worker_probes
from streamflow.policies import Retention
from streamflow.testing import make_worker, running_worker, wait_until

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "security.md"
STREAM = queue_stream("default")  # streamflow:queue:{default}
ROLES = {"worker": "jobs-worker", "producer": "jobs-producer", "operator": "jobs-admin"}


# -- the documented lines ------------------------------------------------------------------


def documented_rules() -> dict[str, list[str]]:
    """The rules of each ``ACL SETUSER`` line of the "### Job queues" section, by user name.

    ``on >CHANGE-ME`` is left out (the test sets its own password); a selector
    ``(...)`` is one rule, as ``ACL SETUSER`` takes it.
    """
    text = DOCS.read_text()
    start = text.index("\n### Job queues\n")
    end = text.index("\n### ", start + 1)
    rules: dict[str, list[str]] = {}
    for line in text[start:end].splitlines():
        if line.startswith("ACL SETUSER "):
            name, rest = line.removeprefix("ACL SETUSER ").split(" ", 1)
            tokens = re.findall(r"\([^)]*\)|\S+", rest)
            assert tokens[:2] == ["on", ">CHANGE-ME"], line
            rules[name] = tokens[2:]
    assert sorted(rules) == sorted(ROLES.values()), rules
    return rules


def without(rules: list[str], drop: str) -> list[str]:
    """``rules`` with the word ``drop`` removed from every rule and selector it occurs in."""
    out = []
    for rule in rules:
        if rule.startswith("("):
            words = [w for w in rule[1:-1].split() if w != drop]
            out.append(f"({' '.join(words)})")
        elif rule != drop:
            out.append(rule)
    assert out != rules, f"{drop} is not in the rules"
    return out


class Users(AclUsers):
    """:class:`AclUsers` with the documented job-queue roles; ACL LOG reset at the start."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.admin.execute_command("ACL", "LOG", "RESET")

    def role(self, role: str) -> str:
        """Create the documented user of ``role``; its URL."""
        name = ROLES[role]
        return self.user(name, documented_rules()[name])


@pytest.fixture
def users(any_redis_url: str) -> Iterator[Users]:
    """ACL users on the flushed private Redis 7 / Valkey 9 server (removed afterwards)."""
    u = Users(any_redis_url)
    try:
        yield u
    finally:
        u.close()


# -- the tasks -------------------------------------------------------------------------------


class Tasks:
    """The tasks of a test, registered on one app (the worker's or the producer's).

    The functions are shared: a producer app registers the same ones under the same names,
    as a separate producer process would, and enqueues through its own connection.
    """

    def __init__(self, app: App, state: dict[str, Any], *, retention: Retention | None = None,
                 periodic: bool = False) -> None:
        if retention is not None:
            app.queue("default", retention=retention)
        self.add = app.task(name="add")(_add)
        self.words = app.task(name="words", threads=2)(_words)
        self.gated = app.task(name="gated", retry=Retry(max_attempts=1))(_gated(state))
        self.hold = app.task(name="hold")(_hold(state))
        self.once = app.task(name="once", retry=Retry(max_attempts=1))(_once(state))
        self.flaky = app.task(name="flaky", retry=Retry(max_attempts=2, backoff=0.05,
                                                        jitter=0))(_flaky(state))
        if periodic:
            app.periodic(every=0.2, name="tick")(_tick(state))


async def _add(a: int, b: int) -> int:
    return a + b


def _words(text: str) -> int:
    return len(text.split())


def _gated(state: dict[str, Any]) -> Any:
    async def gated(fail: bool = False) -> str:
        await state["gate"].wait()
        if fail:
            raise RuntimeError("gated job failed")
        return "opened"
    return gated


def _hold(state: dict[str, Any]) -> Any:
    async def hold() -> str:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            state["hold_cancelled"].set()
            raise
        return "never"
    return hold


def _once(state: dict[str, Any]) -> Any:
    async def once() -> str:
        state["once_runs"] += 1
        if state["once_runs"] == 1:
            raise ValueError("first run fails")
        return "second run"
    return once


def _flaky(state: dict[str, Any]) -> Any:
    async def flaky() -> int:
        state["flaky_runs"] += 1
        if state["flaky_runs"] == 1:
            raise RuntimeError("retried")
        return state["flaky_runs"]
    return flaky


def _tick(state: dict[str, Any]) -> Any:
    async def tick() -> None:
        state["ticks"] += 1
    return tick


def new_state() -> dict[str, Any]:
    """What the tasks of one test share."""
    return {"gate": anyio.Event(), "hold_cancelled": anyio.Event(), "once_runs": 0,
            "flaky_runs": 0, "ticks": 0}


async def status_is(job: Job, status: str) -> bool:
    """True when ``job`` has ``status`` now."""
    return str(await job.status()) == status


def calls(admin: redis.Redis, command: str) -> int:
    """How often the server ran ``command`` (commandstats), scripts' calls included."""
    stats: dict[str, Any] = admin.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


# -- tests -----------------------------------------------------------------------------------


def test_documented_job_rules_allow_no_destructive_command(users: Users) -> None:
    """ACL DRYRUN: each documented job user may send its own direct commands, and none may
    delete a stream or a job, destroy the group, or touch another queue's keys."""
    for role in ROLES:
        users.role(role)
    rules = documented_rules()
    for line in rules.values():
        joined = " ".join(line)
        assert "@all" not in joined.replace("-@all", "") and "~*" not in joined
        assert "+@" not in joined and "allkeys" not in joined and "allchannels" not in joined
    job = "streamflow:job:{default}:j1"
    other = "streamflow:job:{emails}:j1"
    allowed = {
        "jobs-worker": [
            ["XREADGROUP", "GROUP", "streamflow:jobs", "w1", "COUNT", 10, "STREAMS", STREAM, ">"],
            ["XTRIM", STREAM, "MINID", "~", "1-0"], ["SUBSCRIBE", "streamflow:jobs:cancel"],
            ["HSET", "streamflow:queues", "default", STREAM],
            ["EVALSHA", "0" * 40, 1, scheduled_key(STREAM)],
        ],
        "jobs-producer": [
            ["EVALSHA", "0" * 40, 3, STREAM, job, scheduled_key(STREAM)],
            ["BLMOVE", job + ":done", job + ":done", "RIGHT", "LEFT", 1],
            ["HGETALL", job], ["XPENDING", STREAM, "streamflow:jobs", "1-0", "1-0", 1],
            ["SCRIPT", "LOAD", "return 1"], ["HSET", "streamflow:queues", "default", STREAM],
        ],
        "jobs-admin": [
            ["HGETALL", "streamflow:queues"], ["HEXISTS", job, "status"], ["HGETALL", job],
            ["TYPE", STREAM], ["XINFO", "GROUPS", STREAM], ["ZCARD", scheduled_key(STREAM)],
            ["XREVRANGE", STREAM + ":dlq", "+", "-", "COUNT", 5], ["SCAN", 0, "TYPE", "stream"],
            ["EVAL", "return 1", 3, job, STREAM, scheduled_key(STREAM)],
        ],
    }
    destructive = [
        ["DEL", STREAM], ["DEL", job], ["DEL", scheduled_key(STREAM)], ["DEL", "streamflow:queues"],
        ["XGROUP", "DESTROY", STREAM, "streamflow:jobs"], ["XGROUP", "SETID", STREAM,
                                                          "streamflow:jobs", "$"],
        ["SET", job, "x"], ["EXPIRE", STREAM, 1], ["ZREM", STREAM, "x"], ["FLUSHALL"],
        ["KEYS", "*"], ["HSET", other, "status", "succeeded"], ["XADD", queue_stream("emails"),
                                                               "*", "a", "b"],
        ["EVAL", "return 1", 1, other], ["SUBSCRIBE", "other-channel"],
        ["HSET", STREAM + ":dlq", "a", "b"], ["RPUSH", job, "x"],
    ]
    for name, commands in allowed.items():
        for command in commands:
            assert users.may(name, *command), (name, command)
        for command in destructive:
            assert not users.may(name, *command), (name, command)
    assert not users.may("jobs-worker", "PUBLISH", "streamflow:jobs:cancel", "j1")
    assert not users.may("jobs-worker", "XDEL", STREAM, "1-0")
    assert not users.may("jobs-producer", "XREADGROUP", "GROUP", "streamflow:jobs", "w1",
                            "STREAMS", STREAM, ">")
    assert not users.may("jobs-producer", "XTRIM", STREAM, "MAXLEN", 0)
    assert not users.may("jobs-admin", "XTRIM", STREAM, "MAXLEN", 0)
    assert users.denials() == [], users.denials()


async def test_worker_and_producer_do_everything_without_an_acl_denial(users: Users) -> None:
    """A worker and a producer with the documented job rules run, retry, fail, dead-letter,
    delay, deduplicate, chain, cancel, requeue, tick and trim, and ACL LOG stays empty."""
    admin = users.admin
    worker_url, producer_url = users.role("worker"), users.role("producer")
    state = new_state()
    worker_app, producer = App(), App(redis_url=producer_url)
    Tasks(worker_app, state, retention=Retention(max_len=3), periodic=True)
    p = Tasks(producer, state, retention=Retention(max_len=3))
    try:
        # Before any worker ran: a queued entry that no group read is deleted by cancel.
        early = await p.add.enqueue_call((9, 9), job_id="early")
        assert await early.cancel()
        with pytest.raises(JobCancelled):
            await early.result(timeout=5)
        trims = calls(admin, "xtrim")
        async with running_worker(worker_app, worker_url, dead_consumer_after=1.0) as worker:
            add = await p.add.enqueue(2, 3)
            assert await add.result(timeout=10) == 5
            assert (await add.info()).status is JobStatus.SUCCEEDED
            words = await anyio.to_thread.run_sync(lambda: p.words.enqueue_sync("a b c"))
            assert await anyio.to_thread.run_sync(lambda: words.result_sync(10)) == 3
            many = await p.add.enqueue_many([((i, i), {}) for i in range(3)])
            assert [await j.result(timeout=10) for j in many] == [0, 2, 4]

            delayed = await p.add.enqueue_in(0.3, 20, 1)
            assert delayed.enqueue_status is JobStatus.SCHEDULED
            assert await delayed.status() is JobStatus.SCHEDULED
            assert await delayed.result(timeout=10) == 21
            far = await p.add.enqueue_in(3600, 1, 1)
            assert await far.cancel()  # out of the scheduled set
            assert admin.zscore(scheduled_key(STREAM), far.id) is None

            first = await p.add.enqueue_call((1, 2), job_id="sum")
            again = await p.add.enqueue_call((5, 5), job_id="sum")
            assert first.created and not again.created
            assert await again.result(timeout=10) == 3

            parent = await p.gated.enqueue()
            child = await p.add.enqueue_call((1, 1), depends_on=parent)
            grandchild = await p.add.enqueue_call((2, 2), depends_on=[child, "sum"])
            doomed_parent = await p.gated.enqueue(fail=True)
            doomed = await p.add.enqueue_call((3, 3), depends_on=doomed_parent)
            assert child.enqueue_status is JobStatus.DEFERRED
            assert doomed.enqueue_status is JobStatus.DEFERRED
            state["gate"].set()
            assert await grandchild.result(timeout=10) == 4
            assert await parent.result(timeout=10) == "opened"
            with pytest.raises(JobCancelled, match="failed"):
                await doomed.result(timeout=10)

            failing = await p.once.enqueue()
            with pytest.raises(JobFailed, match="first run fails"):
                await failing.result(timeout=10)
            assert await failing.requeue()
            assert await failing.result(timeout=10) == "second run"
            assert await (await p.flaky.enqueue()).result(timeout=10) == 2  # a parked retry

            hold = await p.hold.enqueue()
            await wait_until(lambda: status_is(hold, "started"), what="hold running")
            assert await hold.cancel("stop it")
            with anyio.fail_after(10):
                await state["hold_cancelled"].wait()
            with pytest.raises(JobCancelled, match="stop it"):
                await hold.result(timeout=5)

            await wait_until(lambda: state["ticks"] >= 2, timeout=10, what="two periodic ticks")
            await wait_until(lambda: calls(admin, "xtrim") > trims, timeout=10,
                             what="the retention pass trimmed the queue")
            assert worker.stats().dead_lettered == 2  # once (first run), the doomed parent
    finally:
        await producer.aclose()
    assert admin.hget("streamflow:queues", "default") == STREAM
    assert admin.xlen(STREAM + ":dlq") == 1  # the requeued job's record was deleted
    assert users.denials() == [], users.denials()


async def test_operator_commands_run_under_the_documented_admin_user(users: Users) -> None:
    """``streamflow job``, ``jobs list`` (every status), ``jobs cancel`` (scheduled and running),
    ``jobs requeue`` and ``info`` work for the documented operator user, and ACL LOG stays
    empty."""
    worker_url, producer_url = users.role("worker"), users.role("producer")
    op = users.role("operator")
    state = new_state()
    worker_app, producer = App(), App(redis_url=producer_url)
    Tasks(worker_app, state)
    p = Tasks(producer, state)
    try:
        async with running_worker(worker_app, worker_url):
            ok = await p.add.enqueue_call((2, 3), job_id="sum")
            bad = await p.once.enqueue_call((), job_id="bad")
            assert await ok.result(timeout=10) == 5
            with pytest.raises(JobFailed):
                await bad.result(timeout=10)
            await p.add.enqueue_call((1, 1), job_id="later", delay=3600)
            hold = await p.hold.enqueue_call((), job_id="hold")
            await wait_until(lambda: status_is(hold, "started"), what="hold running")

            doc = await sf_json(op, "job", "sum")
            assert (doc["status"], doc["result"], doc["queue"]) == ("succeeded", 5, "default")
            doc = await sf_json(op, "job", "bad", "--queue", "default")
            assert (doc["status"], doc["error_type"]) == ("failed", "ValueError")
            assert (await sf(op, "job", "hold")).returncode == 0
            listing = await sf_json(op, "jobs", "default")
            assert {k: listing["counts"][k] for k in ("scheduled", "running", "failed")} == {
                "scheduled": 1, "running": 1, "failed": 1}
            for status in ("queued", "scheduled", "running", "retrying", "failed", "succeeded",
                           "cancelled"):
                got = await sf_json(op, "jobs", "list", "default", "--status", status)
                assert got["status"] == status
            assert (await sf(op, "jobs", "default")).returncode == 0
            info = await sf_json(op, "info")
            assert [q["queue"] for q in info["queues"]] == ["default"]
            assert info["hidden_queues"] == [] and info["queues_note"] is None
            named = await sf_json(op, "info", STREAM)
            assert [q["queue"] for q in named["queues"]] == ["default"]
            assert (await sf(op, "info")).returncode == 0

            result = await sf(op, "jobs", "cancel", "later")
            assert result.returncode == 0 and "it was scheduled" in result.stdout, result.stderr
            result = await sf(op, "jobs", "cancel", "hold", "--reason", "operator stop")
            assert result.returncode == 0 and "it was started" in result.stdout, result.stderr
            with anyio.fail_after(10):
                await state["hold_cancelled"].wait()
            await wait_until(lambda: status_is(hold, "cancelled"), what="hold cancelled")
            result = await sf(op, "jobs", "requeue", "bad")
            assert result.returncode == 0, result.stderr
            assert await bad.result(timeout=10) == "second run"
            assert (await sf(op, "jobs", "requeue", "sum")).returncode == 1  # not failed
    finally:
        await producer.aclose()
    assert users.denials() == [], users.denials()


async def test_a_producer_missing_one_permission_is_refused_and_logged(users: Users) -> None:
    """The check can fail: a producer without the documented ``+zadd`` cannot delay a job
    (refused inside the ENQUEUE script), and ACL LOG records the denial."""
    url = users.user("jobs-producer", without(documented_rules()["jobs-producer"], "+zadd"))
    producer = App(redis_url=url)
    p = Tasks(producer, new_state())
    try:
        with pytest.raises(ResponseError, match="script"):  # (worded by each server its way)
            await p.add.enqueue_in(60, 1, 1)
    finally:
        await producer.aclose()
    denials = users.denials()
    assert [(e["reason"], e["object"]) for e in denials] == [("command", "zadd")], denials


MISSING = [
    pytest.param("+evalsha", "EVALSHA on 'streamflow:scheduled:{default}' (command not allowed)",
                 id="evalsha"),
    pytest.param("+zadd", "ZADD on 'streamflow:scheduled:{default}' (command not allowed)",
                 id="zadd"),
    pytest.param("+hincrby", "HINCRBY on 'streamflow:job:{default}:<id>' (command not allowed)",
                 id="hincrby"),
    pytest.param("+rpush", "RPUSH on 'streamflow:job:{default}:<id>:done' (command or key not allowed)",
                 id="rpush"),
    pytest.param("&streamflow:jobs:cancel", "SUBSCRIBE on 'streamflow:jobs:cancel' "
                 "(command or channel not allowed)", id="channel"),
    pytest.param("~streamflow:queues", "HSET on 'streamflow:queues' (key not allowed)",
                 id="registry"),
    pytest.param("+hdel", "HDEL on 'streamflow:consumers:streamflow:queue:{default}:streamflow:jobs' "
                 "(command not allowed)", id="hdel"),
    pytest.param("+xtrim", "XTRIM on 'streamflow:queue:{default}' (command not allowed)",
                 id="retention"),
    pytest.param("~streamflow:job:{default}:*", "EVAL on 'streamflow:queue:{default}, "
                 "streamflow:job:{default}:<id>' (key not allowed)", id="job-keys"),
]


@pytest.mark.parametrize(("drop", "expected"), MISSING)
async def test_a_job_worker_missing_a_permission_stops_at_startup_naming_it(
    users: Users, drop: str, expected: str
) -> None:
    """A job worker whose user lacks one documented permission stops before it reads a job,
    with one line naming the command and the key (or channel)."""
    url = users.user("jobs-worker", without(documented_rules()["jobs-worker"], drop))
    app = App()
    Tasks(app, new_state(), periodic=True)
    worker = make_worker(app, url)
    with anyio.fail_after(10), pytest.raises(PermissionDenied) as info:
        await worker.serve()
    message = str(info.value)
    assert expected in message and "'jobs-worker'" in message and "\n" not in message, message
    assert not worker.ready.is_set()
    assert users.admin.exists(STREAM, scheduled_key(STREAM), "streamflow:queues") == 0


async def test_job_probes_pass_for_the_default_user_and_create_nothing(any_redis_url: str) -> None:
    """The start-up check of a job worker (periodic tasks included) passes for the default
    user, probes ENQUEUE only for a queue with periodic tasks, and writes no key."""
    app = App()
    Tasks(app, new_state(), periodic=True)
    labels = [(p.command, p.key) for p in worker_probes(app.handlers, "w1")]
    three = f"{STREAM}, streamflow:job:{{default}}:<id>, {scheduled_key(STREAM)}"
    assert ("ZADD", scheduled_key(STREAM)) in labels and ("EVALSHA", three) not in labels
    assert ("EVALSHA", three) in [(p.command, p.key)
                                  for p in worker_probes(app.handlers, "w1", [STREAM])]
    conn = Connection(any_redis_url)
    try:
        await check_permissions(await conn.client(), app.handlers, "w1", [STREAM])
    finally:
        await conn.aclose()
    admin = redis.Redis.from_url(any_redis_url)
    try:
        assert admin.dbsize() == 0
    finally:
        admin.close()
