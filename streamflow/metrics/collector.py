"""WorkerCollector: the worker's snapshots as Prometheus metric families, built when scraped.

Nothing here runs per message: a scrape calls :meth:`WorkerCollector.collect`, which takes
one :meth:`Worker.stats() <streamflow.Worker.stats>` snapshot (counters, gauges, the
slots' histogram buckets) and the last poll of :class:`~.groups.GroupPoller`, and builds
``prometheus_client.core`` families from them for a private ``CollectorRegistry``. No
prometheus_client metric object is ever updated by the runtime.

:data:`METRICS` names every family (type, labels, help): ``docs/operations.md`` documents
each, and the tests check that a scrape shows nothing else.

Handler metrics are labelled ``stream``, ``group``, ``handler``; the counts are the
handler's (a handler reading several streams has ``stream`` = the streams joined by
``,``). Group and job gauges are read from Redis, so every worker of a group reports the
same values: aggregate them with ``max by (stream, group)``, not ``sum``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from ..stats import TIMED_PER_SECOND, HandlerStats, HistogramSnapshot, WorkerStats
from .groups import GroupPoller

__all__ = ["METRICS", "MetricDef", "WorkerCollector", "build_registry"]


@dataclass(frozen=True)
class MetricDef:
    """One metric family: its name as exposed, type, labels and help text."""

    name: str
    kind: str  # counter, gauge, histogram, info
    labels: tuple[str, ...]
    help: str


_H = ("stream", "group", "handler")
_G = ("stream", "group")

#: Handler counters: ``Counters`` attribute -> family.
_COUNTERS = {
    "handled": MetricDef("streamflow_messages_handled_total", "counter", _H,
                         "Handlers that returned (their entries are acked)."),
    "failed": MetricDef("streamflow_messages_failed_total", "counter", _H,
                        "Handler failures: exceptions and timeouts."),
    "retried": MetricDef("streamflow_messages_retried_total", "counter", _H,
                         "Failed entries parked for a retry with backoff."),
    "dead_lettered": MetricDef("streamflow_messages_dead_lettered_total", "counter", _H,
                               "Entries moved to the dead-letter stream."),
    "reclaimed": MetricDef("streamflow_messages_reclaimed_total", "counter", _H,
                           "Entries claimed back: due retries, dead consumers' entries, "
                           "own pending entries at start."),
    "trimmed": MetricDef("streamflow_messages_trimmed_total", "counter", _H,
                         "Pending entries found deleted from their stream (acked)."),
}
#: Handler gauges: ``HandlerStats`` attribute -> family.
_LOAD = {
    "concurrency": MetricDef("streamflow_handler_slots", "gauge", _H,
                             "Handler slots: most entries in flight at once (concurrency)."),
    "in_flight": MetricDef("streamflow_handler_in_flight", "gauge", _H,
                           "Entries taken from Redis and not finished: queued plus running."),
    "running": MetricDef("streamflow_handler_running", "gauge", _H, "Handlers running now."),
}
_DURATION = MetricDef("streamflow_handler_duration_seconds", "histogram", _H,
                      "How long handlers ran (returned, raised or timed out); above "
                      f"{TIMED_PER_SECOND:,} entries a second from a weighted sample of them.")
_LATENCY = MetricDef("streamflow_message_latency_seconds", "histogram", _H,
                     "Age of an entry when its handler started: now minus the entry id's time "
                     "(every attempt; a retry's includes its backoff); sampled like the "
                     "duration.")
_TIMED = MetricDef("streamflow_handler_timed_total", "counter", _H,
                   "Entries timed for the duration and latency histograms: every one below "
                   f"{TIMED_PER_SECOND:,} a second, a sample above (each counted there with "
                   "its weight).")
_WORKER = {
    "acked": MetricDef("streamflow_acks_total", "counter", (), "Entry ids Redis confirmed acked."),
    "unacked": MetricDef("streamflow_acks_buffered", "gauge", (),
                         "Handled entry ids buffered, not yet sent to Redis."),
    "blocked": MetricDef("streamflow_event_loop_blocked_total", "counter", (),
                         "Times a handler blocked the event loop for more than 1 s."),
    "info": MetricDef("streamflow_worker_info", "info", ("consumer", "version"),
                      "The worker's consumer name and streamflow's version (value 1)."),
    "ready": MetricDef("streamflow_worker_ready", "gauge", (),
                       "1 when /readyz answers 200, else 0."),
    "redis_up": MetricDef("streamflow_redis_up", "gauge", (),
                          "1 when the last poll of the groups reached Redis, else 0."),
}
#: Group gauges: ``GroupState`` attribute -> family.
_GROUPS = {
    "lag": MetricDef("streamflow_group_lag", "gauge", _G,
                     "Entries not yet delivered to the group (absent while Redis cannot tell)."),
    "pending": MetricDef("streamflow_group_pending", "gauge", _G,
                         "Entries delivered to the group and not acked (retries included)."),
    "retrying": MetricDef("streamflow_group_retrying", "gauge", _G,
                          "Pending entries parked for a retry."),
    "oldest_pending_age": MetricDef(
        "streamflow_group_oldest_pending_age_seconds", "gauge", _G,
        "Now minus the id time of the group's oldest pending entry (0: none pending)."),
    "oldest_undelivered_age": MetricDef(
        "streamflow_group_oldest_undelivered_age_seconds", "gauge", _G,
        "Now minus the id time of the first entry the group has not read (0: none)."),
    "consumers": MetricDef("streamflow_group_consumers", "gauge", _G,
                           "Consumers of the group holding a live name lease."),
}
_STREAM_LENGTH = MetricDef("streamflow_stream_length", "gauge", ("stream",), "Entries in the stream.")
_DEAD_LETTERS = MetricDef("streamflow_dead_letter_stream_length", "gauge",
                          ("stream", "dead_letter"), "Records in the stream's dead-letter stream.")
_JOBS = MetricDef("streamflow_jobs", "gauge", ("queue", "status"),
                  "Jobs of a queue per status: queued, scheduled, running, retrying, failed.")
_JOB_STATUSES = ("queued", "scheduled", "running", "retrying", "failed")
_JOBS_SUCCEEDED = MetricDef("streamflow_jobs_succeeded_total", "counter", ("queue",),
                            "Jobs of a queue that finished with a result, since the queue "
                            "began (kept in Redis, so every worker reports the same total).")

#: Every family the exporter serves.
METRICS: tuple[MetricDef, ...] = (
    *_COUNTERS.values(), *_LOAD.values(), _DURATION, _LATENCY, _TIMED, *_WORKER.values(),
    *_GROUPS.values(), _STREAM_LENGTH, _DEAD_LETTERS, _JOBS, _JOBS_SUCCEEDED,
)


def _family(d: MetricDef) -> Any:
    if d.kind == "counter":
        return CounterMetricFamily(d.name, d.help, labels=d.labels)
    if d.kind == "histogram":
        return HistogramMetricFamily(d.name, d.help, labels=d.labels)
    return GaugeMetricFamily(d.name, d.help, labels=d.labels)


def _buckets(h: HistogramSnapshot) -> list[tuple[str, float]]:
    return [("+Inf" if b == float("inf") else repr(b), n) for b, n in h.cumulative()]


class WorkerCollector:
    """A custom collector over a worker (``stats``) and its :class:`GroupPoller`."""

    def __init__(self, stats: Callable[[], WorkerStats], poller: GroupPoller, *,
                 consumer: Callable[[], str], version: Callable[[], str], ready: Callable[[], bool],
                 loop_blocked: Callable[[], int]) -> None:
        self.stats = stats
        self.poller = poller
        self.consumer = consumer
        self.version = version
        self.ready = ready
        self.loop_blocked = loop_blocked

    def collect(self) -> Iterator[Metric]:
        """Every family, from one snapshot taken now and the last poll."""
        stats = self.stats()
        yield from self._handlers(stats.handlers)
        fams = {key: _family(d) for key, d in _WORKER.items() if d.kind != "info"}
        fams["acked"].add_metric([], stats.acked)
        fams["unacked"].add_metric([], stats.unacked)
        fams["blocked"].add_metric([], self.loop_blocked())
        fams["ready"].add_metric([], 1 if self.ready() else 0)
        fams["redis_up"].add_metric([], 1 if self.poller.reachable else 0)
        yield from fams.values()
        info = _WORKER["info"]
        yield InfoMetricFamily(info.name.removesuffix("_info"), info.help,
                               value={"consumer": self.consumer(), "version": self.version()})
        yield from self._groups()

    def _handlers(self, handlers: tuple[HandlerStats, ...]) -> Iterator[Metric]:
        counters = {key: _family(d) for key, d in _COUNTERS.items()}
        load = {key: _family(d) for key, d in _LOAD.items()}
        durations, latencies, timed = _family(_DURATION), _family(_LATENCY), _family(_TIMED)
        for h in handlers:
            labels = [",".join(h.streams), h.group, h.handler]
            for key, fam in counters.items():
                fam.add_metric(labels, getattr(h, key))
            for key, fam in load.items():
                fam.add_metric(labels, getattr(h, key))
            if h.durations is not None:
                durations.add_metric(labels, _buckets(h.durations), h.durations.sum)
            if h.latencies is not None:
                latencies.add_metric(labels, _buckets(h.latencies), h.latencies.sum)
                timed.add_metric(labels, h.timed)
        yield from counters.values()
        yield from load.values()
        yield durations
        yield latencies
        yield timed

    def _groups(self) -> Iterator[Metric]:
        """The last poll's gauges; none while Redis is unreachable (stale values would lie)."""
        poll = self.poller.last
        fams = {key: _family(d) for key, d in _GROUPS.items()}
        lengths, dead, jobs = _family(_STREAM_LENGTH), _family(_DEAD_LETTERS), _family(_JOBS)
        succeeded = _family(_JOBS_SUCCEEDED)
        if poll is not None and self.poller.error is None:
            for (stream, group), state in poll.groups.items():
                if not state.exists:
                    continue
                for key, fam in fams.items():
                    value = getattr(state, key)
                    if value is not None:
                        fam.add_metric([stream, group], value)
            for stream, n in poll.lengths.items():
                if n is not None:
                    lengths.add_metric([stream], n)
            for (stream, key), n in poll.dead_letters.items():
                if n is not None:
                    dead.add_metric([stream, key], n)
            for q in poll.queues:
                for status in _JOB_STATUSES:
                    value = getattr(q, status)
                    if value is not None:
                        jobs.add_metric([q.queue, status], value)
                if q.succeeded is not None:
                    succeeded.add_metric([q.queue], q.succeeded)
        yield from fams.values()
        yield lengths
        yield dead
        yield jobs
        yield succeeded


def build_registry(collector: WorkerCollector) -> CollectorRegistry:
    """A private registry holding only ``collector`` (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
