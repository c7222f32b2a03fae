"""HandlerSpec: what the runtime needs to know about one registered handler, validated once.

The :class:`~streamflow.App` builds specs from its decorators; the worker and the
runtime take specs (through the small :class:`Registry` protocol), never the App, so
the runtime sits below the App in the import graph.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import Settings, validate_name
from .connection import Connection
from .errors import ConfigError
from .keys import dead_letter_stream
from .message import Message
from .policies import Retention, Retry

__all__ = [
    "Completion",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT",
    "Handler",
    "HandlerSpec",
    "Hook",
    "Registry",
    "RetryOf",
    "TimeoutOf",
    "Service",
    "check_handler_options",
]

Handler = Callable[[Message], Awaitable[Any]]
Hook = Callable[[], Awaitable[Any]]
#: The retry policy of one entry, from its raw ``[field, value, ...]`` list (None: deleted).
RetryOf = Callable[[list[bytes] | None], Retry]
#: The timeout of one entry's handler (seconds, None for none), from its raw fields.
TimeoutOf = Callable[[list[bytes] | None], float | None]


class Completion(Protocol):
    """How a handler's handled entries are acknowledged when a bare XACK is not enough.

    Job queues use it to write each job's result in the same atomic step as its ack, and
    to record a dead-lettered job's failure. The worker's ack buffer asks it for the
    command of each batch in place of XACK.
    """

    def ack_command(self, key: str, group: str, consumer: str, ids: list[bytes]) -> list[Any]:
        """One command that acks ``ids`` (pending in ``key``); its reply counts those acked."""

    def acked(self, ids: list[bytes], reply: Any) -> bool:
        """``ids`` were sent and ``reply`` came back (a count, or an error): forget what was
        kept for them, or return True to have them sent again with the next batch."""

    async def dead_lettered(
        self, client: Any, msg: Message, *, consumer: str, error_type: str, error: str,
        traceback: str, dead_letter: str, record_id: str,
    ) -> None:
        """``msg`` was moved to its dead-letter stream ``dead_letter`` as record
        ``record_id`` (after its last attempt, or rejected)."""


class Service(Protocol):
    """A background task a worker runs beside its consumers (job scheduling, cron, cancels).

    ``run`` is started (``task_group.start``: the worker is ready once every service
    called ``task_status.started()``) after the consumers, and cancelled after they
    drained.
    """

    async def run(self, client: Any, consumer: str, *, task_status: Any = ...) -> None:
        """Run until cancelled, using ``client`` (the worker's); ``consumer`` is its name."""

DEFAULT_CONCURRENCY = 100
DEFAULT_TIMEOUT = 180.0

_START_ID_RE = re.compile(r"^(\$|0|\d+(-\d+)?)$")


@dataclass(frozen=True)
class HandlerSpec:
    """Everything the worker needs to know about one registered handler."""

    func: Handler
    name: str
    streams: tuple[str, ...]
    group: str
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float | None = DEFAULT_TIMEOUT
    retry: Retry = field(default_factory=Retry)
    dead_letter: str | None = None
    start_id: str = "0"
    retention: Retention | None = None
    retry_of: RetryOf | None = None  # per-entry retry policy (job queues); None: ``retry``
    # per-entry timeout (job queues; ``timeout`` is then the shortest, for the watchdog's tick)
    timeout_of: TimeoutOf | None = None
    completion: Completion | None = None  # writes results with acks (job queues)
    # one entry per key (sf:key) at a time, in stream order; partitions read by one owner
    ordered: bool = False

    def retry_for(self, raw_fields: list[bytes] | None) -> Retry:
        """The retry policy of one entry: ``retry_of(raw_fields)`` when set, else ``retry``."""
        return self.retry if self.retry_of is None else self.retry_of(raw_fields)

    def timeout_for(self, raw_fields: list[bytes] | None) -> float | None:
        """The timeout of one entry: ``timeout_of(raw_fields)`` when set, else ``timeout``."""
        return self.timeout if self.timeout_of is None else self.timeout_of(raw_fields)

    def dead_letter_stream(self, stream: str) -> str:
        """Name of the dead-letter stream for entries of ``stream``."""
        return dead_letter_stream(stream, self.dead_letter)


class Registry(Protocol):
    """What a worker reads from an application: its handlers and lifespan hooks.

    :class:`~streamflow.App` is one; anything with these attributes will do.
    """

    @property
    def handlers(self) -> Sequence[HandlerSpec]:
        """The registered handlers, in registration order."""

    @property
    def startup_hooks(self) -> Sequence[Hook]:
        """Coroutine functions awaited before the consumers start."""

    @property
    def shutdown_hooks(self) -> Sequence[Hook]:
        """Coroutine functions awaited after the consumers stopped."""

    @property
    def services(self) -> Sequence[Service]:
        """Background tasks to run beside the consumers (may be empty)."""

    def settings(self, **overrides: Any) -> Settings:
        """The worker settings of this application, with ``overrides`` applied."""

    def current_connection(self) -> Connection | None:
        """The connection the application publishes through now, if one is open."""

    def bind_connection(self, connection: Connection | None) -> None:
        """Publish through ``connection`` from now on (None: open one lazily when needed)."""

    async def aclose(self) -> None:
        """Close what the application opened itself."""


def check_handler_options(
    streams: Sequence[str],
    *,
    concurrency: int,
    timeout: float | None,
    start_id: str,
    dead_letter: str | None,
) -> None:
    """Raise :class:`ConfigError` naming the first invalid option of a handler registration."""
    if not streams:
        raise ConfigError("handler streams", "give at least one stream name")
    for s in streams:
        validate_name("stream name", s)
    if len(set(streams)) != len(streams):
        raise ConfigError("handler streams", f"stream listed twice in {tuple(streams)!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError("concurrency", f"must be an int >= 1, got {concurrency!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ConfigError("timeout", f"must be a number > 0 or None, got {timeout!r}")
    if not isinstance(start_id, str) or not _START_ID_RE.match(start_id):
        raise ConfigError("start_id", f"{start_id!r} is not $, 0 or a stream id")
    if dead_letter is not None:
        validate_name("dead_letter", dead_letter.replace("{stream}", "x"))
