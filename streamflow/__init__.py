"""streamflow: fast, safe asyncio stream processing and job queues on Redis Streams."""

from .app import App, HandlerSpec
from .config import Settings
from .errors import (
    AdminError,
    AppLoadError,
    BadJob,
    ConfigError,
    ConsumerNameInUse,
    EnqueueError,
    HandlerTimeout,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    PayloadError,
    PayloadTooLarge,
    PermissionDenied,
    Reject,
    ResultTimeout,
    ServerBinaryNotFound,
    ServerUnavailable,
    StreamflowError,
    UnknownStream,
)
from .jobs import Job, JobInfo, JobStatus, Task
from .message import Message
from .policies import Retention, Retry
from .worker import Worker

__all__ = [
    "AdminError",
    "App",
    "AppLoadError",
    "BadJob",
    "ConfigError",
    "ConsumerNameInUse",
    "EnqueueError",
    "HandlerSpec",
    "HandlerTimeout",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobStatus",
    "Message",
    "PayloadError",
    "PayloadTooLarge",
    "PermissionDenied",
    "Reject",
    "ResultTimeout",
    "Retention",
    "Retry",
    "ServerBinaryNotFound",
    "ServerUnavailable",
    "Settings",
    "StreamflowError",
    "Task",
    "UnknownStream",
    "Worker",
]

__version__ = "0.1.0"
