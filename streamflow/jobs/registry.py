"""Jobs: the registry of an application's queues and tasks, and what they share.

The :class:`~streamflow.App` owns one :class:`Jobs` and forwards ``@app.task``,
``app.queue``, ``@app.cron``, ``@app.periodic`` and ``app.job`` to it. For the worker
it builds one :class:`~streamflow.spec.HandlerSpec` per queue (the queue's stream, the
``streamflow:jobs`` group, a :class:`~.runner.QueueRunner` as handler and completion)
and one :class:`~.service.JobService`. For tasks and job handles it is the
:class:`~.task.TaskSource`: a client for the running loop (the app's connection, or
the sync bridge's on the bridge's thread), the limits, and the queue registry.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import Settings, validate_name
from ..connection import Connection
from ..errors import ConfigError
from ..keys import JOBS_GROUP, QUEUES_KEY, queue_stream
from ..policies import Retention, Retry
from ..spec import HandlerSpec, Service
from .bridge import SyncBridge
from .cron import CronSchedule, Every
from .job import Job
from .runner import QueueRunner, TaskDef
from .task import Task
from .threads import ThreadLane
from .wire import Signature

__all__ = [
    "DEFAULT_FAILURE_TTL", "DEFAULT_QUEUE", "DEFAULT_QUEUED_TTL", "DEFAULT_RESULT_TTL",
    "Jobs", "Periodic", "QueueOptions",
]

DEFAULT_QUEUE = "default"
DEFAULT_RESULT_TTL = 3600  # a succeeded job's state and result: one hour
DEFAULT_FAILURE_TTL = 7 * 86400  # a failed or cancelled job's state: a week
DEFAULT_QUEUED_TTL = 30 * 86400  # a waiting job's state (and its dedup id): 30 days
DEFAULT_TASK_TIMEOUT = 180.0
#: What a queue's stream keeps of the entries of jobs that ran (their states are the hashes).
DEFAULT_RETENTION = Retention(max_len=1000)


def default_threads() -> int:
    """Threads of a queue's lane for sync tasks: ``min(32, cores + 4)``."""
    return min(32, (os.cpu_count() or 1) + 4)


@dataclass(frozen=True)
class QueueOptions:
    """How one queue is consumed (``app.queue(name, ...)``)."""

    name: str
    stream: str
    concurrency: int = 100  # jobs of this queue in flight per worker process
    threads: int = field(default_factory=default_threads)  # lane for sync tasks
    task_field: str | None = None  # foreign entries: the field naming the task
    retry: Retry = field(default_factory=Retry)  # for entries naming no known task
    # acked entries kept in the stream (never trims what a worker still needs)
    retention: Retention | None = field(default_factory=lambda: DEFAULT_RETENTION)


@dataclass(frozen=True)
class Periodic:
    """A task enqueued on a schedule (``@app.cron`` / ``@app.periodic``)."""

    task: Task[Any, Any]
    schedule: CronSchedule | Every


class _Queue:
    def __init__(self, options: QueueOptions, max_payload_bytes: Callable[[], int]) -> None:
        self.options = options
        self.runner = QueueRunner(options.name, options.stream, retry=options.retry,
                                  failure_ttl=DEFAULT_FAILURE_TTL,
                                  task_field=options.task_field,
                                  max_payload_bytes=max_payload_bytes())
        self.lane = ThreadLane(options.name, options.threads)  # shared by its sync tasks
        self.tasks: dict[str, Task[Any, Any]] = {}


