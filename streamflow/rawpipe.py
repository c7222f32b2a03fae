"""RawPipe: a dedicated connection that sends many commands in one write and reads raw replies.

On a Redis Cluster a raw pipe belongs to one key's slot: its connection comes from the
master serving that slot, and a reply saying the slot moved (MOVED, ASK), the cluster
being down, or a lost connection re-reads the slot map, so the next call goes to the
slot's current master.
"""

from __future__ import annotations

from typing import Any

import anyio
from redis.exceptions import AskError, ClusterDownError, ReadOnlyError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from .clustering import is_cluster, node_connection, refresh
from .codec import pack_command

__all__ = ["RawPipe"]

# Replies after which a cluster slot's master must be looked up again (MovedError is an
# AskError; an old master demoted by a failover answers writes with READONLY).
_TOPOLOGY = (AskError, ClusterDownError, TryAgainError, ReadOnlyError)


class RawPipe:
    """One connection taken from a client's pool and kept, for a loop that talks a lot.

    :meth:`execute` packs the commands itself (RESP, no redis-py per-argument
    encoding), writes them in one ``send``, and reads every reply without redis-py's
    response callbacks. A reply that is an error is returned as a ``ResponseError``
    in its place; a connection error drops the connection (the next call opens a
    new one) and is raised.
    """

    def __init__(self, client: Any, key: str | None = None) -> None:
        self.client = client
        # a cluster: the key whose slot's master the connection goes to
        self.key = key if is_cluster(client) else None
        if is_cluster(client) and key is None:
            raise ValueError("a RawPipe on a Redis Cluster needs the key whose slot it serves")
        self.pool: Any = None if self.key is not None else client.connection_pool
        self.node: Any = None  # the cluster node the connection came from
        self.conn: Any = None  # the connection, None until first use or after an error

    async def execute(self, commands: list[Any]) -> list[Any]:
        """Send ``commands`` (each a list of arguments) in one round trip; return raw replies."""
        if self.conn is None:
            if self.key is not None:
                self.node, self.conn = await node_connection(self.client, self.key)
            else:
                self.conn = await self.pool.get_connection()
        conn = self.conn
        try:
            await conn.send_packed_command(b"".join(map(pack_command, commands)), check_health=False)
            results: list[Any] = []
            for _ in commands:
                try:
                    results.append(await conn.read_response(disable_decoding=True))
                except ResponseError as exc:
                    results.append(exc)
        except RuntimeError as exc:
            # uvloop: writing to a transport the peer reset ("unable to perform operation
            # on <TCPTransport closed=True>") is a connection error like any other.
            await self._drop()
            raise RedisConnectionError(f"connection lost: {exc}") from exc
        except BaseException as exc:
            await self._drop()
            if self.key is not None and isinstance(exc, OSError | RedisConnectionError):
                await refresh(self.client, f"connection to {self._node_name} lost")
            raise
        moved = next((r for r in results if isinstance(r, _TOPOLOGY)), None)
        if moved is not None and self.key is not None:
            # the slot is served elsewhere now (failover, resharding): re-read the slot map
            await self._drop()
            await refresh(self.client, str(moved))
        return results

    @property
    def _node_name(self) -> str:
        return str(getattr(self.node, "name", "?"))

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await conn.disconnect()
                await self._release(conn)

    async def _release(self, conn: Any) -> None:
        if self.key is not None:
            node, self.node = self.node, None
            node.release(conn)
        else:
            await self.pool.release(conn)

    async def aclose(self) -> None:
        """Give the connection back to the pool."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await self._release(conn)
