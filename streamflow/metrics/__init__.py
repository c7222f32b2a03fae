"""Prometheus metrics and health checks served by a worker process (``metrics_port``).

* :mod:`.options`: what must hold before the exporter starts (prometheus-client
  installed, the port of this process: ``metrics_port`` + its process index);
* :mod:`.server`: a small HTTP/1.1 server on the worker's event loop;
* :mod:`.groups`: :class:`~.groups.GroupPoller`, the groups' state read from Redis
  every ``metrics_interval`` (lag, pending, ages, consumers, dead letters, job counts);
* :mod:`.collector`: snapshots to Prometheus families, when scraped;
* :mod:`.exporter`: :class:`~.exporter.Exporter`, the routes and the task the worker owns.

Importing this package does not import prometheus-client (only :mod:`.collector` and
:mod:`.exporter` need it), so :func:`require_prometheus_client` can say what to install.
See ``docs/operations.md`` for every metric, the endpoints and alert rules.
"""

from .options import (
    PROCESS_INDEX_VAR,
    check_before_start,
    metrics_port_for,
    require_prometheus_client,
)

__all__ = ["PROCESS_INDEX_VAR", "check_before_start", "metrics_port_for", "require_prometheus_client"]
