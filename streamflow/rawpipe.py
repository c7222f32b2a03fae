"""RawPipe: a dedicated connection that sends many commands in one write and reads raw replies."""

from __future__ import annotations

from typing import Any

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from .codec import pack_command

__all__ = ["RawPipe"]


class RawPipe:
    """One connection taken from a client's pool and kept, for a loop that talks a lot.

    :meth:`execute` packs the commands itself (RESP, no redis-py per-argument
    encoding), writes them in one ``send``, and reads every reply without redis-py's
    response callbacks. A reply that is an error is returned as a ``ResponseError``
    in its place; a connection error drops the connection (the next call opens a
    new one) and is raised.
    """

    def __init__(self, client: Any) -> None:
        self.pool = client.connection_pool  # where the connection comes from and returns to
        self.conn: Any = None  # the connection, None until first use or after an error

    async def execute(self, commands: list[Any]) -> list[Any]:
        """Send ``commands`` (each a list of arguments) in one round trip; return raw replies."""
        if self.conn is None:
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
        except BaseException:
            await self._drop()
            raise
        return results

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await conn.disconnect()
                await self.pool.release(conn)

    async def aclose(self) -> None:
        """Give the connection back to the pool."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await self.pool.release(conn)
