"""Redis Cluster plumbing below the runtime: slots of keys, the node a key lives on, and
refreshing redis-py's view of the topology after a failover.

The runtime talks to a cluster through ``redis.asyncio.cluster.RedisCluster`` for every
command it sends one at a time (redis-py routes it by its key and follows MOVED/ASK), and
through :class:`~streamflow.rawpipe.RawPipe` for the hot path (reads with acks in one
write): a raw pipe takes a connection from the node that owns its key's slot, via
:func:`node_connection`, and calls :func:`refresh` when a reply says the slot moved.
"""

from __future__ import annotations

import binascii
import time
import weakref
from typing import Any

import anyio
import structlog
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import CrossSlotTransactionError, RedisClusterException, RedisError

from .errors import ConfigError
from .keys import hash_tag

__all__ = [
    "SLOTS", "StreamflowCluster", "check_same_slot", "initialized", "is_cluster", "key_slot",
    "node_connection", "node_name", "refresh",
]

log = structlog.get_logger("streamflow.cluster")

#: Hash slots of a Redis Cluster.
SLOTS = 16384

#: Least time between two topology refreshes of one client (seconds).
REFRESH_EVERY = 0.5


class _Refresh:
    """When a client's slot map was last re-read, and the lock that serialises re-reads."""

    def __init__(self) -> None:
        self.at = 0.0
        self.lock = anyio.Lock()


# client -> its refresh state (RedisCluster has __slots__: nothing can be stored on it)
_refreshes: weakref.WeakKeyDictionary[Any, _Refresh] = weakref.WeakKeyDictionary()


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key``: CRC16 (XMODEM) of its hash tag, modulo 16384."""
    text = key.decode() if isinstance(key, bytes) else key
    return binascii.crc_hqx(hash_tag(text).encode(), 0) % SLOTS


def is_cluster(client: Any) -> bool:
    """True for a ``RedisCluster`` client (it has a nodes manager, no connection pool)."""
    return hasattr(client, "nodes_manager")


def node_name(client: Any, key: str) -> str:
    """``host:port`` of the master serving ``key`` (for a single server: ``""``)."""
    if not is_cluster(client):
        return ""
    try:
        return str(client.get_node_from_key(key).name)
    except RedisClusterException as exc:  # the slot is not covered now (a failover)
        raise RedisConnectionError(f"no master serves {key!r} now: {exc}") from exc


async def initialized(client: Any) -> None:
    """Make sure a cluster client has read the slot map (it does so on its first command)."""
    if getattr(client, "_initialize", False):
        try:
            await client.initialize()
        except RedisClusterException as exc:
            raise RedisConnectionError(str(exc) or type(exc).__name__) from exc


async def node_connection(client: Any, key: str) -> tuple[Any, Any]:
    """``(node, connection)``: a connection of the master serving ``key``'s slot, taken
    from that node's free list (give it back with ``node.release(connection)``).

    Raises redis-py's ``ConnectionError`` when no master serves the slot now (a failover
    under way): a transient error, like a lost connection.
    """
    try:
        await initialized(client)
        node = client.get_node_from_key(key)
        return node, node.acquire_connection()
    except (RedisClusterException, RedisError) as exc:
        await refresh(client, f"no master for slot {key_slot(key)}")
        raise RedisConnectionError(
            f"no master serves slot {key_slot(key)} of {key!r} now: {exc}") from exc


async def refresh(client: Any, reason: str) -> None:
    """Re-read the slot map from the cluster (at most every :data:`REFRESH_EVERY` s).

    Called after a MOVED reply, a lost connection to a node or CLUSTERDOWN: the next
    :func:`node_connection` then goes to the slot's current master. A failed refresh
    (no node answers yet) is logged and left to the next caller.
    """
    state = _refreshes.get(client)
    if state is None:
        state = _refreshes[client] = _Refresh()
    async with state.lock:
        now = time.monotonic()
        if now - state.at < REFRESH_EVERY:
            return
        state.at = now
        try:
            await client.nodes_manager.initialize()
        except Exception as exc:
            log.warning("cluster_refresh_failed", reason=reason, error=str(exc) or type(exc).__name__)
        else:
            log.info("cluster_refreshed", reason=reason,
                     masters=len(client.get_primaries()))


class StreamflowCluster(RedisCluster):
    """``RedisCluster`` whose "no node reachable" and "slot not covered" errors (redis-py
    raises them as ``RedisClusterException``, outside its ``RedisError`` tree) are
    connection errors: during a failover they are as transient as a lost connection, and
    every retry loop of the runtime already rides those out."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise RedisConnectionError(str(exc) or type(exc).__name__) from exc

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            raise RedisClusterException("shard_hint is not supported by a cluster pipeline")
        return _Pipeline(self, transaction)  # type: ignore[abstract]


class _Pipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except RedisClusterException as exc:
            if isinstance(exc, CrossSlotTransactionError):
                raise
            raise RedisConnectionError(str(exc) or type(exc).__name__) from exc


def check_same_slot(stream: str, companions: dict[str, str]) -> None:
    """Raise :class:`ConfigError` unless every key of ``companions`` (what -> key) hashes
    to ``stream``'s slot: a script or multi-key command touching both would be refused
    (CROSSSLOT) on a cluster."""
    slot = key_slot(stream)
    for what, key in companions.items():
        if key_slot(key) != slot:
            hint = ("declare it partitioned (@app.handler(..., partitions=N) or "
                    "app.stream(name, partitions=N)) or give it a hash tag, e.g. "
                    f"'{{{stream}}}'") if hash_tag(stream) == stream else (
                    f"give the {what} the same hash tag {{{hash_tag(stream)}}}")
            raise ConfigError(
                "streams", f"on a Redis Cluster, stream {stream!r} (slot {slot}) and its {what} "
                f"{key!r} (slot {key_slot(key)}) must share a slot: {hint}")
