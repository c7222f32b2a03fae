"""QueueRunner: the handler of one queue's stream - it runs each job's task function.

The runtime treats a queue like any stream: it reads the entries, bounds what is in
flight, retries failures with backoff, dead-letters, reclaims a dead worker's entries.
The runner is the handler it calls, and the queue's
:class:`~streamflow.spec.Completion`:

* it decodes the entry (:mod:`streamflow.jobs.wire`), runs the task - an ``async def``
  on the event loop, a plain function on one of its lane's threads - within the task's
  timeout, and keeps the JSON result until the ack;
* the ack buffer then acks a batch of jobs with one ``FINISH`` script that stores each
  result, wakes who waits for it, and releases jobs that depend on it, in the same
  atomic step as the ack (so a job's result is stored once, by the attempt that acked it);
* a job out of attempts is dead-lettered by the runtime; the runner then records it as
  failed (``FAIL``), with its error and traceback;
* ``retry_of`` gives the runtime each entry's own ``Retry`` (its task's).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import NoScriptError

from ..codec import encode_json
from ..errors import BadJob, PayloadError
from ..keys import job_key, queue_stats_key
from ..message import Message
from ..policies import Retry
from . import scripts
from .threads import ThreadLane
from .wire import JOB, Signature, check_call, decode_call, task_of

__all__ = ["QueueRunner", "TaskDef"]

log = structlog.get_logger("streamflow.jobs")

#: Most characters of a traceback kept in a failed job's state.
TRACEBACK_CHARS = 4000
#: Cancellations of jobs not running here, remembered for when they arrive (and how long).
CANCELLED_KEPT = 10_000
CANCELLED_FOR = 3600.0


@dataclass(frozen=True)
class TaskDef:
    """One task of a queue, as the runner needs it."""

    name: str
    func: Callable[..., Any]
    signature: Signature
    timeout: float | None
    retry: Retry
    result_ttl: int
    failure_ttl: int
    lane: ThreadLane | None  # None: an async function, run on the event loop

    @property
    def is_async(self) -> bool:
        """True for an ``async def`` (run on the loop), False for a plain function."""
        return self.lane is None


class QueueRunner:
    """Handler and completion of one queue; see the module docstring."""

    def __init__(self, queue: str, stream: str, *, retry: Retry, failure_ttl: int,
                 task_field: str | None, max_payload_bytes: int) -> None:
        self.queue = queue
        self.stream = stream
        self.stats_key = queue_stats_key(stream)  # the queue's totals (succeeded)
        self.retry = retry  # the queue's policy, for entries naming no known task
        self.failure_ttl = failure_ttl  # for failed entries naming no known task
        self.task_field = task_field.encode() if task_field else None
        self.max_payload_bytes = max_payload_bytes
        self.tasks: dict[str, TaskDef] = {}
        self.signatures: dict[str, Signature] = {}
        # entry id -> FINISH arguments (job hash, outcome, result, started, attempt, task,
        # job id, ttl), from the task's return until the ack batch was sent
        self.records: dict[bytes, tuple[str, str, bytes, int, int, str, str, int]] = {}
        self.running: dict[str, asyncio.Task[Any] | None] = {}  # job id -> its slot's task
        self._cancelling: set[str] = set()  # running jobs cancel() was called for
        # entry id -> when its last attempt here started (ms), for a failure's record
        self._started: dict[bytes, int] = {}
        self._finish_sha = scripts.sha(scripts.FINISH)
        self._finish_loaded = False  # True once a FINISH was sent in full (by EVAL)
        self.cancelled: dict[str, float] = {}  # job id -> when its cancel arrived
        self.__name__ = f"queue:{queue}"  # for logs that name the handler
        self.__qualname__ = self.__name__

    def add(self, task: TaskDef) -> None:
        """Register a task on this queue."""
        self.tasks[task.name] = task
        self.signatures[task.name] = task.signature

    # -- the handler ----------------------------------------------------------------------

    async def __call__(self, msg: Message) -> None:
        call = decode_call(msg.raw_id, msg.raw_fields, self.task_field, self.signatures,
                           self.max_payload_bytes)
        task = self.tasks[call.task]
        jid = call.job_id
        started = int(time.time() * 1000)
        if jid in self.cancelled:
            self._record(msg, job_key(msg.stream, jid), "discard", b"", started, task, jid)
            return
        current = asyncio.current_task()
        running = self.running
        running[jid] = current
        starts = self._started
        if len(starts) >= CANCELLED_KEPT:  # attempts that failed here and ran elsewhere next
            starts.clear()
        starts[msg.raw_id] = started
        try:
            if task.lane is None:  # (its timeout is the runtime watchdog's: timeout_of)
                try:
                    coro = task.func(*call.args, **call.kwargs)
                except TypeError as exc:
                    raise check_call(task.signature, call, exc) or exc from None
                result = await coro
            else:
                try:
                    result = await task.lane.run(task.func, call.args, call.kwargs,
                                                 limit=task.timeout, task=task.name, job_id=jid)
                except TypeError as exc:
                    raise check_call(task.signature, call, exc) or exc from None
            if inspect.isawaitable(result):
                raise BadJob(f"task {task.name} returned an awaitable; declare it async def")
        except asyncio.CancelledError:
            if jid not in self._cancelling or current is None:
                raise
            self._cancelling.discard(jid)
            if current.uncancel():
                raise  # also cancelled for another reason (timeout, shutdown)
            log.info("job_cancelled", queue=self.queue, task=task.name, job_id=jid,
                     stream=msg.stream, message_id=msg.id, attempt=msg.attempt)
            starts.pop(msg.raw_id, None)
            self._record(msg, job_key(msg.stream, jid), "discard", b"", started, task, jid)
            return
        finally:
            running.pop(jid, None)
        starts.pop(msg.raw_id, None)
        try:
            data = encode_json(result, self.max_payload_bytes)
        except PayloadError as exc:
            raise BadJob(f"task {task.name} returned a value that cannot be stored: {exc}; "
                         "results must be JSON values") from None
        self._record(msg, job_key(msg.stream, jid), "succeeded", data, started, task, jid)

    def _record(self, msg: Message, hkey: str, outcome: str, data: bytes, started: int,
                task: TaskDef, job_id: str) -> None:
        self.records[msg.raw_id] = (hkey, outcome, data, started, msg.attempt, task.name,
                                    job_id, task.result_ttl)

    # -- cancellation (called by the cancel listener) --------------------------------------

    def cancel(self, job_id: str) -> bool:
        """Cancel ``job_id`` if it runs here, else remember it; True if it was running."""
        running = self.running.get(job_id)
        if running is not None:
            # Delivered at the await the job's coroutine (or its wait for its thread) is
            # suspended at: running jobs leave ``running`` before their next await.
            self._cancelling.add(job_id)
            running.cancel()
            return True
        now = time.monotonic()
        if len(self.cancelled) >= CANCELLED_KEPT:
            for jid, at in list(self.cancelled.items()):
                if now - at > CANCELLED_FOR or len(self.cancelled) >= CANCELLED_KEPT:
                    del self.cancelled[jid]
        self.cancelled[job_id] = now
        return False

    # -- policies for the runtime ---------------------------------------------------------

    def timeout_of(self, raw: list[bytes] | None) -> float | None:
        """The watchdog's limit for an entry: its async task's timeout (a sync task's own
        thread lane enforces its timeout, so None for those)."""
        task = self.tasks.get(task_of(raw, self.task_field) or "")
        return task.timeout if task is not None and task.lane is None else None

    def retry_of(self, raw: list[bytes] | None) -> Retry:
        """The retry policy of an entry: its task's, else the queue's."""
        task = self.tasks.get(task_of(raw, self.task_field) or "")
        return task.retry if task is not None else self.retry

    # -- Completion ---------------------------------------------------------------------

    def ack_command(self, key: str, group: str, consumer: str, ids: list[bytes]) -> list[Any]:
        """One FINISH script call for ``ids``: store their results and ack them."""
        keys: list[Any] = []
        argv: list[Any] = [group, consumer]
        records = self.records
        placeholder = job_key(self.stream, "~")  # for an id with no record (never written)
        for raw_id in ids:
            rec = records.get(raw_id)
            if rec is None:
                keys.append(placeholder)
                argv += [raw_id, "discard", b"", 0, 0, "", "", 1]
            else:
                keys.append(rec[0])
                argv += [raw_id, *rec[1:]]
        keys.append(self.stats_key)  # the queue's totals: HINCRBY succeeded
        if self._finish_loaded:
            return ["EVALSHA", self._finish_sha, len(keys) + 1, key, *keys, *argv]
        self._finish_loaded = True  # EVAL caches the script: the next batches go by digest
        return ["EVAL", scripts.FINISH, len(keys) + 1, key, *keys, *argv]

    def acked(self, ids: list[bytes], reply: Any) -> bool:
        """Forget the records of ``ids`` (their FINISH was sent); after a NOSCRIPT (a new or
        restarted server) keep them, and send the next FINISH in full."""
        if isinstance(reply, NoScriptError):
            self._finish_loaded = False
            return True
        records = self.records
        for raw_id in ids:
            records.pop(raw_id, None)
        return False

    async def dead_lettered(self, client: Any, msg: Message, *, consumer: str,
                            error_type: str, error: str, traceback: str, dead_letter: str,
                            record_id: str) -> None:
        """Record the job of a dead-lettered entry as failed (FAIL), waking its waiters."""
        raw = msg.raw_fields
        fields = {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)} if raw else {}
        job_id = fields[JOB].decode(errors="replace") if JOB in fields else msg.id
        name = task_of(raw, self.task_field) or ""
        task = self.tasks.get(name)
        ttl = task.failure_ttl if task is not None else self.failure_ttl
        self.records.pop(msg.raw_id, None)
        try:
            call = decode_call(msg.raw_id, raw, self.task_field, self.signatures,
                               self.max_payload_bytes)
            args, kwargs = encode_json(call.args, 1 << 30), encode_json(call.kwargs, 1 << 30)
        except (BadJob, PayloadError):
            args, kwargs = b"[]", b"{}"
        await client.eval(
            scripts.FAIL, 1, job_key(msg.stream, job_id), job_id, name, error_type, error,
            traceback[-TRACEBACK_CHARS:], msg.attempt, consumer, ttl, msg.raw_id, msg.stream,
            args, kwargs, self._started.pop(msg.raw_id, ""), dead_letter, record_id)
        log.error("job_failed", queue=self.queue, task=name, job_id=job_id, stream=msg.stream,
                  message_id=msg.id, attempt=msg.attempt, error_type=error_type, error=error)
