"""How an operator command runs: which server, one connection, and Redis errors translated.

Every ``streamflow info`` / ``dlq`` handler is synchronous: it calls :func:`run` with
the coroutine that does its work, which gets a connected client. This is the one place
where redis-py's exceptions become :class:`~streamflow.errors.ServerUnavailable` or
:class:`~streamflow.errors.AdminError` (with the server's URL, password redacted);
the modules below it (:mod:`streamflow.deadletter`, :mod:`streamflow.admin.info`) let
them propagate.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from redis.exceptions import RedisError, ResponseError

from ..config import DEFAULT_REDIS_URL
from ..connection import Connection, redact_url
from ..errors import AdminError, ConfigError, ServerUnavailable, UnknownStream
from ..redis_errors import TRANSIENT

__all__ = ["redis_url", "run"]

T = TypeVar("T")


def redis_url(args: argparse.Namespace) -> str:
    """The server to inspect: ``--redis-url``, else ``STREAMFLOW_REDIS_URL``, else the default."""
    url: str | None = getattr(args, "redis_url", None)
    url = url or os.environ.get("STREAMFLOW_REDIS_URL") or DEFAULT_REDIS_URL
    if url.lower().startswith("embedded://"):
        raise ConfigError(
            "redis_url", "embedded:// would start an empty private server; "
            "give the URL of the server to inspect",
        )
    return url


def run(url: str, work: Callable[[Any, Connection], Awaitable[T]]) -> T:
    """Connect to ``url``, run ``work(client, connection)``, close; map Redis errors."""

    async def main() -> T:
        conn = Connection(url)
        try:
            await conn.check()
            client = await conn.client()
            return await work(client, conn)
        except UnknownStream as exc:
            raise UnknownStream(f"{exc} at {conn.safe_url}") from None
        except TRANSIENT as exc:  # connection lost, timeout (OSError included)
            reason = redact_url(str(exc)) or type(exc).__name__
            raise ServerUnavailable(f"lost Redis at {conn.safe_url}: {reason}") from None
        except ResponseError as exc:
            raise AdminError(
                f"Redis at {conn.safe_url} refused a command: {redact_url(str(exc))}"
            ) from None
        except RedisError as exc:
            raise AdminError(f"Redis error at {conn.safe_url}: {redact_url(str(exc))}") from None
        finally:
            await conn.aclose()

    return anyio.run(main)
