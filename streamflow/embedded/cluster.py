"""``LocalCluster``: a private Redis Cluster (default 3 masters + 3 replicas) on loopback ports.

For tests and benchmarks of cluster support. Each node is a :class:`~.process.ServerProcess`
(free port, own temp dir, stopped by PID, stopped at exit by its registry) started with
``cluster-enabled yes`` and its own ``cluster-config-file``; the cluster is built from Python
with redis-py's sync client, no redis-cli:

1. every node gets a distinct config epoch (``CLUSTER SET-CONFIG-EPOCH``: no epoch
   collisions to resolve), the masters their share of the 16384 slots
   (``CLUSTER ADDSLOTSRANGE``, ``ADDSLOTS`` before Redis 7);
2. every pair of nodes is introduced with ``CLUSTER MEET`` (no waiting for gossip);
3. each replica ``CLUSTER REPLICATE``\\ s its master once it knows it;
4. the cluster is polled until :func:`.cluster_view.problems` finds nothing: every node
   ``cluster_state:ok``, the same full slot map everywhere, every replica's link up.

:meth:`LocalCluster.kill` / :meth:`~LocalCluster.restart` / :meth:`~LocalCluster.wait_failover`
drive failovers; roles are always asked of the servers, since a failover changes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar

import redis
import structlog

from .binaries import find_server_binary, version_info
from .cluster_node import ClusterNode, Role, start_node
from .cluster_view import SLOTS, NodeReport, parse_nodes, problems, slot_map, split_slots
from .probe import HOST

__all__ = ["DEFAULT_NODE_TIMEOUT_MS", "ClusterNode", "LocalCluster"]

log = structlog.get_logger("streamflow.embedded")

_T = TypeVar("_T")

#: Default cluster-node-timeout. A node is suspected (PFAIL) after this long without a pong
#: and failed over after that plus ~1 s of election: 2 s gives a failover in ~3-4 s, and a
#: server must be starved of CPU for 2 s before a spurious failover, which a loaded 2-core
#: machine does not do (1 s would fail over faster but sits close to real scheduling stalls).
DEFAULT_NODE_TIMEOUT_MS = 2000
_POLL = 0.02  # seconds between two looks at the cluster while waiting


class _NotReady(Exception):
    """One look found the cluster not ready; ``found`` says why."""

    def __init__(self, found: list[str]) -> None:
        super().__init__("; ".join(found))
        self.found = found


def _poll(deadline: float, attempt: Callable[[], _T | None], what: str) -> _T:
    """Call ``attempt`` until it returns non-None; TimeoutError saying ``what`` and why not."""
    found: Sequence[str] = ()
    while True:
        try:
            result = attempt()
        except _NotReady as exc:
            found, result = exc.found, None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            found, result = [str(exc)], None
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} in time: {'; '.join(found) or 'still waiting'}")
        time.sleep(_POLL)


class LocalCluster:
    """A private Redis Cluster on loopback: ``masters`` masters with ``replicas`` replicas each.

    ``binary`` None means :func:`find_server_binary` preferring redis-server (Redis or Valkey
    7+). ``node_timeout_ms`` is every node's ``cluster-node-timeout`` (see
    :data:`DEFAULT_NODE_TIMEOUT_MS`). Use as a context manager or call :meth:`start` and
    :meth:`stop`; every node's process is also stopped at interpreter exit.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        masters: int = 3,
        replicas: int = 1,
        name: str = "streamflow-cluster",
        node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS,
    ) -> None:
        for param, value, least in (("masters", masters, 1), ("replicas", replicas, 0),
                                    ("node_timeout_ms", node_timeout_ms, 100)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{param} must be an integer >= {least}, not {value!r}")
        self.binary: str = binary if binary is not None else find_server_binary("redis")
        self.masters_count = masters  # masters the cluster is built with
        self.replicas_per_master = replicas  # replicas each master starts with
        self.name = name  # prefix of the nodes' temp dirs
        self.node_timeout_ms = node_timeout_ms
        self._nodes: list[ClusterNode] = []  # masters first, then replicas, in start order
        self._master_of: dict[str, str | None] = {}  # node id -> master id, last ready look
        self._replicas_at_kill: dict[str, list[str]] = {}  # killed master id -> its replicas

    # ----------------------------------------------------------------- properties

    @property
    def nodes(self) -> list[ClusterNode]:
        """Every node, in start order (the first ``masters`` began as masters)."""
        return list(self._nodes)

    @property
    def kind(self) -> str:
        """``"redis"`` or ``"valkey"``, from the binary's ``--version``."""
        return version_info(self.binary)[0]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:<port>`` of the first live master."""
        return f"redis+cluster://{HOST}:{self._live_master().port}"

    @property
    def client_url(self) -> str:
        """``redis://127.0.0.1:<port>`` of the first live master, for redis-py's RedisCluster."""
        return self._live_master().url

    def masters(self) -> list[ClusterNode]:
        """The live nodes that are masters now (asked of each server)."""
        return [node for node in self._nodes if node.is_running() and node.role == "master"]

    def replicas(self) -> list[ClusterNode]:
        """The live nodes that are replicas now (asked of each server)."""
        return [node for node in self._nodes if node.is_running() and node.role == "replica"]

    def node(self, node_id: str) -> ClusterNode:
        """The node with this id; KeyError if there is none."""
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node with id {node_id!r} in {self!r}")

    def master_of(self, replica: ClusterNode) -> ClusterNode | None:
        """The node ``replica`` replicates (its own view), or None for a master."""
        master_id = replica.master_id
        return self.node(master_id) if master_id is not None else None

    def master_of_slot(self, slot: int) -> ClusterNode:
        """The node serving ``slot`` according to the first live master's slot map."""
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < SLOTS:
            raise ValueError(f"slot must be an integer in 0..{SLOTS - 1}, not {slot!r}")
        view = parse_nodes(self._live_master().command("CLUSTER", "NODES"))
        for first, last, owner in slot_map(view):
            if first <= slot <= last:
                return self.node(owner)
        raise LookupError(f"slot {slot} has no owner in {self!r}")

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start every node, build the cluster and wait until it is ready; return ``self``.

        Raises TimeoutError naming what is not ready after ``timeout`` seconds (every node
        is stopped then), RuntimeError when a node cannot start.
        """
        if self._nodes:
            raise RuntimeError(f"{self!r} is already started")
        began = time.monotonic()
        deadline = began + timeout
        try:
            self._start_nodes(timeout)
            self._join(deadline)
            self._wait_ready(deadline, "come up")
        except BaseException:
            self.stop()
            raise
        log.info("cluster_started", kind=self.kind, ports=[n.port for n in self._nodes],
                 masters=self.masters_count, replicas=self.replicas_per_master,
                 seconds=round(time.monotonic() - began, 3))
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node by PID and remove its temp dir. Idempotent."""
        for node in reversed(self._nodes):  # replicas first: no master waits for one
            node.close()
            node.server.stop(timeout)
        self._nodes = []
        self._master_of = {}
        self._replicas_at_kill = {}

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL ``node`` now; its directory (and nodes.conf) is kept for :meth:`restart`."""
        self._own(node).close()
        if node.is_running():  # a second kill must not forget the replicas of the first
            self._replicas_at_kill[node.node_id] = [
                node_id for node_id, master in self._master_of.items() if master == node.node_id]
        node.server.kill()
        log.info("cluster_node_killed", port=node.port, node_id=node.node_id)

    def restart(self, node: ClusterNode, timeout: float = 30.0) -> None:
        """Start ``node`` again (same port, same nodes.conf) and wait until it has rejoined.

        A killed master whose slots were failed over comes back as a replica of the
        promoted node. Raises TimeoutError if the cluster is not ready within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        self._own(node).close()
        node.server.restart(timeout)
        self._wait_ready(deadline, f"take back :{node.port}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until the live nodes form a ready cluster (see :func:`.cluster_view.problems`)."""
        self._wait_ready(time.monotonic() + timeout, "become ready")

    def wait_failover(self, old_master: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """Wait until a replica of ``old_master`` was promoted and the cluster is ready again.

        Returns the promoted node. The candidates are ``old_master``'s replicas when
        :meth:`kill` killed it (as of the last time the cluster was ready), else as of the
        last ready look; ValueError if it had none.
        """
        old_id = self._own(old_master).node_id
        candidate_ids = self._replicas_at_kill.get(old_id) or [
            node_id for node_id, master in self._master_of.items() if master == old_id]
        candidates = [self.node(node_id) for node_id in candidate_ids]
        if not candidates:
            raise ValueError(f"{old_master!r} had no replica to promote")
        began = time.monotonic()

        def promoted() -> ClusterNode | None:
            return next((n for n in candidates
                         if self._master_of.get(n.node_id, "") is None), None)

        node = self._wait(began + timeout, promoted, f"promote a replica of :{old_master.port}")
        log.info("cluster_failover", old_master=old_master.port, new_master=node.port,
                 seconds=round(time.monotonic() - began, 3))
        return node

    def flushall(self, timeout: float = 10.0) -> None:
        """FLUSHALL every live master and wait (``WAIT``) until its replicas are empty too."""
        for master in self.masters():
            client = master.client()
            replicas = int(client.info("replication").get("connected_slaves", 0))
            pipe = client.pipeline(transaction=False)  # WAIT counts this connection's writes
            pipe.flushall()
            pipe.wait(replicas, int(timeout * 1000))
            acked = pipe.execute()[1]
            if acked < replicas:
                raise TimeoutError(f"only {acked} of {replicas} replicas of :{master.port} "
                                   f"acknowledged the FLUSHALL within {timeout:g}s")

    # ----------------------------------------------------------------- building

    def _start_nodes(self, timeout: float) -> None:
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # relative to the server's own dir
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--repl-diskless-sync-delay", "0",  # a replica's first sync starts at once
        ]
        taken: set[int] = set()
        for index in range(self.masters_count * (1 + self.replicas_per_master)):
            server = start_node(self.binary, taken=taken, args=args, name=self.name,
                                timeout=timeout)
            taken.add(server.port)
            role: Role = "master" if index < self.masters_count else "replica"
            self._nodes.append(ClusterNode.started(server, role))

    def _join(self, deadline: float) -> None:
        masters = self._nodes[: self.masters_count]
        addslotsrange = version_info(self.binary)[1] >= (7,)
        for epoch, node in enumerate(self._nodes, start=1):  # distinct: no collisions to settle
            node.command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for node, (first, last) in zip(masters, split_slots(self.masters_count), strict=True):
            if addslotsrange:
                node.command("CLUSTER", "ADDSLOTSRANGE", first, last)
            else:
                node.command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for i, node in enumerate(self._nodes):  # every pair met: no waiting for gossip
            for other in self._nodes[i + 1:]:
                node.command("CLUSTER", "MEET", HOST, other.port)
        for index, replica in enumerate(self._nodes[self.masters_count:]):
            master = masters[index % self.masters_count]

            def knows(replica: ClusterNode = replica, master: ClusterNode = master) -> bool | None:
                entry = parse_nodes(replica.command("CLUSTER", "NODES")).get(master.node_id)
                return True if entry is not None and entry.healthy else None

            _poll(deadline, knows, f":{replica.port} did not learn of :{master.port}")
            replica.command("CLUSTER", "REPLICATE", master.node_id)

    # ----------------------------------------------------------------- waiting

    def _wait_ready(self, deadline: float, what: str) -> None:
        self._wait(deadline, lambda: True, what)

    def _wait(self, deadline: float, done: Callable[[], _T | None], what: str) -> _T:
        """Poll until the live nodes are a ready cluster and ``done()`` (then) is not None."""

        def ready() -> _T | None:
            reports: list[NodeReport] = []
            found: list[str] = []
            for node in self._nodes:
                if node.is_running():
                    try:
                        reports.append(node.report())
                    except redis.RedisError as exc:  # down, or e.g. LOADING after a restart
                        found.append(f"node :{node.port} does not answer ({exc})")
            found += problems(reports)
            if found:
                raise _NotReady(found)
            self._master_of.update(
                (r.node_id, r.me.master_id) for r in reports if r.me is not None)
            return done()

        return _poll(deadline, ready, f"{self!r} did not {what}")

    def _own(self, node: ClusterNode) -> ClusterNode:
        if not any(node is mine for mine in self._nodes):
            raise ValueError(f"{node!r} is not a node of {self!r}")
        return node

    def _live_master(self) -> ClusterNode:
        for node in self._nodes:
            try:
                if node.is_running() and node.role == "master":
                    return node
            except (redis.ConnectionError, redis.TimeoutError):
                continue
        raise RuntimeError(f"{self!r} has no live master (not started, stopped or all killed)")

    # ----------------------------------------------------------------- protocol

    def __enter__(self) -> LocalCluster:
        if not self._nodes:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ",".join(str(node.port) for node in self._nodes) or "not started"
        return (f"<LocalCluster {self.masters_count}x(1+{self.replicas_per_master}) "
                f"ports={ports} binary={self.binary!r}>")

