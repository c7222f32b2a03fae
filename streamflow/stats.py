"""Counters of the runtime as one object per handler, and the snapshots everyone else reads.

The hot path increments plain attributes of a :class:`Counters` (a slot binds it to a
local name, so a count costs what ``self.handled += 1`` cost before). Tests, ``info``,
benchmarks and a metrics exporter never reach into the runtime's parts: they call
:meth:`Worker.stats() <streamflow.Worker.stats>` and get frozen :class:`HandlerStats`
snapshots, taken when asked (no per-message hook).

When a metrics exporter runs (``metrics_port``), a consumer's :class:`Counters` also
hold a :class:`Timing`: two :class:`Histogram` s, handler durations and the age of an
entry when its handler started, filled by the slots. Each is a plain list of bucket
counts indexed by a bisect on a fixed tuple of upper bounds, plus a running sum; the
snapshot copies them (:class:`HistogramSnapshot`) and the exporter makes Prometheus
histograms of them when scraped.

Timing an entry costs about 0.7 us (three clock reads, an id parse, two bisects), half
of what the whole runtime spends on a no-op handler's entry, so a busy handler times a
systematic sample: each slot times one entry in ``every``, and a timed entry counts in
the histograms with the weight of the entries it stands for (itself and the untimed ones
its slot ran since the one it timed before). ``every`` is 1 (every entry timed, the
histograms exact) while the handler runs fewer than :data:`TIMED_PER_SECOND` entries a
second, and grows with the rate above that, so timing never costs more than that many
timed entries a second (under 1 % of a core), plus a countdown of about 20 ns per entry.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from dataclasses import dataclass, fields

__all__ = [
    "DURATION_BUCKETS", "LATENCY_BUCKETS", "TIMED_PER_SECOND", "Counters", "HandlerStats",
    "Histogram", "HistogramSnapshot", "Timing", "WorkerStats",
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


#: Most entries a handler's slots time per second (a :class:`Timing`'s default budget).
TIMED_PER_SECOND = 10_000


class Histogram:
    """Bucket counts of observations (written through :class:`Timing` by the slots).

    ``counts[i]`` counts the observations ``v`` with ``bounds[i-1] < v <= bounds[i]``
    (``bisect_left(bounds, v)`` is ``i``); the last count is the overflow bucket (above
    every bound). Not cumulative: the snapshot's reader sums them up.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ascending upper bounds, seconds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, the last one above every bound
        self.sum = 0.0  # of every observation

    def observe(self, value: float, weight: int = 1) -> None:
        """Count ``value`` ``weight`` times (a timed entry standing for ``weight`` entries)."""
        self.counts[bisect_left(self.bounds, value)] += weight
        self.sum += value * weight

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


class Timing:
    """The duration and latency histograms of one handler, and how often its slots time.

    A slot calls :meth:`start` when its handler starts on a timed entry and
    :meth:`finish` when it ended, then counts down the interval :meth:`finish` returned
    before it times the next one (see the module docstring). :meth:`finish` sets
    :attr:`every` from the rate at which entries finish: over a window of at least
    ``_WINDOW_TIMED`` timed entries or ``_WINDOW_SECONDS``, whichever is first, the
    entries the timed ones stood for divided by the window's length.
    """

    __slots__ = (
        "_window_entries", "_window_start", "_window_timed", "budget", "durations", "every",
        "latencies", "timed",
    )

    _WINDOW_TIMED = 64  # timed entries after which the rate is estimated again ...
    _WINDOW_SECONDS = 0.5  # ... or seconds (a rate that fell is seen within this long)

    def __init__(self, budget: int = TIMED_PER_SECOND) -> None:
        if budget < 1:
            raise ValueError(f"budget must be at least 1 timed entry a second, got {budget}")
        self.budget = budget  # most entries timed per second
        self.durations = Histogram(DURATION_BUCKETS)  # handler runs (perf_counter)
        self.latencies = Histogram(LATENCY_BUCKETS)  # entry age at handler start (wall clock)
        self.every = 1  # a slot times one entry in this many (set by finish())
        self.timed = 0  # entries timed in all (the histograms count more: their weights)
        self._window_start = time.perf_counter()  # the rate's window
        self._window_timed = 0  # entries timed in the window ...
        self._window_entries = 0  # ... and the entries they stood for

    def start(self, raw_id: bytes, weight: int) -> float:
        """Count the entry's age now (``weight`` times); return its handler's start time.

        The age is the wall clock minus the id's millisecond timestamp (0 when the
        worker's clock is behind the server's); the start time is ``perf_counter()``.
        """
        age = time.time() - int(raw_id.partition(b"-")[0]) * 0.001
        self.latencies.observe(age if age > 0.0 else 0.0, weight)
        return time.perf_counter()

    def finish(self, began: float, weight: int) -> int:
        """Count the duration since ``began`` ``weight`` times; return the next interval."""
        now = time.perf_counter()
        self.durations.observe(now - began, weight)
        self.timed += 1
        self._window_timed += 1
        self._window_entries += weight
        elapsed = now - self._window_start
        if elapsed > 0.0 and (self._window_timed >= self._WINDOW_TIMED
                              or elapsed >= self._WINDOW_SECONDS):
            # entries per second over the window / the timed entries allowed per second
            # (rounded up, less a hair so that exactly 10 x the budget makes 10, not 11)
            rate = self._window_entries / elapsed
            self.every = max(1, math.ceil(rate / self.budget - 1e-6))
            self._window_start = now
            self._window_timed = self._window_entries = 0
        return self.every


class Counters:
    """Mutable counters of one handler's consumer (written by the runtime only)."""

    __slots__ = (
        "dead_lettered", "failed", "handled", "high_water", "maintenance_passes", "read_passes",
        "reads", "reclaim_passes", "reclaimed", "retried", "timing", "trimmed",
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
        # Only when metrics are exported (``histograms``): the slots time a sample of entries.
        self.timing = Timing() if histograms else None


#: The plain integer counters of :class:`Counters` (copied into every snapshot).
_COUNTS = tuple(name for name in Counters.__slots__ if name != "timing")


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
    timed: int = 0  # entries timed for the histograms (their samples; 0 while they are off)

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
        timing = counters.timing
        return cls(handler=handler, group=group, streams=streams, concurrency=concurrency,
                   in_flight=in_flight, running=running, reserved=reserved,
                   durations=timing.durations.snapshot() if timing is not None else None,
                   latencies=timing.latencies.snapshot() if timing is not None else None,
                   timed=timing.timed if timing is not None else 0, **values)


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
