"""Job: a handle on one enqueued job - its status, its result, cancelling, requeueing.

``await job.result(timeout=...)`` does not poll: it marks the job awaited (one script
that also returns the result if the job already finished), then blocks in
``BLMOVE done done`` on the job's ``:done`` list, to which the worker pushes the
outcome in the same atomic step that stores it and acks the entry. BLMOVE from a list
to itself leaves the element in place, so any number of waiters see it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.exceptions import RedisError, ResponseError

from ..codec import loads
from ..errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout
from ..keys import (
    CANCEL_CHANNEL,
    JOBS_GROUP,
    RETRY_CONSUMER,
    job_done_key,
    job_key,
    scheduled_key,
)
from . import scripts
from .state import JobInfo, JobStatus, ms_to_datetime, text

__all__ = ["Job", "JobSource"]

_RETRY = RETRY_CONSUMER.encode()


class JobSource(Protocol):
    """Where a job handle gets a client (for the running event loop) and runs sync calls."""

    async def client(self) -> Any:
        """A redis.asyncio client usable in the running event loop."""

    @property
    def block_chunk(self) -> float:
        """Longest single blocking wait (below the client's socket timeout), seconds."""

    def run_sync(self, func: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``func()`` to completion from code without an event loop."""


class Job:
    """One job of a queue, by id. ``Task.enqueue`` returns one; ``App.job(id)`` finds one."""

    def __init__(self, job_id: str, queue: str, stream: str, source: JobSource,
                 status: JobStatus | None = None, *, created: bool = True) -> None:
        self.id = job_id
        self.queue = queue
        self.stream = stream  # the queue's stream
        self.key = job_key(stream, job_id)  # its state hash
        self.enqueue_status = status  # its status when enqueue returned
        self.created = created  # False: enqueue found an existing job with this id (dedup)
        self._source = source

    def __repr__(self) -> str:
        return f"<Job {self.id} queue={self.queue!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and (other.key, other.queue) == (self.key, self.queue)

    def __hash__(self) -> int:
        return hash(self.key)

    # -- reading --------------------------------------------------------------------------

    async def info(self) -> JobInfo:
        """Everything known about the job; :class:`JobNotFound` if no state is kept."""
        client = await self._source.client()
        raw = await client.execute_command("HGETALL", self.key)
        h = raw if isinstance(raw, dict) else {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}
        if not h or b"status" not in h:  # (a hash with only a waiter's mark is no job yet)
            raise JobNotFound(self.id, f"queue {self.queue!r}")
        status = JobStatus(text(h[b"status"]) or "queued")
        worker, attempt, started = text(h.get(b"worker")), h.get(b"attempt"), h.get(b"started_at")
        entry = text(h.get(b"entry"))
        if status is JobStatus.QUEUED and entry:
            try:
                rows = await client.execute_command(
                    "XPENDING", self.stream, JOBS_GROUP, entry, entry, 1)
            except ResponseError:  # NOGROUP: no worker has read the queue yet
                rows = []
            if rows:
                _, owner, idle, deliveries = rows[0]
                attempt = deliveries
                if owner == _RETRY:
                    status = JobStatus.RETRYING
                else:
                    status, worker = JobStatus.STARTED, text(owner)
                    started = int(time.time() * 1000) - int(idle)
        result = None
        if status is JobStatus.SUCCEEDED and h.get(b"result") is not None:
            result = loads(h[b"result"])
        return JobInfo(
            id=self.id, queue=self.queue, status=status, task=text(h.get(b"task")),
            attempt=int(attempt) if attempt is not None else None, worker=worker,
            enqueued_at=ms_to_datetime(h.get(b"enqueued_at")),
            scheduled_for=ms_to_datetime(h.get(b"scheduled_for")),
            started_at=ms_to_datetime(started), ended_at=ms_to_datetime(h.get(b"ended_at")),
            result=result, error_type=text(h.get(b"error_type")), error=text(h.get(b"error")),
            traceback=text(h.get(b"traceback")), reason=text(h.get(b"reason")),
            args=loads(h[b"args"]) if h.get(b"args") else [],
            kwargs=loads(h[b"kwargs"]) if h.get(b"kwargs") else {}, entry=entry,
        )

    async def status(self) -> JobStatus:
        """The job's status now (see :class:`JobStatus`)."""
        return (await self.info()).status

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (RQ's API)
        """Wait for the job to finish and return its result.

        Raises :class:`JobFailed` (with the error's type, message and traceback) if it
        failed, :class:`JobCancelled` if it was cancelled, :class:`ResultTimeout` if it
        did not finish within ``timeout`` seconds (None: wait as long as it takes), and
        :class:`JobNotFound` if no state appeared for it within ``timeout`` (a job a plain
        XADD enqueued has a state only once it finished: it is waited for like any other).
        """
        client = await self._source.client()
        mark_ttl = 86400 if timeout is None else int(timeout) + 60
        deadline = None if timeout is None else time.monotonic() + timeout
        done = job_done_key(self.key)
        chunk = self._source.block_chunk
        prepared = False
        while True:
            wait = chunk
            if deadline is not None:
                wait = min(chunk, deadline - time.monotonic())
                if wait < 0.001:
                    now = await self._status_or("")
                    if not now:  # no state at all: never enqueued (or expired)
                        raise JobNotFound(self.id, f"queue {self.queue!r}")
                    raise ResultTimeout(self.id, float(timeout or 0), now)
            block = ["BLMOVE", done, done, "RIGHT", "LEFT", f"{wait:.3f}"]
            if prepared:
                got = await client.execute_command(*block)
            else:
                # One round trip: mark the job awaited (or, finished, push its outcome), then
                # block until the outcome is on the :done list.
                # (EVAL, not EVALSHA: after a NOSCRIPT the BLMOVE would block for nothing.)
                pipe = client.pipeline(transaction=False)
                pipe.eval(scripts.WAIT_PREP, 1, self.key, mark_ttl)
                pipe.execute_command(*block)
                prep, got = await pipe.execute(raise_on_error=False)
                if isinstance(prep, Exception):
                    raise prep
                if isinstance(got, Exception):
                    raise got
                prepared = True
            if got:
                head, _, payload = bytes(got).partition(b"\n")
                return await self._outcome(client, head.decode(), payload)

    async def _status_or(self, fallback: str) -> str:
        try:
            return str(await self.status())
        except (JobNotFound, RedisError, OSError):
            return fallback

    async def _outcome(self, client: Any, status: str, payload: bytes) -> Any:
        if status == "succeeded":
            return loads(payload) if payload else None
        if status == "failed":
            f = await client.execute_command(
                "HMGET", self.key, "error_type", "error", "traceback")
            raise JobFailed(self.id, text(f[0]) or "Error", text(f[1]) or "", text(f[2]) or "")
        reason = await client.execute_command("HGET", self.key, "reason")
        raise JobCancelled(self.id, text(reason) or "")

    # -- changing -------------------------------------------------------------------------

    async def cancel(self, reason: str = "cancelled by request") -> bool:
        """Cancel the job unless it finished; True if this call cancelled it.

        A queued or scheduled job never runs. A running async job's coroutine gets
        ``CancelledError``; a running sync function cannot be stopped (Python cannot
        kill a thread): it runs to its end and its result is discarded. Either way the
        status is ``cancelled``, and jobs that depend on it are cancelled too.
        """
        client = await self._source.client()
        reply = await client.eval(
            scripts.CANCEL, 3, self.key, self.stream, scheduled_key(self.stream),
            JOBS_GROUP, reason, CANCEL_CHANNEL, RETRY_CONSUMER)
        outcome = text(reply[0])
        if outcome == "missing":
            raise JobNotFound(self.id, f"queue {self.queue!r}")
        return outcome == "cancelled" and len(reply) > 1

    async def requeue(self) -> bool:
        """Run a failed or cancelled job again (attempts start over); True if requeued."""
        client = await self._source.client()
        before, entry = await client.eval(scripts.REQUEUE, 1, self.key)
        if text(before) == "missing":
            raise JobNotFound(self.id, f"queue {self.queue!r}")
        return bool(entry)

    # -- the same, from code without an event loop ----------------------------------------

    def result_sync(self, timeout: float | None = None) -> Any:
        """:meth:`result` for code without an event loop."""
        return self._source.run_sync(lambda: self.result(timeout))

    def info_sync(self) -> JobInfo:
        """:meth:`info` for code without an event loop."""
        info: JobInfo = self._source.run_sync(self.info)
        return info

    def status_sync(self) -> JobStatus:
        """:meth:`status` for code without an event loop."""
        status: JobStatus = self._source.run_sync(self.status)
        return status

    def requeue_sync(self) -> bool:
        """:meth:`requeue` for code without an event loop."""
        return bool(self._source.run_sync(self.requeue))

    def cancel_sync(self, reason: str = "cancelled by request") -> bool:
        """:meth:`cancel` for code without an event loop."""
        return bool(self._source.run_sync(lambda: self.cancel(reason)))
