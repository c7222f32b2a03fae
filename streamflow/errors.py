"""Every exception streamflow raises, in one tree (the bottom of the import graph).

::

    StreamflowError
    ├── ConfigError              a setting is invalid (raised at start-up, names the setting)
    ├── AppLoadError             ``module:app`` cannot be imported or is not an App
    ├── ServerUnavailable        the Redis server cannot be reached or refuses us at start-up
    │   └── PermissionDenied     the Redis user lacks a permission the worker needs
    ├── ConsumerNameInUse        another live process holds this worker's consumer name
    ├── ServerBinaryNotFound     no redis-server / valkey-server binary for an embedded server
    ├── AdminError               an operator command cannot do what was asked
    │   └── UnknownStream        the named stream (or its dead-letter stream) does not exist
    ├── PayloadError             a message payload cannot be decoded or is too large
    │   └── PayloadTooLarge      a payload exceeds ``max_payload_bytes``
    ├── HandlerTimeout           a handler ran longer than its ``timeout`` (a failed attempt)
    ├── Reject                   raised by a handler: dead-letter this message now, no retry
    │   └── BadJob               a job entry names no known task or carries bad arguments
    ├── EnqueueError             a job cannot be enqueued (arguments, encoding, dependencies)
    ├── NotReplicated            publish(durable=True): no replica acknowledged the entry in time
    └── JobError                 what waiting on a job can raise
        ├── JobFailed            the job failed for good (type, message, traceback summary)
        ├── JobCancelled         the job was cancelled (or a dependency failed)
        ├── JobNotFound          no state is kept for this job id (never enqueued, or expired)
        └── ResultTimeout        no result came within the timeout

Errors of redis-py are not wrapped on the hot path; they are classified by
:mod:`streamflow.redis_errors` (by type where redis-py gives one) and translated into
this tree at the boundaries that report to a user (start-up checks, admin commands).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AdminError",
    "AppLoadError",
    "BadJob",
    "ConfigError",
    "ConsumerNameInUse",
    "EnqueueError",
    "HandlerTimeout",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "NotReplicated",
    "PayloadError",
    "PayloadTooLarge",
    "PermissionDenied",
    "Reject",
    "ResultTimeout",
    "ServerBinaryNotFound",
    "ServerUnavailable",
    "StreamflowError",
    "UnknownStream",
]


class StreamflowError(Exception):
    """Base class of every error streamflow raises on purpose."""


class ConfigError(StreamflowError, ValueError):
    """A setting is invalid; the message names the setting and why."""

    def __init__(self, setting: str, problem: str, *, source: str | None = None) -> None:
        where = f" ({source})" if source else ""
        super().__init__(f"invalid setting {setting}{where}: {problem}")
        self.setting = setting  # the setting's name as the user wrote it (or its env var)
        self.problem = problem  # what is wrong with it, in one phrase
        self.source = source  # where the value came from, e.g. "STREAMFLOW_BLOCK_MS=1.5"


class AppLoadError(StreamflowError):
    """The ``module:attribute`` given to ``streamflow run`` cannot be loaded.

    ``details`` is the traceback of the user's code when importing it raised (the
    command line prints it before the one-line error), else empty.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details  # traceback text of the user's frames, or ""


class ServerUnavailable(StreamflowError):
    """The Redis server cannot be reached (wrong URL, server down, auth refused)."""


class PermissionDenied(ServerUnavailable):
    """The Redis user lacks a permission the worker needs (checked at start-up).

    ``denied`` lists ``(command, key)`` pairs, e.g. ``("XCLAIM", "orders")``.
    """

    def __init__(self, message: str, denied: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.denied = list(denied)  # (command, key) pairs the server refused


class ConsumerNameInUse(StreamflowError):
    """Another live process holds the lease of this worker's consumer name.

    Raised at start-up for a fixed name (``consumer_name`` / ``worker_slot``), and by
    :meth:`~streamflow.Worker.serve` after a graceful stop when another process took the
    name while this worker could not renew its lease.
    """


class ServerBinaryNotFound(StreamflowError):
    """No redis-server / valkey-server binary could be found to start an embedded server."""


class AdminError(StreamflowError):
    """An admin command cannot do what was asked (the message says why)."""


class UnknownStream(AdminError):
    """The named stream (and its dead-letter stream) do not exist, or the key is no stream."""


class PayloadError(StreamflowError):
    """A payload cannot be decoded (for example invalid JSON); such messages are dead-lettered."""


class PayloadTooLarge(PayloadError):
    """A payload is larger than the configured ``max_payload_bytes``."""


class HandlerTimeout(StreamflowError):
    """A handler ran longer than its ``timeout``; counts as a failed attempt."""


class Reject(StreamflowError):
    """Raise from a handler to dead-letter the current message at once, without retries."""


class BadJob(Reject):
    """A job entry names no task this worker knows, or its arguments do not fit the task."""


class EnqueueError(StreamflowError, ValueError):
    """A job cannot be enqueued: arguments do not fit the function, a value JSON cannot
    carry, or a dependency that does not exist. Raised in the caller, before anything is
    written."""


class NotReplicated(StreamflowError):
    """``publish(..., durable=True)``: fewer replicas than asked acknowledged the entry in time.

    The entry *was* written to the master (``entry_id``); it may still reach the replicas
    later, or be lost if the master fails before it does. Retrying the publish may write
    it twice: consumers must tolerate duplicates anyway (at-least-once).
    """

    def __init__(self, message: str, *, stream: str, entry_ids: Sequence[str], acked: int,
                 wanted: int) -> None:
        super().__init__(message)
        self.stream = stream  # the stream key written (a partition's, when partitioned)
        self.entry_ids = list(entry_ids)  # what the master stored
        self.acked = acked  # replicas that acknowledged (fewest, for several entries)
        self.wanted = wanted  # replicas asked for


class JobError(StreamflowError):
    """Base of what waiting on a job can raise; ``job_id`` names the job."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailed(JobError):
    """The job failed for good: ``error_type``, ``error`` and a ``traceback`` summary."""

    def __init__(self, job_id: str, error_type: str, error: str, traceback: str = "") -> None:
        super().__init__(job_id, f"job {job_id} failed: {error_type}: {error}")
        self.error_type = error_type  # the exception's class name, e.g. "ValueError"
        self.error = error  # its message
        self.traceback = traceback  # the formatted traceback (last frames), may be ""


class JobCancelled(JobError):
    """The job was cancelled, or a job it depends on failed or was cancelled (``reason``)."""

    def __init__(self, job_id: str, reason: str = "") -> None:
        super().__init__(job_id, f"job {job_id} was cancelled" + (f": {reason}" if reason else ""))
        self.reason = reason


class JobNotFound(JobError):
    """No state is kept for this job id: never enqueued here, or its state expired."""

    def __init__(self, job_id: str, where: str = "") -> None:
        super().__init__(job_id, f"no job {job_id!r}" + (f" in {where}" if where else "")
                         + " (never enqueued, or its state expired)")


class ResultTimeout(JobError, TimeoutError):
    """``Job.result(timeout=...)`` gave up: the job had not finished in time."""

    def __init__(self, job_id: str, timeout: float, status: str) -> None:
        super().__init__(job_id, f"job {job_id} did not finish within {timeout:g}s "
                                 f"(status: {status})")
        self.status = status  # the job's status when the wait gave up
