"""A job's state as its hash stores it, read into :class:`JobInfo` (no I/O here).

Where each status comes from:

* ``queued``, ``scheduled``, ``deferred`` (waiting for ``depends_on``), ``succeeded``,
  ``failed``, ``cancelled``: written in the job's hash by the scripts of
  :mod:`streamflow.jobs.scripts`;
* ``started`` and ``retrying`` are read from the queue's consumer group: a queued job
  whose entry is pending under a worker has started (the worker is that consumer);
  one pending under the retry consumer waits for its next attempt. Nothing is written
  when a job starts, so starting costs the worker no round trip.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["FINAL", "JobInfo", "JobStatus", "ms_to_datetime"]


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"  # in its stream, no worker has it yet
    SCHEDULED = "scheduled"  # delayed: in the scheduled set until its time
    DEFERRED = "deferred"  # waiting for the jobs it depends on
    STARTED = "started"  # a worker runs it
    RETRYING = "retrying"  # failed, waiting for its next attempt
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # out of attempts (or rejected): its entry is in the dead-letter stream
    CANCELLED = "cancelled"


#: Statuses a job never leaves (except by ``jobs requeue``).
FINAL = frozenset((JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED))


def ms_to_datetime(ms: Any) -> datetime | None:
    """A stored millisecond timestamp as an aware UTC datetime (None when absent)."""
    if ms in (None, b"", ""):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


@dataclass(frozen=True)
class JobInfo:
    """What is known about one job (``Job.info()``)."""

    id: str
    queue: str
    status: JobStatus
    task: str | None = None
    attempt: int | None = None  # attempts so far (the running one included)
    worker: str | None = None  # consumer name of the worker that ran (or runs) it
    enqueued_at: datetime | None = None
    scheduled_for: datetime | None = None
    started_at: datetime | None = None  # for a running job: its delivery (or last lease)
    ended_at: datetime | None = None
    result: Any = None  # the return value (succeeded)
    error_type: str | None = None  # failed: the exception's class name
    error: str | None = None
    traceback: str | None = None
    reason: str | None = None  # cancelled: why
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    entry: str | None = None  # its stream entry id, once added

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO 8601), for the CLI."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat(timespec="milliseconds")
            elif isinstance(value, JobStatus):
                value = value.value
            out[name] = value
        return out


def text(value: Any) -> str | None:
    """A stored value as text (None stays None)."""
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
