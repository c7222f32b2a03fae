"""streamflow: fast, safe asyncio stream processing and job queues on Redis Streams."""

from .app import App, HandlerSpec
from .config import Settings
from .errors import (
    AdminError,
    AppLoadError,
    ConfigError,
    ConsumerNameInUse,
    HandlerTimeout,
    PayloadError,
    PayloadTooLarge,
    PermissionDenied,
    Reject,
    ServerBinaryNotFound,
    ServerUnavailable,
    StreamflowError,
    UnknownStream,
)
from .message import Message
from .policies import Retention, Retry
from .worker import Worker

__all__ = [
    "AdminError",
    "App",
    "AppLoadError",
    "ConfigError",
    "ConsumerNameInUse",
    "HandlerSpec",
    "HandlerTimeout",
    "Message",
    "PayloadError",
    "PayloadTooLarge",
    "PermissionDenied",
    "Reject",
    "Retention",
    "Retry",
    "ServerBinaryNotFound",
    "ServerUnavailable",
    "Settings",
    "StreamflowError",
    "UnknownStream",
    "Worker",
]

__version__ = "0.1.0"
