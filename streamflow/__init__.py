"""streamflow: fast, safe asyncio stream processing and job queues on Redis Streams."""

from .app import App, HandlerSpec
from .config import Settings
from .errors import (
    AppLoadError,
    ConfigError,
    PayloadError,
    PayloadTooLarge,
    Reject,
    ServerUnavailable,
    StreamflowError,
)
from .message import Message
from .permissions import PermissionDenied
from .policies import Retention, Retry
from .worker import Worker

__all__ = [
    "App",
    "AppLoadError",
    "ConfigError",
    "HandlerSpec",
    "Message",
    "PayloadError",
    "PayloadTooLarge",
    "PermissionDenied",
    "Reject",
    "Retention",
    "Retry",
    "ServerUnavailable",
    "Settings",
    "StreamflowError",
    "Worker",
]

__version__ = "0.1.0"
