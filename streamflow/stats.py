"""Counters of the runtime as one object per handler, and the snapshots everyone else reads.

The hot path increments plain attributes of a :class:`Counters` (a slot binds it to a
local name, so a count costs what ``self.handled += 1`` cost before). Tests, ``info``,
benchmarks and a metrics exporter never reach into the runtime's parts: they call
:meth:`Worker.stats() <streamflow.Worker.stats>` and get frozen :class:`HandlerStats`
snapshots, taken when asked (no per-message hook).

When a metrics exporter runs (``metrics_port``), a consumer's :class:`Counters` also
hold two :class:`Histogram` s, filled by its slots: handler durations and the age of
each entry when its handler started. Each is a plain list of bucket counts indexed by a
bisect on a fixed tuple of upper bounds, plus a running sum; the snapshot copies them
(:class:`HistogramSnapshot`) and the exporter makes Prometheus histograms of them when
scraped.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = [
    "DURATION_BUCKETS", "LATENCY_BUCKETS", "Counters", "HandlerStats", "Histogram",
    "HistogramSnapshot", "WorkerStats",
]

#: Upper bounds (seconds) of the handler-duration buckets: 0.5 ms to 1 min.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
)
#: Upper bounds (seconds) of the latency buckets (an entry's age when its handler started):
#: 1 ms to 1 h, since a backlog or a retry's backoff can make it minutes.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
)


class Histogram:
    """Bucket counts of observations (written by the slots, which inline the recording).

    ``counts[i]`` counts the observations ``v`` with ``bounds[i-1] < v <= bounds[i]``
    (``bisect_left(bounds, v)`` is ``i``); the last count is the overflow bucket (above
    every bound). Not cumulative: the snapshot's reader sums them up.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ascending upper bounds, seconds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, the last one above every bound
        self.sum = 0.0  # of every observation

    def snapshot(self) -> HistogramSnapshot:
        """A frozen copy."""
        return HistogramSnapshot(self.bounds, tuple(self.counts), self.sum)


@dataclass(frozen=True)
class HistogramSnapshot:
    """A frozen :class:`Histogram`."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket (not cumulative), the overflow bucket last
    sum: float

    @property
    def count(self) -> int:
        """Observations in all."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` per bound, then ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out



class Counters:
    """Mutable counters of one handler's consumer (written by the runtime only)."""

    __slots__ = (
        "dead_lettered", "durations", "failed", "handled", "high_water", "latencies",
        "maintenance_passes", "read_passes", "reads", "reclaim_passes", "reclaimed", "retried",
        "trimmed",
    )

    def __init__(self, *, histograms: bool = False) -> None:
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
        # Only when metrics are exported (``histograms``): each costs the slot a clock read
        # and a bisect per entry.
        self.durations = Histogram(DURATION_BUCKETS) if histograms else None  # handler runs
        self.latencies = Histogram(LATENCY_BUCKETS) if histograms else None  # entry age at start


#: The plain integer counters of :class:`Counters` (copied into every snapshot).
_COUNTS = tuple(name for name in Counters.__slots__ if name not in ("durations", "latencies"))


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
    durations: HistogramSnapshot | None = None  # handler durations (None: not recorded)
    latencies: HistogramSnapshot | None = None  # entries' age when their handler started

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
        values = {name: getattr(counters, name) for name in _COUNTS}
        durations, latencies = counters.durations, counters.latencies
        return cls(handler=handler, group=group, streams=streams, concurrency=concurrency,
                   in_flight=in_flight, running=running, reserved=reserved,
                   durations=durations.snapshot() if durations is not None else None,
                   latencies=latencies.snapshot() if latencies is not None else None, **values)


_SUMMED = tuple(
    f.name for f in fields(HandlerStats)
    if f.name not in ("handler", "group", "streams", "concurrency", "high_water", "reserved",
                      "durations", "latencies")
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
