"""Job-queue tools measured by ``benchmarks/jobs.py``: the registry, and the job-side marker.

Each tool has one module here (``<tool>_jobs.py``) holding both sides of it:

* what the tool's own worker CLI imports: its app/broker/settings object and the three
  jobs (``noop``, ``async_sleep``: ``await asyncio.sleep(0.01)``, ``sync_sleep``:
  ``time.sleep(0.01)``), configured by the ``BENCH_JOBS_*`` environment variables below;
* an ``Adapter`` (see :mod:`benchmarks.jobpeers.base`) the benchmark's driver process uses
  to enqueue, await results, poll completion and verify through the tool's own state.

This package module stays light (no tool, no redis import): every job imports
:func:`mark` from it, inside the tool's worker process, and rq's jobs are its
:func:`plain_noop` / :func:`plain_sync_sleep`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

#: Environment the worker processes (and the driver, before it imports a tool module) read.
ENV_URL = "BENCH_JOBS_URL"  # the private server
ENV_MARK = "BENCH_JOBS_MARK"  # file the first job to start writes time.time() into
ENV_CONCURRENCY = "BENCH_JOBS_CONCURRENCY"  # async jobs in flight (unset: the tool's default)
ENV_THREADS = "BENCH_JOBS_THREADS"  # worker threads for sync jobs (unset: the tool's default)
ENV_QUIET = "BENCH_JOBS_QUIET"  # "1": the tool's loggers at WARNING (no per-job lines)

SLEEP_S = 0.01  # J3's job duration

_marked = False


def mark() -> None:
    """Record the moment the first job of a run started (once per process; O_EXCL across forks).

    Called first thing in every job. The first call in a process creates ``$BENCH_JOBS_MARK``
    with ``time.time()``; later calls return at once (a forking worker's children try the
    exclusive create and find the file there).
    """
    global _marked
    if _marked:
        return
    _marked = True
    path = os.environ.get(ENV_MARK)
    if not path:
        return
    now = time.time()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    try:
        os.write(fd, repr(now).encode())
    finally:
        os.close(fd)


def plain_noop() -> None:
    """A no-op job for tools that import jobs by path (rq): from this light module, so that
    a forking worker's per-job child imports nothing heavy to run it."""
    mark()


def plain_sync_sleep() -> None:
    mark()
    time.sleep(SLEEP_S)


def env_int(name: str) -> int | None:
    """An integer setting from the environment, None when unset or empty."""
    value = os.environ.get(name)
    return int(value) if value else None


def quiet() -> bool:
    return os.environ.get(ENV_QUIET) == "1"


# --------------------------------------------------------------------------- registry

#: Scenario -> the kind of job it runs.
KINDS = {"J1": "noop", "J2": "noop", "J3a": "sleep", "J3b": "sync"}
SCENARIOS = tuple(KINDS)

NO_ASYNC = "no async jobs (sync functions only)"
NO_THREADS = "no threaded worker for sync jobs"


@dataclass(frozen=True)
class ToolSpec:
    """One tool as measured: its module, what to import and version, what it can run."""

    name: str
    module: str  # benchmarks.jobpeers.<module>, holds the worker side and the Adapter
    dists: tuple[str, ...]  # distributions whose versions are reported
    imports: tuple[str, ...]  # must import for the tool to run
    unsupported: dict[str, str] = field(default_factory=dict)  # scenario -> why not
    n_default: int | None = None  # J1 jobs when --n-peer is not what fits (slow tools)
    roundtrips_default: int | None = None  # J2 round trips, same idea
    peer: bool = True


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("streamflow", "benchmarks.jobpeers.streamflow_jobs", ("streamflow-redis",), ("streamflow",),
             peer=False),
    ToolSpec("streaq", "benchmarks.jobpeers.streaq_jobs", ("streaq", "coredis"), ("streaq",)),
    ToolSpec("saq", "benchmarks.jobpeers.saq_jobs", ("saq",), ("saq",)),
    ToolSpec("taskiq", "benchmarks.jobpeers.taskiq_jobs", ("taskiq", "taskiq-redis"),
             ("taskiq", "taskiq_redis")),
    # arq's worker polls its queue every poll_delay (0.5 s by default): ~0.25 s per round trip.
    ToolSpec("arq", "benchmarks.jobpeers.arq_jobs", ("arq",), ("arq",),
             unsupported={"J3b": NO_THREADS}, roundtrips_default=100),
    ToolSpec("dramatiq", "benchmarks.jobpeers.dramatiq_jobs", ("dramatiq",), ("dramatiq",),
             unsupported={"J3a": "async actors hold a worker thread each (threads, not an event loop)"}),
    ToolSpec("celery", "benchmarks.jobpeers.celery_jobs", ("celery", "kombu"), ("celery",),
             unsupported={"J3a": NO_ASYNC}),
    ToolSpec("rq", "benchmarks.jobpeers.rq_jobs", ("rq",), ("rq",),
             unsupported={"J3a": NO_ASYNC, "J3b": NO_THREADS}),
    # The default rq Worker forks a work horse per job: for reference, a few hundred jobs do.
    ToolSpec("rq-fork", "benchmarks.jobpeers.rq_jobs", ("rq",), ("rq",),
             unsupported={"J3a": NO_ASYNC, "J3b": NO_THREADS}, n_default=300, roundtrips_default=200),
)

TOOL_NAMES = tuple(t.name for t in TOOLS)


def tool(name: str) -> ToolSpec:
    for spec in TOOLS:
        if spec.name == name:
            return spec
    raise KeyError(name)
