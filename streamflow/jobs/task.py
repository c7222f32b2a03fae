"""Task: a function registered with ``@app.task``, and how a call of it is enqueued.

::

    @app.task(queue="default", timeout=180, retry=Retry(max_attempts=3))
    def count_words(text: str) -> int: ...

    job = await count_words.enqueue("some text")          # runs on a worker
    job = count_words.enqueue_sync("some text")           # the same, without an event loop
    job = await count_words.enqueue_in(30, "later")       # in 30 s
    job = await count_words.enqueue_call(("text",), job_id="order-7", depends_on=[other])
    count_words("here")                                   # a plain call, in this process

``enqueue`` takes two options besides the function's arguments (which is why it is typed
with ``Any``: the arguments are checked against the function when it is called, and a
mismatch is an :class:`~streamflow.errors.EnqueueError`): ``job_id=`` (dedup:
while a job with that id exists, enqueueing it again returns that job and runs nothing)
and ``depends_on=`` (jobs that must succeed first). A function with a parameter of
either name gets it as an argument; use :meth:`Task.enqueue_call` for the options then.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from redis.exceptions import NoScriptError

from ..errors import EnqueueError
from ..keys import hash_tag, job_key, scheduled_key
from ..rawpipe import RawPipe
from . import scripts
from .job import Job, JobSource
from .runner import TaskDef
from .state import JobStatus, text
from .wire import encode_call

__all__ = ["Task", "TaskSource", "Delay"]

P = ParamSpec("P")
R = TypeVar("R")

#: ``enqueue``'s own keyword options (see the module docstring).
OPTIONS = ("job_id", "depends_on")

Delay = float | int | timedelta

_MAX_JOB_ID = 256


class TaskSource(JobSource, Protocol):
    """What a task needs from its application: clients, sizes, and the queue registry."""

    @property
    def max_payload_bytes(self) -> int:
        """Largest arguments (JSON) an enqueue accepts."""

    @property
    def queued_ttl(self) -> int:
        """Seconds a waiting job's state lives (dedup holds this long)."""

    async def register_queue(self, client: Any, queue: str, stream: str) -> None:
        """Note the queue in the registry of queues (once per process)."""


