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
from ..errors import AdminError, ConfigError, ServerUnavailable, StreamflowError, UnknownStream
from ..redis_errors import TRANSIENT

__all__ = ["redis_url", "run", "translate"]

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


def translate(exc: BaseException, safe_url: str) -> StreamflowError | None:
    """The operator-facing error for a redis-py exception from the server at ``safe_url``
    (password redacted), or None when ``exc`` is not a Redis error."""
    if isinstance(exc, UnknownStream):
        return UnknownStream(f"{exc} at {safe_url}")
    if isinstance(exc, TRANSIENT):  # connection lost, timeout (OSError included)
        reason = redact_url(str(exc)) or type(exc).__name__
        return ServerUnavailable(f"lost Redis at {safe_url}: {reason}")
    if isinstance(exc, ResponseError):
        return AdminError(f"Redis at {safe_url} refused a command: {redact_url(str(exc))}")
    if isinstance(exc, RedisError):
        return AdminError(f"Redis error at {safe_url}: {redact_url(str(exc))}")
    return None


def run(url: str, work: Callable[[Any, Connection], Awaitable[T]]) -> T:
    """Connect to ``url``, run ``work(client, connection)``, close; map Redis errors."""

    async def main() -> T:
        conn = Connection(url)
        try:
            await conn.check()
            client = await conn.client()
            return await work(client, conn)
        except Exception as exc:
            error = translate(exc, conn.safe_url)
            if error is None:
                raise
            raise error from None
        finally:
            await conn.aclose()

    return anyio.run(main)
