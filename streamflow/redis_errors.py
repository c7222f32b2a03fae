"""What a Redis error means for the runtime: one classifier instead of substring checks everywhere.

redis-py maps most error prefixes to exception types (``NoPermissionError``,
``OutOfMemoryError``, ``BusyLoadingError``...); replies read by
:class:`~streamflow.rawpipe.RawPipe` or returned from Lua scripts may come as a plain
``ResponseError``, so the prefix of the message is checked where no type exists
(``NOGROUP``, ``BUSYGROUP``, ``WRONGTYPE`` have none).
"""

from __future__ import annotations

import enum

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["TRANSIENT", "Kind", "classify", "is_transient"]

#: Errors that go away by themselves: the connection dropped, a reply timed out, the
#: server is restarting or loading its data. Callers retry them with backoff.
#: On a Redis Cluster: a slot moved (MOVED, ASK), the cluster or a shard is down or
#: failing over (CLUSTERDOWN, TRYAGAIN, a demoted master's READONLY, no node reachable).
TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, OSError, TimeoutError,
    AskError, ClusterDownError, TryAgainError, ReadOnlyError, RedisClusterException,
)


class Kind(enum.Enum):
    """What an error from Redis means for the caller."""

    TRANSIENT = "transient"  # connection lost, timeout, LOADING: retry with backoff
    NOGROUP = "nogroup"  # the group (or stream) is gone: recreate it
    BUSYGROUP = "busygroup"  # the group exists already: fine
    OOM = "oom"  # the server is out of memory: nothing was written; retry later
    NOPERM = "noperm"  # the ACL user may not do this: a configuration problem
    WRONGTYPE = "wrongtype"  # the key holds something other than a stream
    OTHER = "other"  # any other error reply


_PREFIXES = (
    ("NOGROUP", Kind.NOGROUP),
    ("BUSYGROUP", Kind.BUSYGROUP),
    ("OOM", Kind.OOM),
    ("NOPERM", Kind.NOPERM),
    ("WRONGTYPE", Kind.WRONGTYPE),
    ("LOADING", Kind.TRANSIENT),
    ("MASTERDOWN", Kind.TRANSIENT),
    ("TRYAGAIN", Kind.TRANSIENT),
    ("MOVED", Kind.TRANSIENT),
    ("ASK", Kind.TRANSIENT),
    ("CLUSTERDOWN", Kind.TRANSIENT),
    ("READONLY", Kind.TRANSIENT),
)


def classify(exc: BaseException) -> Kind:
    """The :class:`Kind` of ``exc`` (any exception; non-Redis ones are OTHER unless transient)."""
    if isinstance(exc, BusyLoadingError):
        return Kind.TRANSIENT
    if isinstance(exc, OutOfMemoryError):
        return Kind.OOM
    if isinstance(exc, NoPermissionError):
        return Kind.NOPERM
    if isinstance(exc, AskError | ClusterDownError | TryAgainError | ReadOnlyError):
        return Kind.TRANSIENT
    if isinstance(exc, ResponseError):
        text = str(exc)
        # A script's error reply may carry the command's error after a prefix
        # ("ERR Error running script ...: OOM ..."): look at the start of each part.
        for prefix, kind in _PREFIXES:
            if text.startswith(prefix) or f": {prefix} " in text or f" -{prefix} " in text:
                return kind
        return Kind.OTHER
    if isinstance(exc, TRANSIENT):
        return Kind.TRANSIENT
    return Kind.OTHER


def is_transient(exc: BaseException) -> bool:
    """True when retrying ``exc`` later is the right thing to do."""
    return classify(exc) is Kind.TRANSIENT
