"""Testing streamflow apps: a pytest plugin with private servers, and helpers to run handlers.

The pytest plugin is registered through the ``pytest11`` entry point of the streamflow
distribution (or ``pytest_plugins = ["streamflow.testing"]``). Its fixtures, defined only
when pytest is installed: ``redis_server``, ``valkey_server``, ``any_server`` (session
scope, each a :class:`~streamflow.embedded.ServerProcess` on a free loopback port),
``redis_url`` and ``any_redis_url`` (a URL, the server flushed before each test;
``any_redis_url`` runs the test on Redis 7 and on Valkey 9); Redis Clusters of 3 masters +
3 replicas (:class:`~streamflow.embedded.LocalCluster`): ``redis_cluster``,
``valkey_cluster``, ``any_cluster`` (session scope), ``cluster_url`` (every master flushed
before each test, on both servers) and ``make_cluster`` (a factory of fresh clusters for
tests that kill nodes, on both servers); and ``anyio_backend``.

Helpers (no pytest needed), for an app's own tests and for streamflow's:

Running
    :func:`run_until` (app, url, finished=N / idle=True) -> final ``WorkerStats``;
    :func:`running_worker` (``async with``, yields the worker); :func:`serving` (run
    given workers); :func:`make_worker`, :func:`fast_settings`, :data:`FAST_SETTINGS`.
Waiting
    :func:`wait_until` (poll a predicate; :func:`wait_until_blocking` in sync code),
    :func:`wait_finished`, :func:`wait_idle`, :func:`is_idle`, :func:`passes` (N more
    read / reclaim / maintenance passes); a timeout raises :class:`WaitTimeout`.
Messages
    :func:`make_message` to call a handler directly.

Counts come from the public snapshot :meth:`Worker.stats() <streamflow.Worker.stats>`
(``.handled``, ``.failed``, ``.retried``, ``.dead_lettered``, ``.finished``,
``.handler(name)``), which every helper here returns.
"""

from __future__ import annotations

import importlib.util

from .conditions import GroupState, group_states, is_idle, passes, wait_finished, wait_idle
from .messages import make_message
from .waiting import WaitTimeout, wait_until, wait_until_blocking
from .workers import (
    FAST_SETTINGS,
    fast_settings,
    make_worker,
    run_until,
    running_worker,
    serving,
)

__all__ = [
    "FAST_SETTINGS",
    "GroupState",
    "WaitTimeout",
    "fast_settings",
    "group_states",
    "is_idle",
    "make_message",
    "make_worker",
    "passes",
    "run_until",
    "running_worker",
    "serving",
    "wait_finished",
    "wait_idle",
    "wait_until",
    "wait_until_blocking",
]

if importlib.util.find_spec("pytest") is not None:  # the fixtures need pytest, the rest not
    from .fixtures import (
        ClusterFactory,
        any_cluster,
        any_redis_url,
        any_server,
        anyio_backend,
        cluster_url,
        make_cluster,
        redis_cluster,
        redis_server,
        redis_url,
        valkey_cluster,
        valkey_server,
    )

    __all__ += [
        "ClusterFactory",
        "any_cluster",
        "any_redis_url",
        "any_server",
        "anyio_backend",
        "cluster_url",
        "make_cluster",
        "redis_cluster",
        "redis_server",
        "redis_url",
        "valkey_cluster",
        "valkey_server",
    ]
