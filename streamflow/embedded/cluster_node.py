"""One node of a :class:`~.cluster.LocalCluster`: its process, its id, a client, one look at it.

:func:`start_node` starts a :class:`~.process.ServerProcess` in cluster mode on a port that
suits a cluster node (``<= 55535``, its bus port ``port + 10000`` free too);
:class:`ClusterNode` wraps it with the node id and a sync redis-py client, tells the node's
role as the server says it now, and takes one :class:`~.cluster_view.NodeReport` of it
(``CLUSTER INFO``, ``CLUSTER NODES``, ``INFO replication`` in one round trip).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Literal

import redis
from redis.client import Pipeline

from .cluster_view import NodeReport, parse_nodes
from .probe import HOST, PortInUse, free_port
from .process import ServerProcess

__all__ = ["BUS_PORT_OFFSET", "ClusterNode", "Role", "start_node"]

Role = Literal["master", "replica"]

#: A cluster node's bus port is its client port plus this.
BUS_PORT_OFFSET = 10000
_MAX_PORT = 65535 - BUS_PORT_OFFSET
_NODE_ATTEMPTS = 5  # ports tried per node when another process grabs one first


def _bus_port_free(port: int) -> bool:
    """True when 127.0.0.1:port + 10000 (the node's cluster bus port) can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port + BUS_PORT_OFFSET))
        except OSError:
            return False
    return True


def _node_port(taken: set[int]) -> int:
    """A free port <= 55535 whose bus port is free too, clear of the ports in ``taken``."""
    for _ in range(200):
        port = free_port(_MAX_PORT)
        clashes = {port, port + BUS_PORT_OFFSET, port - BUS_PORT_OFFSET} & taken
        if not clashes and _bus_port_free(port):
            return port
    raise RuntimeError(f"could not find a free port <= {_MAX_PORT} whose bus port is free")


def start_node(
    binary: str, *, taken: set[int], args: Sequence[str], name: str, timeout: float
) -> ServerProcess:
    """Start a server with ``args`` on a cluster-suitable port not in ``taken``; return it.

    Picks another port when the chosen one (or its bus port) is grabbed before the server
    binds it. Raises RuntimeError when the server cannot start.
    """
    for attempt in range(_NODE_ATTEMPTS):
        server = ServerProcess(binary, port=_node_port(taken), args=args, name=name)
        try:
            return server.start(timeout)
        except PortInUse:
            if attempt == _NODE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _call(target: redis.Redis | Pipeline, *args: str | int) -> Any:
    """``execute_command`` of redis-py's sync client, which has no type annotations."""
    return target.execute_command(*args)  # type: ignore[no-untyped-call]


class ClusterNode:
    """One node of a :class:`~.cluster.LocalCluster`: its :class:`ServerProcess`, id and a client."""

    def __init__(self, server: ServerProcess, node_id: str, role: Role) -> None:
        self.server = server  # the process; restarted on the same port and directory
        self.node_id = node_id  # CLUSTER MYID; kept across restarts (it is in nodes.conf)
        self._role: Role = role  # the last role the server told us, for a node that is down
        self._client: redis.Redis | None = None  # made on first use, closed by close()

    @classmethod
    def started(cls, server: ServerProcess, role: Role) -> ClusterNode:
        """The node of a server that just started (its id asked with ``CLUSTER MYID``)."""
        node = cls(server, "", role)
        node.node_id = str(node.command("CLUSTER", "MYID"))
        return node

    @property
    def port(self) -> int:
        """The node's client port (its cluster bus port is ``port + 10000``)."""
        return self.server.port

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs, else None."""
        return self.server.pid

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>``: this one node, for a plain (non-cluster) client."""
        return f"redis://{HOST}:{self.port}"

    @property
    def role(self) -> Role:
        """``"master"`` or ``"replica"`` as the server says now (``ROLE``).

        A node that is down keeps the last role it reported.
        """
        if self.is_running():
            reply = self.command("ROLE")
            self._role = "master" if reply[0] == "master" else "replica"
        return self._role

    @property
    def master_id(self) -> str | None:
        """The id of the node this one replicates (its own ``CLUSTER NODES``), None for a master."""
        me = parse_nodes(self.command("CLUSTER", "NODES")).get(self.node_id)
        return me.master_id if me is not None else None

    def is_running(self) -> bool:
        """True while the node's server process is alive."""
        return self.server.is_running()

    def client(self) -> redis.Redis:
        """A sync redis-py client on this node alone (text replies, 5 s timeouts)."""
        if self._client is None:
            self._client = redis.Redis(host=HOST, port=self.port, decode_responses=True,
                                       socket_timeout=5, socket_connect_timeout=5)
        return self._client

    def command(self, *args: str | int) -> Any:
        """Send one command to this node and return its reply."""
        return _call(self.client(), *args)

    def report(self) -> NodeReport:
        """One look at the node: its cluster state, its view of the cluster, its master link.

        Raises redis-py's errors when the node does not answer (or answers e.g. LOADING).
        """
        pipe = self.client().pipeline(transaction=False)
        _call(pipe, "CLUSTER", "INFO")
        _call(pipe, "CLUSTER", "NODES")
        _call(pipe, "INFO", "replication")
        info, nodes, replication = pipe.execute()
        state = next((line.partition(":")[2].strip() for line in info.splitlines()
                      if line.startswith("cluster_state:")), "unknown")
        link = replication.get("master_link_status")
        report = NodeReport(node_id=self.node_id, port=self.port, state=state,
                            view=parse_nodes(nodes),
                            link_up=None if link is None else link == "up")
        if report.me is not None:
            self._role = "master" if report.me.is_master else "replica"
        return report

    def close(self) -> None:
        """Close the client's connections (the server is left alone)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __repr__(self) -> str:
        return f"<ClusterNode :{self.port} pid={self.pid} id={self.node_id[:8]} {self._role}>"
