"""Counters of the runtime as one object per handler, and the snapshots everyone else reads.

The hot path increments plain attributes of a :class:`Counters` (a slot binds it to a
local name, so a count costs what ``self.handled += 1`` cost before). Tests, ``info``,
benchmarks and a metrics exporter never reach into the runtime's parts: they call
:meth:`Worker.stats() <streamflow.Worker.stats>` and get frozen :class:`HandlerStats`
snapshots, taken when asked (no per-message hook).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["Counters", "HandlerStats", "WorkerStats"]


class Counters:
    """Mutable counters of one handler's consumer (written by the runtime only)."""

    __slots__ = (
        "dead_lettered", "failed", "handled", "high_water", "maintenance_passes", "read_passes",
        "reads", "reclaim_passes", "reclaimed", "retried", "trimmed",
    )

    def __init__(self) -> None:
        self.handled = 0  # handlers that returned
        self.failed = 0  # handler failures (exceptions and timeouts)
        self.retried = 0  # failures parked for a retry
        self.dead_lettered = 0  # entries moved to the dead-letter stream
        self.trimmed = 0  # pending entries found deleted from their stream (acked)
        self.reclaimed = 0  # entries claimed back (retries due, dead consumers' entries, own)
        self.reads = 0  # XREADGROUP calls that returned entries
        self.read_passes = 0  # XREADGROUP calls that returned (with or without entries)
        self.reclaim_passes = 0  # reclaimer passes completed (with or without claims)
        self.maintenance_passes = 0  # maintenance passes (prune, trim) completed, failed or not
        self.high_water = 0  # most handlers ever in flight at once


@dataclass(frozen=True)
class HandlerStats:
    """A snapshot of one handler's consumer: counters plus what is in flight right now."""

    handler: str  # module.qualname of the handler function
    group: str
    streams: tuple[str, ...]
    concurrency: int  # handler slots
    in_flight: int  # entries taken from Redis and not finished: queued plus running
    running: int  # handlers running right now
    reserved: int  # slots promised to reads and claims that are on their way
    handled: int
    failed: int
    retried: int
    dead_lettered: int
    trimmed: int
    reclaimed: int
    reads: int
    read_passes: int
    reclaim_passes: int
    maintenance_passes: int
    high_water: int

    @property
    def free(self) -> int:
        """Slots neither running, queued for, nor promised to an entry."""
        return self.concurrency - self.in_flight - self.reserved

    @property
    def finished(self) -> int:
        """Entries that will not run again here: handled, dead-lettered or found trimmed."""
        return self.handled + self.dead_lettered + self.trimmed

    @classmethod
    def of(
        cls, counters: Counters, *, handler: str, group: str, streams: tuple[str, ...],
        concurrency: int, in_flight: int, running: int, reserved: int,
    ) -> HandlerStats:
        """Freeze ``counters`` together with the consumer's identity and current load."""
        values = {name: getattr(counters, name) for name in Counters.__slots__}
        return cls(handler=handler, group=group, streams=streams, concurrency=concurrency,
                   in_flight=in_flight, running=running, reserved=reserved, **values)


_SUMMED = tuple(
    f.name for f in fields(HandlerStats)
    if f.name not in ("handler", "group", "streams", "concurrency", "high_water", "reserved")
)


@dataclass(frozen=True)
class WorkerStats:
    """A snapshot of a whole worker: one :class:`HandlerStats` per handler, plus acks."""

    handlers: tuple[HandlerStats, ...]
    acked: int  # ids Redis confirmed acked
    ack_flushes: int  # ack pipelines sent
    unacked: int  # ids buffered, not yet sent
    ack_missing: int  # ids XACK reported as not pending (already acked or deleted)

    @property
    def finished(self) -> int:
        """Entries that will not run again here, over every handler (see :attr:`HandlerStats.finished`)."""
        return sum(h.finished for h in self.handlers)

    def total(self, counter: str) -> int:
        """``counter`` (e.g. ``"handled"``) summed over every handler (``high_water``: the most)."""
        if counter == "high_water":
            return max((h.high_water for h in self.handlers), default=0)
        if counter not in _SUMMED:
            raise KeyError(f"{counter!r} is not a summable counter; one of {', '.join(_SUMMED)}")
        return sum(getattr(h, counter) for h in self.handlers)

    def handler(self, name: str) -> HandlerStats:
        """The snapshot of the handler whose name (or qualified-name suffix) is ``name``."""
        for h in self.handlers:
            if h.handler == name or h.handler.endswith("." + name):
                return h
        raise KeyError(f"no handler named {name!r}; have {[h.handler for h in self.handlers]}")

    def __getattr__(self, name: str) -> int:
        # ``stats.handled`` is ``stats.total("handled")``: the common question, kept short.
        if name in _SUMMED or name == "high_water":
            return self.total(name)
        raise AttributeError(name)
