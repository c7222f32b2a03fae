"""JobsMixin: the App's decorators and lookups for jobs, forwarded to its :class:`Jobs`.

Kept apart from :mod:`streamflow.app` so that the App class stays about handlers,
publishing and running; everything here only calls ``self.jobs``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, overload

from ..policies import Retention, Retry
from .cron import CronSchedule, Every
from .job import Job
from .registry import (
    DEFAULT_FAILURE_TTL,
    DEFAULT_QUEUE,
    DEFAULT_RESULT_TTL,
    DEFAULT_TASK_TIMEOUT,
    Jobs,
    QueueOptions,
)
from .task import Task

__all__ = ["JobsMixin"]

P = ParamSpec("P")
R = TypeVar("R")


class JobsMixin:
    """``@app.task``, ``app.queue``, ``@app.cron``, ``@app.periodic``, ``app.job``."""

    jobs: Jobs  # set by the App

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, func: None = None, /, *, queue: str = DEFAULT_QUEUE, name: str | None = None,
        timeout: float | None = DEFAULT_TASK_TIMEOUT, retry: Retry | None = None,
        result_ttl: int = DEFAULT_RESULT_TTL, failure_ttl: int = DEFAULT_FAILURE_TTL,
        threads: int | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self, func: Callable[..., Any] | None = None, /, *, queue: str = DEFAULT_QUEUE,
        name: str | None = None, timeout: float | None = DEFAULT_TASK_TIMEOUT,
        retry: Retry | None = None, result_ttl: int = DEFAULT_RESULT_TTL,
        failure_ttl: int = DEFAULT_FAILURE_TTL, threads: int | None = None,
    ) -> Any:
        """Register a function as a task, run by workers: ``@app.task`` or ``@app.task(...)``.

        ``async def`` functions run on the worker's event loop; plain functions in a
        bounded pool of threads (``threads=`` for a pool of the task's own, else its
        queue's). ``timeout`` (seconds, None for none) applies to both; ``retry`` sets
        attempts and backoff (default ``Retry()``: 5 attempts); ``result_ttl`` is how
        long a succeeded job's state and result are kept (default an hour),
        ``failure_ttl`` a failed or cancelled one's (default a week). ``name`` (default
        the function's ``__name__``) is how entries name the task. Returns a
        :class:`~streamflow.jobs.Task`: ``await f.enqueue(...)``, ``f.enqueue_sync(...)``.
        """
        def decorate(f: Callable[..., Any]) -> Task[Any, Any]:
            return self.jobs.task(f, queue=queue, name=name, timeout=timeout, retry=retry,
                                  result_ttl=result_ttl, failure_ttl=failure_ttl,
                                  threads=threads)

        return decorate(func) if func is not None else decorate

    def queue(
        self, name: str, *, stream: str | None = None, concurrency: int | None = None,
        threads: int | None = None, task_field: str | None = None, retry: Retry | None = None,
        retention: Retention | None = None,
    ) -> QueueOptions:
        """Declare how queue ``name`` is consumed (call it before registering its tasks).

        ``stream`` (default ``streamflow:queue:{name}``) is the stream jobs go to;
        ``concurrency`` (default 100) bounds its jobs in flight per worker; ``threads``
        (default ``min(32, cores + 4)``) the threads its sync tasks share. With
        ``task_field``, entries written by other producers in the style ``XADD tasks *
        task_type calculate_square number 4`` are jobs too: that field names the task and
        the other fields are its keyword arguments. ``retention`` (default: the last 1,000
        entries) is how much of the stream is kept of jobs that ran; it never trims an
        entry a worker still needs.
        """
        return self.jobs.queue(name, stream=stream, concurrency=concurrency,
                               threads=threads, task_field=task_field, retry=retry,
                               retention=retention)

    def cron(self, expression: str, *, tz: Any = None, **task_options: Any
             ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function (no arguments) run at each tick of a cron ``expression``.

        Exactly one run per tick whatever the number of workers; see
        :mod:`streamflow.jobs.service` for restarts and missed ticks. ``task_options``
        are those of :meth:`task`.
        """
        schedule = CronSchedule.parse(expression, tz)

        def decorate(f: Callable[P, R]) -> Task[P, R]:
            t: Task[P, R] = self.task(**task_options)(f)
            self.jobs.add_periodic(t, schedule)
            return t

        return decorate

    def periodic(self, *, every: float | timedelta | Every, **task_options: Any
                 ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function (no arguments) run every ``every`` (seconds or a timedelta),
        on ticks aligned to the Unix epoch; like :meth:`cron` otherwise."""
        schedule = every if isinstance(every, Every) else Every(every)

        def decorate(f: Callable[P, R]) -> Task[P, R]:
            t: Task[P, R] = self.task(**task_options)(f)
            self.jobs.add_periodic(t, schedule)
            return t

        return decorate

    def job(self, job_id: str, queue: str = DEFAULT_QUEUE) -> Job:
        """A handle on job ``job_id`` of ``queue`` (to read its status, result, cancel it)."""
        return self.jobs.job(job_id, queue)
