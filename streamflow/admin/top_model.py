"""``streamflow top``'s data: what one refresh found, per stream and group, and the job queues.

:class:`~streamflow.admin.top.Sampler` fills a :class:`Snapshot`;
:mod:`~streamflow.admin.top_screen` lays it out; ``top --json`` prints :meth:`Snapshot.to_json`.
Rates are per second of server time between two refreshes (None: unknown, see
:mod:`~streamflow.admin.top`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..connection import redact_url
from .queues import QueueCounts

__all__ = ["GroupSample", "Snapshot", "StreamSample"]


@dataclass
class GroupSample:
    """One consumer group at one refresh."""

    name: str
    pending: int
    lag: int | None  # None: the server cannot tell (after deletions inside the stream)
    entries_read: int | None
    retrying: int = 0  # pending entries parked on streamflow:retry, waiting for their backoff
    oldest_age_ms: int | None = None  # age of the oldest pending entry (from its id)
    live: int | None = None  # consumers whose name a process holds; None: leases unreadable
    stopped: int = 0  # consumers of the group without a live lease
    handled: int | None = None  # settled since the refresh before
    rate: float | None = None  # ... per second

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


@dataclass
class StreamSample:
    """One watched stream at one refresh. ``state``: ``stream``, ``missing`` (no such key),
    ``denied`` (the Redis user may not read it) or the key's other type (``wrongtype``)."""

    name: str
    state: str = "stream"
    length: int = 0
    entries_added: int | None = None
    last_generated_id: str | None = None
    dlq_length: int = 0
    added: int | None = None  # entries added since the refresh before
    rate_in: float | None = None  # ... per second
    groups: list[GroupSample] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        doc = {k: v for k, v in self.__dict__.items() if k != "groups"}
        return {**doc, "groups": [g.to_json() for g in self.groups]}


@dataclass
class Snapshot:
    """What one refresh shows; ``error``: the last refresh failed, the figures are older."""

    url: str
    version: str = ""
    server_ms: int | None = None  # the server's clock at the figures' refresh
    taken_at: float | None = None  # local time.time() of that refresh
    streams: list[StreamSample] = field(default_factory=list)
    queues: list[QueueCounts] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # queues or streams not shown, and why
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (one line of ``top --json``)."""
        return {
            "server": {"url": redact_url(self.url), "version": self.version},
            "server_time_ms": self.server_ms, "error": self.error,
            "streams": [s.to_json() for s in self.streams],
            "queues": [q.to_json() for q in self.queues], "notes": self.notes,
        }