class Jobs:
    """An application's queues, tasks and schedules; see the module docstring."""

    def __init__(self, *, connection: Callable[[], Connection], settings: Callable[[], Settings],
                 max_payload_bytes: Callable[[], int]) -> None:
        self._connection = connection  # the app's connection (a serving worker's, else its own)
        self._settings = settings
        self._max_payload = max_payload_bytes
        self._queues: dict[str, _Queue] = {}
        self.periodic: list[Periodic] = []
        self.bridge = SyncBridge(self._bridge_connection)
        self._registered: set[tuple[str, str]] = set()  # queues noted in QUEUES_KEY
        self._specs: list[HandlerSpec] | None = None  # built on first use after a change
        self.queued_ttl = DEFAULT_QUEUED_TTL
        self._block_chunk: float | None = None  # from the settings, on the first result()

    # -- declaring --------------------------------------------------------------------------

    def queue(self, name: str, *, stream: str | None = None, concurrency: int | None = None,
              threads: int | None = None, task_field: str | None = None,
              retry: Retry | None = None, retention: Retention | None = None) -> QueueOptions:
        """Declare (or change, before any task is on it) how queue ``name`` is consumed."""
        validate_name("queue", name)
        if "{" in name or "}" in name:
            raise ConfigError("queue", f"{name!r} may not contain {{ or }}: the queue name is "
                              "its stream's hash tag")
        if stream is not None:
            validate_name("queue stream", stream)
        for value, what in ((concurrency, "concurrency"), (threads, "threads")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"queue {name!r} {what}", f"must be an int >= 1, got {value!r}")
        old = self._queues.get(name)
        if old is not None and old.tasks:
            raise ConfigError(f"queue {name!r}", "declare app.queue(...) before its tasks")
        opts = old.options if old is not None else QueueOptions(name, stream or queue_stream(name))
        changes: dict[str, Any] = {k: v for k, v in {"stream": stream, "concurrency": concurrency,
                                      "threads": threads, "task_field": task_field,
                                      "retry": retry, "retention": retention}.items()
                                      if v is not None}
        opts = replace(opts, **changes)
        for other in self._queues.values():
            if other.options.name != name and other.options.stream == opts.stream:
                raise ConfigError(f"queue {name!r}", f"stream {opts.stream!r} is already "
                                  f"queue {other.options.name!r}'s")
        self._queues[name] = _Queue(opts, self._max_payload)
        self._specs = None
        return opts

    def task(self, func: Callable[..., Any], *, queue: str, name: str | None,
             timeout: float | None, retry: Retry | None, result_ttl: int, failure_ttl: int,
             threads: int | None) -> Task[Any, Any]:
        """Register ``func`` as a task (``@app.task``); see :class:`~.task.Task`."""
        if isinstance(func, Task):
            raise ConfigError("task", f"{func!r} is already a task")
        if not callable(func):
            raise ConfigError("task", f"{func!r} is not a function")
        task_name = name or getattr(func, "__name__", None) or ""
        validate_name("task name", task_name)
        if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
            raise ConfigError(f"task {task_name!r} timeout", f"must be > 0 or None, got {timeout!r}")
        for value, what in ((result_ttl, "result_ttl"), (failure_ttl, "failure_ttl")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"task {task_name!r} {what}",
                                  f"must be whole seconds >= 1, got {value!r}")
        q = self._queues.get(queue) or self._queues[self.queue(queue).name]
        if task_name in q.tasks:
            raise ConfigError(f"task {task_name!r}", f"queue {queue!r} already has a task "
                              "of that name; give one of them name=")
        is_async = inspect.iscoroutinefunction(func)
        if is_async and threads is not None:
            raise ConfigError(f"task {task_name!r} threads",
                              "threads= is for plain functions; an async def runs on the loop")
        lane = None if is_async else (ThreadLane(task_name, threads) if threads else q.lane)
        definition = TaskDef(task_name, func, Signature(func, task_name),
                             float(timeout) if timeout is not None else None,
                             retry or Retry(), result_ttl, failure_ttl, lane)
        q.runner.add(definition)
        t: Task[Any, Any] = Task(definition, queue, q.options.stream, self)
        q.tasks[task_name] = t
        self._specs = None
        return t

    def add_periodic(self, task: Task[Any, Any], schedule: CronSchedule | Every) -> None:
        """Enqueue ``task`` (no arguments) at each tick of ``schedule``."""
        try:
            task.definition.signature.check((), {})
        except TypeError as exc:
            raise ConfigError(f"periodic task {task.name!r}",
                              f"must be callable without arguments: {exc}") from None
        self.periodic.append(Periodic(task, schedule))

    # -- reading ----------------------------------------------------------------------------

    @property
    def queues(self) -> dict[str, QueueOptions]:
        """Declared queues by name."""
        return {name: q.options for name, q in self._queues.items()}

    def runners(self) -> list[QueueRunner]:
        """The runner of every queue that has tasks."""
        return [q.runner for q in self._queues.values() if q.tasks]

    def lanes(self) -> list[ThreadLane]:
        """Every thread lane (queues' and tasks' own)."""
        lanes = {id(q.lane): q.lane for q in self._queues.values()}
        for q in self._queues.values():
            for t in q.tasks.values():
                if t.definition.lane is not None:
                    lanes[id(t.definition.lane)] = t.definition.lane
        return list(lanes.values())

    def job(self, job_id: str, queue: str = DEFAULT_QUEUE) -> Job:
        """A handle on job ``job_id`` of ``queue``."""
        q = self._queues.get(queue)
        stream = q.options.stream if q is not None else queue_stream(queue)
        return Job(job_id, queue, stream, self)

    def specs(self) -> list[HandlerSpec]:
        """One handler spec per queue with tasks, for the worker."""
        if self._specs is None:
            self._specs = [self._spec(q) for q in self._queues.values() if q.tasks]
        return self._specs

    def _spec(self, q: _Queue) -> HandlerSpec:
        tasks = [t.definition for t in q.tasks.values()]
        retries = [t.retry for t in tasks] + [q.options.retry]
        # The runtime's lower bound for the retry scan; each entry's own comes from retry_of.
        floor = Retry(max_attempts=max(r.max_attempts for r in retries),
                      backoff=min(r.backoff for r in retries),
                      max_backoff=max(r.max_backoff for r in retries),
                      jitter=max(r.jitter for r in retries))
        runner = q.runner
        # The watchdog enforces async tasks' timeouts (each its own, through timeout_of; its
        # tick follows the shortest); a sync task's thread lane enforces its own.
        limits = [t.timeout for t in tasks if t.is_async and t.timeout is not None]
        return HandlerSpec(func=runner, name=f"queue:{q.options.name}",
                           streams=(q.options.stream,), group=JOBS_GROUP,
                           concurrency=q.options.concurrency,
                           timeout=min(limits) if limits else None, retry=floor,
                           retry_of=runner.retry_of, timeout_of=runner.timeout_of,
                           completion=runner, retention=q.options.retention)

    def services(self) -> list[Service]:
        """The job service, when there is a queue with tasks."""
        from .service import JobService

        return [JobService(self)] if self.runners() else []

    # -- TaskSource -------------------------------------------------------------------------

    async def client(self) -> Any:
        """A client for the running loop: the bridge's on its thread, else the app's."""
        if self.bridge.here():
            return await self.bridge.client()
        return await self._connection().client()

    @property
    def block_chunk(self) -> float:
        """Longest single blocking wait: a second under the socket timeout (resolved once)."""
        if self._block_chunk is None:
            self._block_chunk = max(0.5, self._settings().socket_timeout - 1.0)
        return self._block_chunk

    def run_sync(self, func: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``func()`` on the sync bridge."""
        return self.bridge.run(func)

    @property
    def max_payload_bytes(self) -> int:
        """Largest JSON arguments an enqueue accepts."""
        return self._max_payload()

    async def register_queue(self, client: Any, queue: str, stream: str) -> None:
        """Note ``queue`` -> ``stream`` in the queue registry, once per process (a worker
        writes its queues there again when it starts)."""
        key = (queue, stream)
        if key in self._registered:
            return
        await client.execute_command("HSET", QUEUES_KEY, queue, stream)
        self._registered.add(key)

    def _bridge_connection(self) -> Connection:
        s = self._settings()
        url = s.redis_url
        app_conn = self._connection()
        if app_conn.server is not None:  # embedded://: the server the app already started
            url = app_conn.effective_url
        return Connection(url, socket_timeout=s.socket_timeout + s.block_ms / 1000,
                          connect_timeout=s.connect_timeout)
