"""Jobs: an RQ-style task queue on the streams runtime.

A queue is a stream, a job an entry of it, a task a function the queue's runner looks up
by name. Enqueue checks the call against the function and writes the job (state hash +
entry) in one script; workers run it with the runtime's retries, timeouts, dead letters
and reclaim; the result is stored with the ack. See ``docs/jobs.md``.
"""

from .job import Job
from .registry import (
    DEFAULT_FAILURE_TTL,
    DEFAULT_QUEUE,
    DEFAULT_QUEUED_TTL,
    DEFAULT_RESULT_TTL,
    Jobs,
    QueueOptions,
)
from .state import JobInfo, JobStatus
from .task import Task

__all__ = [
    "DEFAULT_FAILURE_TTL",
    "DEFAULT_QUEUE",
    "DEFAULT_QUEUED_TTL",
    "DEFAULT_RESULT_TTL",
    "Job",
    "JobInfo",
    "JobStatus",
    "Jobs",
    "QueueOptions",
    "Task",
]
