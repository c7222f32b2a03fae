"""Exporter: ``/metrics``, ``/healthz`` and ``/readyz`` of a worker process, on its event loop.

Started by the worker when ``metrics_port`` is set, as a task of the worker's task group
(so it is cancelled, and its port closed, when the worker has stopped)::

    Exporter.run
    └── task group
        ├── HttpServer.serve     the listener; one short task per connection
        └── GroupPoller.run      every metrics_interval: groups, streams, job queues

* ``/metrics``: the Prometheus text format (``text/plain; version=0.0.4``), built from a
  :meth:`Worker.stats() <streamflow.Worker.stats>` snapshot and the poller's last poll
  when scraped (:mod:`.collector`), plus prometheus-client's ``process_*`` metrics;
* ``/healthz``: 200 ``ok``: the event loop answered. There is no 503: a loop blocked by a
  handler answers nothing, and the probe's timeout reports the failure (a thread-based
  server could answer 503 from a stale heartbeat, but then ``/metrics`` would read the
  runtime's counters from another thread, mid-update). It keeps answering while the
  worker drains (a liveness probe must not kill a worker finishing its entries);
* ``/readyz``: 200 ``ready`` when the worker has started its consumers, is not draining,
  its last poll of Redis succeeded within ``3 x metrics_interval + 1`` s and every group
  it consumes exists; else 503 with the reason (``draining``, ``starting``,
  ``redis unreachable: ...``, ``group missing: ...``). Both read state only: cheap to
  probe every second.

Process ``i`` of a supervisor's children listens on ``metrics_port + i``
(:func:`~.options.metrics_port_for`): prometheus-client's multiprocess mode (shared files
of counters) is not used, each child serves its own counters on its own port and
Prometheus scrapes each as a target.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import anyio
import anyio.abc
import structlog

from ..config import Settings
from ..spec import HandlerSpec
from ..stats import WorkerStats
from .groups import GroupPoller, targets_of
from .options import metrics_port_for, require_prometheus_client
from .server import HttpServer, Response

__all__ = ["CONTENT_TYPE", "Exporter", "MetricsSource"]

log = structlog.get_logger("streamflow.metrics")

#: The Prometheus text exposition format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    """What the exporter reads of a worker (:class:`~streamflow.Worker` has it all)."""

    name: str  # the consumer name
    ready: anyio.Event  # set once every consumer created its groups

    @property
    def stopping(self) -> bool:
        """True once a shutdown began."""

    def stats(self) -> WorkerStats:
        """A snapshot of every counter."""


@functools.cache
def _version() -> str:
    """streamflow's version (read from its metadata at the first scrape, not at start-up)."""
    try:
        return version("streamflow-redis")
    except PackageNotFoundError:
        return "unknown"


class Exporter:
    """Serves one worker's metrics and health checks; see the module docstring."""

    def __init__(self, source: MetricsSource, client: Any, specs: Sequence[HandlerSpec],
                 settings: Settings, *, loop_watch: Any = None) -> None:
        require_prometheus_client()
        from prometheus_client import ProcessCollector, generate_latest

        from .collector import WorkerCollector, build_registry

        self.source = source
        self.settings = settings
        self.host = settings.metrics_host
        self.port = metrics_port_for(settings)  # asked for (0: any free port)
        self.poller = GroupPoller(client, targets_of(specs), interval=settings.metrics_interval,
                                  log=log)
        self.collector = WorkerCollector(
            source.stats, self.poller, consumer=lambda: source.name, version=_version,
            ready=lambda: self.readiness() is None,
            loop_blocked=lambda: int(getattr(loop_watch, "blocked", 0)))
        self.registry = build_registry(self.collector)
        ProcessCollector(registry=self.registry)
        self._generate = generate_latest
        self.server = HttpServer({"/metrics": self._metrics, "/healthz": self._healthz,
                                  "/readyz": self._readyz}, log=log)

    @property
    def bound_port(self) -> int | None:
        """The port listened on (the one the OS chose for port 0), once listening."""
        return self.server.port

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Listen (a port that cannot be bound raises ConfigError at once), poll, serve."""
        async with anyio.create_task_group() as tg:
            port = await tg.start(self.server.serve, self.host, self.port)
            tg.start_soon(self.poller.run)
            log.info("metrics_listening", host=self.host, port=port,
                     endpoints=["/metrics", "/healthz", "/readyz"])
            task_status.started()

    # -- the routes -----------------------------------------------------------------------

    def readiness(self) -> str | None:
        """Why the worker is not ready (the body of a 503), or None when it is."""
        if self.source.stopping:
            return "draining"
        if not self.source.ready.is_set():
            return "starting: creating groups"
        return self.poller.problem(time.monotonic())

    def _metrics(self) -> Response:
        return Response(200, self._generate(self.registry), CONTENT_TYPE)

    def _healthz(self) -> Response:
        return Response(200, b"ok\n")

    def _readyz(self) -> Response:
        problem = self.readiness()
        if problem is None:
            return Response(200, b"ready\n")
        return Response(503, f"not ready: {problem}\n".encode())