class Task(Generic[P, R]):
    """A registered task: call it to run it here, ``enqueue`` it to run it on a worker."""

    def __init__(self, definition: TaskDef, queue: str, stream: str, source: TaskSource) -> None:
        self.definition = definition
        self.name = definition.name  # what entries name it by (``sf:task``)
        self.queue = queue
        self.stream = stream  # the queue's stream
        self.func: Callable[P, R] = definition.func
        self._source = source
        self._options_are_params = any(
            o in definition.signature.signature.parameters for o in OPTIONS)
        self.__doc__ = getattr(definition.func, "__doc__", None)
        self.__name__ = getattr(definition.func, "__name__", self.name)
        self.__qualname__ = getattr(definition.func, "__qualname__", self.name)
        self.__module__ = getattr(definition.func, "__module__", __name__)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def job(self, job_id: str) -> Job:
        """A handle on the job ``job_id`` of this task's queue."""
        return Job(job_id, self.queue, self.stream, self._source)

    # -- enqueueing -------------------------------------------------------------------------

    async def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        """Enqueue ``func(*args, **kwargs)``; returns its :class:`Job` at once."""
        a, k, opts = self._split(args, kwargs)
        return await self.enqueue_call(a, k, **opts)

    async def enqueue_in(self, delay: Delay, *args: Any, **kwargs: Any) -> Job:
        """Enqueue the call to run ``delay`` (seconds or a timedelta) from now."""
        a, k, opts = self._split(args, kwargs)
        return await self.enqueue_call(a, k, delay=delay, **opts)

    async def enqueue_at(self, when: datetime, *args: Any, **kwargs: Any) -> Job:
        """Enqueue the call to run at ``when`` (an aware datetime; naive means UTC)."""
        a, k, opts = self._split(args, kwargs)
        return await self.enqueue_call(a, k, at=when, **opts)

    async def enqueue_call(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
        job_id: str | None = None, depends_on: Iterable[Job | str] | Job | str | None = None,
        delay: Delay | None = None, at: datetime | None = None,
    ) -> Job:
        """Enqueue with every option explicit; see the module docstring."""
        command, jid = self._command(args, kwargs or {}, job_id, depends_on, delay, at)
        client = await self._source.client()
        await self._source.register_queue(client, self.queue, self.stream)
        try:
            reply = await client.evalsha(*command[1:])
        except NoScriptError:  # a new or restarted server: send the script itself once
            reply = await client.eval(scripts.ENQUEUE, *command[2:])
        return self._job(jid, reply)

    async def enqueue_many(
        self, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]], *, chunk: int = 1000
    ) -> list[Job]:
        """Enqueue many calls, each ``(args, kwargs)``, pipelined ``chunk`` per round trip.

        Every call is checked before anything is sent.
        """
        commands = [self._command(a, k, None, None, None, None) for a, k in calls]
        client = await self._source.client()
        await self._source.register_queue(client, self.queue, self.stream)
        await client.execute_command("SCRIPT LOAD", scripts.ENQUEUE)
        jobs: list[Job] = []
        pipe = RawPipe(client, self.stream)
        try:
            for i in range(0, len(commands), chunk):
                part = commands[i:i + chunk]
                replies = await pipe.execute([c for c, _ in part])
                for (_, jid), reply in zip(part, replies, strict=True):
                    if isinstance(reply, Exception):
                        raise reply
                    jobs.append(self._job(jid, reply))
        finally:
            await pipe.aclose()
        return jobs

    def enqueue_sync(self, *args: Any, **kwargs: Any) -> Job:
        """:meth:`enqueue` for code without an event loop (Flask, Django, a script)."""
        a, k, opts = self._split(args, kwargs)
        return self.enqueue_call_sync(a, k, **opts)

    def enqueue_in_sync(self, delay: Delay, *args: Any, **kwargs: Any) -> Job:
        """:meth:`enqueue_in` for code without an event loop."""
        a, k, opts = self._split(args, kwargs)
        return self.enqueue_call_sync(a, k, delay=delay, **opts)

    def enqueue_at_sync(self, when: datetime, *args: Any, **kwargs: Any) -> Job:
        """:meth:`enqueue_at` for code without an event loop."""
        a, k, opts = self._split(args, kwargs)
        return self.enqueue_call_sync(a, k, at=when, **opts)

    def enqueue_call_sync(self, args: Sequence[Any] = (),
                          kwargs: Mapping[str, Any] | None = None, **options: Any) -> Job:
        """:meth:`enqueue_call` for code without an event loop."""
        job: Job = self._source.run_sync(lambda: self.enqueue_call(args, kwargs, **options))
        return job

    # -- building the command ----------------------------------------------------------------

    def _split(self, args: tuple[Any, ...], kwargs: dict[str, Any]
               ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        if self._options_are_params:
            return args, kwargs, {}
        opts = {o: kwargs.pop(o) for o in OPTIONS if o in kwargs}
        return args, kwargs, opts

    def _command(self, args: Sequence[Any], kwargs: Mapping[str, Any], job_id: str | None,
                 depends_on: Iterable[Job | str] | Job | str | None, delay: Delay | None,
                 at: datetime | None) -> tuple[list[Any], str]:
        src = self._source
        a, k = encode_call(self.definition.signature, args, kwargs, src.max_payload_bytes)
        jid = _check_job_id(job_id) if job_id is not None else uuid.uuid4().hex
        due = _due(delay, at)
        deps = [self._dependency_key(d) for d in _as_list(depends_on)]
        keys = [self.stream, job_key(self.stream, jid), scheduled_key(self.stream), *deps]
        argv = [jid, self.name, a, k, self.queue, due, src.queued_ttl,
                self.definition.failure_ttl]
        return ["EVALSHA", scripts.sha(scripts.ENQUEUE), len(keys), *keys, *argv], jid

    def _dependency_key(self, dep: Job | str) -> str:
        if isinstance(dep, Job):
            if hash_tag(dep.stream) != hash_tag(self.stream):
                raise EnqueueError(
                    f"depends_on: job {dep.id} is in queue {dep.queue!r}, whose stream "
                    f"{dep.stream!r} has another hash tag than {self.stream!r}: a job can "
                    "depend on jobs of its own queue (or of queues whose streams share its "
                    "hash tag), which one script can release atomically")
            return dep.key
        if isinstance(dep, str):
            return job_key(self.stream, _check_job_id(dep))
        raise EnqueueError(f"depends_on: {dep!r} is neither a Job nor a job id")

    def _job(self, jid: str, reply: Any) -> Job:
        code = int(reply[0])
        if code < 0:
            missing = text(reply[1]) or "?"
            raise EnqueueError(f"{self.name}: depends_on names a job with no state "
                               f"({missing}): never enqueued, or its state expired")
        return Job(jid, self.queue, self.stream, self._source,
                   JobStatus(text(reply[1]) or "queued"), created=code == 1)


def _as_list(deps: Iterable[Job | str] | Job | str | None) -> list[Job | str]:
    if deps is None:
        return []
    if isinstance(deps, Job | str):
        return [deps]
    return list(deps)


def _check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise EnqueueError(f"job_id must be a non-empty string, got {job_id!r}")
    if len(job_id) > _MAX_JOB_ID or not job_id.isprintable() or any(c.isspace() for c in job_id):
        raise EnqueueError(f"job_id {job_id[:60]!r} must be at most {_MAX_JOB_ID} printable "
                           "characters without spaces")
    return job_id


def _due(delay: Delay | None, at: datetime | None) -> str:
    """The ENQUEUE script's due argument: '' (now), '+<ms>' (from the server's now), or ms."""
    if delay is not None and at is not None:
        raise EnqueueError("give delay or at, not both")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise EnqueueError(f"delay must be seconds >= 0 or a timedelta, got {delay!r}")
        return f"+{int(seconds * 1000)}" if seconds > 0 else ""
    if at is not None:
        if not isinstance(at, datetime):
            raise EnqueueError(f"at must be a datetime, got {at!r}")
        return str(int(at.timestamp() * 1000))  # (a naive datetime is this process's local time)
    return ""
