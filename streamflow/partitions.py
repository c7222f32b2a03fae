"""Partitioned streams: the stream keys of a logical stream's partitions, and which
partition an entry with a given key goes to.

A stream declared with ``partitions=N`` is N Redis streams, ``orders:{p0}`` ...
``orders:{p<N-1>.<j>}``. Each key's hash tag is chosen so that partition ``i`` hashes
into the ``i``-th of N equal slices of the 16384 cluster slots: with the slots spread
evenly over the masters (as every cluster tool assigns them), the partitions spread
evenly over the masters too. (``{orders}:0``, ``{orders}:1``... would all share one slot,
hence one shard.) Everything keyed off a partition's stream name (``<key>:dlq``,
``<key>:replay:<group>``, the consumer-name leases) carries the same tag, so it lives in
the partition's slot and no script or multi-key command ever crosses slots.

The tag depends only on ``(i, N)``, not on the stream's name: partition ``i`` of every
stream with N partitions shares one slot, so a handler reading several such streams
reads partition ``i`` of all of them in one ``XREADGROUP``.

An entry's partition is ``crc32(key) % N`` (zlib's CRC-32 of the key's UTF-8 bytes),
a function any producer in any language can compute; entries without a key go round
robin.
"""

from __future__ import annotations

import functools
import zlib

from .clustering import key_slot
from .codec import KEY_FIELD
from .errors import ConfigError

__all__ = [
    "KEY_FIELD",
    "MAX_PARTITIONS",
    "check_partitions",
    "partition_index",
    "partition_keys",
    "partition_tag",
]

#: Most partitions a stream may have (a slice of the slots per partition stays >= 16).
MAX_PARTITIONS = 1024

_SLOTS = 16384


def check_partitions(partitions: object, *, name: str = "partitions") -> int:
    """``partitions`` as an int, or :class:`ConfigError` naming it."""
    if (isinstance(partitions, bool) or not isinstance(partitions, int)
            or not 1 <= partitions <= MAX_PARTITIONS):
        raise ConfigError(name, f"must be an int from 1 to {MAX_PARTITIONS}, got {partitions!r}")
    return partitions


@functools.lru_cache(maxsize=4096)
def partition_tag(index: int, count: int) -> str:
    """The hash tag of partition ``index`` of ``count``: ``p<index>``, or ``p<index>.<j>``
    for the smallest ``j`` that puts it in the ``index``-th slice of the slots."""
    low, high = index * _SLOTS // count, (index + 1) * _SLOTS // count
    tag = f"p{index}"
    j = 0
    while not low <= key_slot("{" + tag + "}") < high:
        j += 1
        tag = f"p{index}.{j}"
    return tag


@functools.lru_cache(maxsize=1024)
def partition_keys(stream: str, count: int) -> tuple[str, ...]:
    """The stream keys of ``stream``'s ``count`` partitions: ``orders:{p0}``, ..."""
    check_partitions(count)
    return tuple(f"{stream}:{{{partition_tag(i, count)}}}" for i in range(count))


def partition_index(key: str | bytes | int, count: int) -> int:
    """The partition of an entry with ``key``: ``crc32(utf-8 key) % count``."""
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes):
        raise ConfigError("key", f"a partition key is a str, bytes or int, got {type(key).__name__}")
    return zlib.crc32(key) % count
