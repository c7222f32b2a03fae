"""``streamflow job ID`` and ``streamflow jobs list|cancel|requeue``: the operator's job commands.

``streamflow job ID [--queue Q]``
    One job (:meth:`Job.info <streamflow.jobs.Job.info>`): status, task, arguments,
    attempts, worker, times, and the result (succeeded), error type, message and
    traceback (failed) or reason (cancelled). Without ``--queue`` the id is looked up in
    every queue of ``streamflow:queues`` (one HEXISTS per queue); the output names it.

``streamflow jobs QUEUE [--status S] [--limit N]`` (short for ``jobs list QUEUE``)
    The counts per status and the first few jobs of each; with ``--status`` up to
    ``--limit`` (default 20) jobs of that status. Where each status is read from, and
    what is counted: :mod:`streamflow.admin.queues`.

``streamflow jobs cancel ID`` / ``streamflow jobs requeue ID`` (``--queue Q`` optional)
    :meth:`Job.cancel <streamflow.jobs.Job.cancel>` / :meth:`Job.requeue
    <streamflow.jobs.Job.requeue>`, on a :class:`~streamflow.jobs.Job` whose source is
    :class:`AdminSource` (the command's one client). Exit status 1 when nothing changed
    (the job had finished / was not failed or cancelled).

The word after ``jobs`` is a subcommand (``list``, ``cancel``, ``requeue``) or a queue:
:func:`expand_shorthand` (called by :func:`streamflow.cli.main`) turns ``jobs QUEUE ...``
into ``jobs list QUEUE ...``. A queue literally named ``list``, ``cancel`` or
``requeue`` is therefore given as ``jobs list cancel`` or ``jobs --queue cancel``.

An id not found is :class:`~streamflow.errors.JobNotFound` (exit 2, naming the id and
the queues looked in); each command is one :func:`~streamflow.admin.runner.run`.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..connection import Connection, server_time_ms
from ..errors import AdminError, JobNotFound
from ..jobs.job import Job
from ..jobs.state import JobInfo
from ..keys import QUEUES_KEY, dead_letter_stream, job_key
from .queues import COUNTED, JobList, QueueCounts, list_jobs, queue_counts, queues_named
from .render import emit_json, render_job, render_jobs
from .runner import redis_url, run

__all__ = [
    "STATUSES", "AdminSource", "cmd_job", "cmd_jobs_cancel", "cmd_jobs_list",
    "cmd_jobs_requeue", "expand_shorthand", "find_job",
]

SUBCOMMANDS = ("list", "cancel", "requeue")
#: Options of the ``jobs`` subcommands that take a value (for :func:`expand_shorthand`).
VALUE_OPTIONS = frozenset(("--redis-url", "--queue", "--status", "--limit", "--reason"))
#: What ``jobs --status`` accepts (``started`` is ``running``).
STATUSES = ("queued", "scheduled", "started", "running", "retrying", "failed", "succeeded",
            "cancelled")
PREVIEW = 5  # jobs of each status shown without --status
CANCEL_REASON = "cancelled with streamflow jobs cancel"


def expand_shorthand(argv: Sequence[str]) -> list[str]:
    """``jobs QUEUE ...`` -> ``jobs list QUEUE ...``: insert ``list`` unless the first word
    after ``jobs`` that is no option (nor an option's value) is a subcommand."""
    args = list(argv)
    if len(args) < 2 or args[0] != "jobs":
        return args
    i = 1
    while i < len(args):
        word = args[i]
        if word in ("-h", "--help"):
            return args
        if word == "--" or not word.startswith("-"):
            if word in SUBCOMMANDS:
                return args
            break
        i += 2 if word in VALUE_OPTIONS else 1
    return ["jobs", "list", *args[1:]]


class AdminSource:
    """The :class:`~streamflow.jobs.job.JobSource` of an operator command: its one client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def client(self) -> Any:
        """The command's client (connected by :func:`~streamflow.admin.runner.run`)."""
        return self._client

    @property
    def block_chunk(self) -> float:
        """Longest single blocking wait (the commands never wait for results)."""
        return 1.0

    def run_sync(self, func: Callable[[], Awaitable[Any]]) -> Any:
        """Not available: an operator command already runs in its event loop."""
        raise AdminError("the operator commands call jobs from their own event loop")


# -- finding a job -------------------------------------------------------------------------


async def find_job(client: Any, job_id: str, queue: str | None) -> Job:
    """The job ``job_id`` of ``queue``, or of the one registered queue that has it.

    :class:`JobNotFound` names the id and where it was looked for; an id kept in several
    queues is an AdminError asking for ``--queue``.
    """
    queues = await queues_named(client, queue)
    if not queues:
        raise JobNotFound(job_id, f"any queue (none is registered in {QUEUES_KEY})")
    pipe = client.pipeline(transaction=False)
    for stream in queues.values():
        pipe.execute_command("HEXISTS", job_key(stream, job_id), "status")  # not a waiter's mark
    found = [q for q, n in zip(queues, await pipe.execute(), strict=True) if int(n)]
    if not found:
        where = (f"queue {queue!r}" if queue is not None
                 else "any of the queues " + ", ".join(repr(q) for q in queues))
        raise JobNotFound(job_id, where)
    if len(found) > 1:
        raise AdminError(f"job {job_id!r} is in several queues ({', '.join(found)}); "
                         "give one with --queue")
    return Job(job_id, found[0], queues[found[0]], AdminSource(client))


# -- the commands ---------------------------------------------------------------------------


def cmd_job(args: argparse.Namespace) -> int:
    """``streamflow job ID [--queue Q]``: print everything known about one job."""

    async def work(client: Any, conn: Connection) -> tuple[Job, JobInfo]:
        job = await find_job(client, args.id, args.queue)
        return job, await job.info()

    job, info = run(redis_url(args), work)
    if args.json:
        emit_json({**info.as_dict(), "stream": job.stream})
    else:
        print(render_job(info, job.stream))
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    """``streamflow jobs [list] QUEUE``: counts per status and jobs of one or each status."""
    if args.queue and args.queue_name and args.queue != args.queue_name:
        raise AdminError(f"two queues given ({args.queue_name!r} and --queue {args.queue!r})")
    queue = args.queue or args.queue_name
    if not queue:
        raise AdminError("name the queue: streamflow jobs QUEUE (or jobs --queue QUEUE)")
    statuses = [args.status] if args.status else list(COUNTED)
    limit = args.limit if args.status else min(PREVIEW, args.limit)

    async def work(client: Any, conn: Connection) -> tuple[QueueCounts, list[JobList]]:
        counts = await queue_counts(client, queue, (await queues_named(client, queue))[queue])
        now = await server_time_ms(client)
        return counts, [await list_jobs(client, counts, s, limit, now) for s in statuses]

    counts, lists = run(redis_url(args), work)
    if args.json:
        doc: dict[str, Any] = {"queue": queue, "stream": counts.stream,
                               "counts": counts.to_json(), "limit": limit}
        if args.status:
            doc.update(lists[0].to_json())
        else:
            doc["lists"] = {jl.status: jl.to_json() for jl in lists}
        emit_json(doc)
    else:
        print(render_jobs(counts, lists, limit, bool(args.status)))
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    """``streamflow jobs cancel ID``: cancel a job that has not finished; exit 1 if it had."""

    async def work(client: Any, conn: Connection) -> tuple[Job, str, bool, str]:
        job = await find_job(client, args.id, args.queue)
        before = str(await job.status())
        done = await job.cancel(args.reason)
        return job, before, done, str(await job.status())

    job, before, done, after = run(redis_url(args), work)
    if args.json:
        emit_json({"id": job.id, "queue": job.queue, "cancelled": done, "was": before,
                   "status": after})
    elif done:
        print(f"cancelled job {job.id} of queue {job.queue} (it was {before})"
              + ("; an async task is cancelled at once, a plain function runs to its end "
                 "and its result is discarded" if before == "started" else ""))
    else:
        print(f"job {job.id} of queue {job.queue} not cancelled: it is {after} already")
    return 0 if done else 1


def cmd_jobs_requeue(args: argparse.Namespace) -> int:
    """``streamflow jobs requeue ID``: run a failed or cancelled job again; exit 1 if not."""

    async def work(client: Any, conn: Connection) -> tuple[Job, str, bool]:
        job = await find_job(client, args.id, args.queue)
        before = str(await job.status())
        return job, before, await job.requeue()

    job, before, done = run(redis_url(args), work)
    if args.json:
        emit_json({"id": job.id, "queue": job.queue, "requeued": done, "was": before})
    elif done:
        print(f"requeued job {job.id} of queue {job.queue} (it was {before}): "
              "it runs again, attempts counted from 1")
        if before == "failed":
            print(f"(its record in {dead_letter_stream(job.stream)} was deleted, so a "
                  "later dlq replay does not run it once more)")
    else:
        print(f"job {job.id} of queue {job.queue} not requeued: it is {before} "
              "(only failed or cancelled jobs are requeued)")
    return 0 if done else 1
