"""The exceptions streamflow raises, in one tree.

::

    StreamflowError
    ├── ConfigError            a setting is invalid (raised at start-up, names the setting)
    ├── AppLoadError           ``module:app`` cannot be imported or is not an App
    ├── ServerUnavailable      the Redis server cannot be reached at start-up
    ├── PayloadError           a message payload cannot be decoded or is too large
    │   └── PayloadTooLarge    a payload exceeds ``max_payload_bytes``
    └── Reject                 raised by a handler: dead-letter this message now, no retry
"""

from __future__ import annotations

__all__ = [
    "AppLoadError",
    "ConfigError",
    "PayloadError",
    "PayloadTooLarge",
    "Reject",
    "ServerUnavailable",
    "StreamflowError",
]


class StreamflowError(Exception):
    """Base class of every error streamflow raises on purpose."""


class ConfigError(StreamflowError, ValueError):
    """A setting is invalid; the message names the setting and why."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"invalid setting {setting}: {problem}")
        self.setting = setting
        self.problem = problem


class AppLoadError(StreamflowError):
    """The ``module:attribute`` given to ``streamflow run`` cannot be loaded."""


class ServerUnavailable(StreamflowError):
    """The Redis server cannot be reached (wrong URL, server down, auth refused)."""


class PayloadError(StreamflowError):
    """A payload cannot be decoded (for example invalid JSON); such messages are dead-lettered."""


class PayloadTooLarge(PayloadError):
    """A payload is larger than the configured ``max_payload_bytes``."""


class Reject(StreamflowError):
    """Raise from a handler to dead-letter the current message at once, without retries."""
