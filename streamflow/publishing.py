"""Publishing: XADD of payloads and field maps, routed to a partition by key, optionally
durable (the master waits for a replica's acknowledgement before the call returns).

:class:`Publisher` is what ``App.publish`` / ``publish_fields`` / ``publish_many`` run. It
knows the app's partitioned streams (declared with ``app.stream(name, partitions=N)`` or
``@app.handler(name, partitions=N)``): an entry with ``key=`` goes to partition
``crc32(key) % N`` (:mod:`streamflow.partitions`) and carries the key in its ``sf:key``
field; one without a key goes to the next partition, round robin.

``durable=True`` sends ``WAIT <replicas> <timeout>`` on the same connection right after
the XADD (one round trip); ``durable="aof"`` sends ``WAITAOF 1 <replicas> <timeout>``
(Redis 7.2+ / Valkey: the entry is fsynced to the master's and the replicas' append-only
files). Fewer acknowledgements than asked for raise :class:`~streamflow.errors.NotReplicated`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from .clustering import initialized, is_cluster, node_name
from .codec import JSON_FIELD, encode_fields, encode_json
from .config import validate_name
from .connection import Connection
from .errors import ConfigError, NotReplicated
from .partitions import KEY_FIELD, check_partitions, partition_index, partition_keys
from .rawpipe import RawPipe

__all__ = ["Durable", "Publisher"]

#: ``publish(durable=...)``: False, True (WAIT) or "aof" (WAITAOF).
Durable = bool | Literal["aof"]

PartitionKey = str | bytes | int


class Publisher:
    """XADDs for one application: partition routing, durable writes, pipelined bulk."""

    def __init__(
        self, connection: Callable[[], Connection], max_payload_bytes: Callable[[], int]
    ) -> None:
        self._connection = connection  # the app's current connection (a worker's, or its own)
        self._max_payload_bytes = max_payload_bytes
        self._partitions: dict[str, int] = {}  # logical stream -> its partition count
        self._next: dict[str, itertools.count[int]] = {}  # round robin of keyless entries

    # -- partitioned streams ------------------------------------------------------------

    def declare(self, stream: str, partitions: int) -> tuple[str, ...]:
        """Declare ``stream`` partitioned into ``partitions`` streams; return their keys.

        Declaring the same stream again with another count is refused: entries with one
        key would then land in two partitions and lose their order.
        """
        validate_name("stream name", stream)
        check_partitions(partitions)
        known = self._partitions.get(stream)
        if known is not None and known != partitions:
            raise ConfigError(
                "partitions", f"stream {stream!r} is declared with {known} partitions already, "
                f"not {partitions}",
            )
        self._partitions[stream] = partitions
        return partition_keys(stream, partitions)

    def partitions(self, stream: str) -> int | None:
        """How many partitions ``stream`` was declared with (None: not partitioned)."""
        return self._partitions.get(stream)

    def route(self, stream: str, key: PartitionKey | None) -> str:
        """The stream key an entry of ``stream`` with ``key`` is written to."""
        count = self._partitions.get(stream)
        if count is None:
            return stream
        if key is None:
            counter = self._next.get(stream)
            if counter is None:
                counter = self._next[stream] = itertools.count()
            return partition_keys(stream, count)[next(counter) % count]
        return partition_keys(stream, count)[partition_index(key, count)]

    # -- writing ------------------------------------------------------------------------

    async def publish(
        self, stream: str, payload: Any, *, key: PartitionKey | None = None,
        durable: Durable = False, replicas: int = 1, durable_timeout: float = 1.0,
        maxlen: int | None = None, approximate: bool = True,
    ) -> str:
        """One JSON payload (field ``sf:json``); see :meth:`App.publish`."""
        validate_name("stream name", stream)
        fields: dict[str, Any] = {JSON_FIELD: encode_json(payload, self._max_payload_bytes())}
        return await self._one(stream, fields, key, durable, replicas, durable_timeout,
                               maxlen, approximate)

    async def publish_fields(
        self, stream: str, fields: Mapping[str, Any], *, key: PartitionKey | None = None,
        durable: Durable = False, replicas: int = 1, durable_timeout: float = 1.0,
        maxlen: int | None = None, approximate: bool = True,
    ) -> str:
        """One raw field map; see :meth:`App.publish_fields`."""
        validate_name("stream name", stream)
        encoded = dict(encode_fields(fields, self._max_payload_bytes()))
        return await self._one(stream, encoded, key, durable, replicas, durable_timeout,
                               maxlen, approximate)

    async def publish_many(
        self, stream: str, payloads: Iterable[Any], *, chunk: int = 1000, raw: bool = False,
        keys: Iterable[PartitionKey | None] | None = None, durable: Durable = False,
        replicas: int = 1, durable_timeout: float = 1.0,
    ) -> list[str]:
        """Pipelined XADDs, ``chunk`` per round trip (per node, on a cluster); the ids in
        the order of ``payloads``. ``keys``: one partition key per payload (or None)."""
        validate_name("stream name", stream)
        _check_durable(durable, replicas, durable_timeout)
        client = await self._connection().client()
        limit = self._max_payload_bytes()
        key_iter = iter(keys) if keys is not None else itertools.repeat(None)
        ids: list[str] = []
        pending: list[tuple[str, list[Any]]] = []
        pipes: dict[str, RawPipe] = {}
        try:
            for item in payloads:
                key = next(key_iter, None)
                target = self.route(stream, key)
                fields = encode_fields(item, limit) if raw else {JSON_FIELD: encode_json(item, limit)}
                pending.append((target, _xadd(target, fields, key, None, True)))
                if len(pending) == chunk:
                    ids += await self._send(client, pipes, pending, durable, replicas,
                                            durable_timeout)
                    pending = []
            if pending:
                ids += await self._send(client, pipes, pending, durable, replicas, durable_timeout)
        finally:
            for pipe in pipes.values():
                await pipe.aclose()
        return ids

    async def _one(
        self, stream: str, fields: dict[str, Any], key: PartitionKey | None, durable: Durable,
        replicas: int, durable_timeout: float, maxlen: int | None, approximate: bool,
    ) -> str:
        target = self.route(stream, key)
        command = _xadd(target, fields, key, maxlen, approximate)
        client: Any = await self._connection().client()
        if not durable:
            result = await client.execute_command(*command)
            return result.decode() if isinstance(result, bytes) else str(result)
        _check_durable(durable, replicas, durable_timeout)
        pipes: dict[str, RawPipe] = {}
        try:
            ids = await self._send(client, pipes, [(target, command)], durable, replicas,
                                   durable_timeout)
        finally:
            for pipe in pipes.values():
                await pipe.aclose()
        return ids[0]

    async def _send(
        self, client: Any, pipes: dict[str, RawPipe], commands: list[tuple[str, list[Any]]],
        durable: Durable, replicas: int, durable_timeout: float,
    ) -> list[str]:
        """Send XADDs grouped by node (one group on one server), each group followed by its
        WAIT / WAITAOF when durable; the ids in the order of ``commands``."""
        if is_cluster(client):
            await initialized(client)
        groups: dict[str, list[int]] = {}
        for i, (target, _) in enumerate(commands):
            groups.setdefault(node_name(client, target) if is_cluster(client) else "", []).append(i)
        ids: list[str] = [""] * len(commands)
        for node, indexes in groups.items():
            first = commands[indexes[0]][0]
            pipe = pipes.get(node)
            if pipe is None:
                pipe = pipes[node] = RawPipe(client, first)
            batch = [commands[i][1] for i in indexes]
            if durable:
                batch.append(_wait(durable, replicas, durable_timeout))
            replies = await pipe.execute(batch)
            for i, reply in zip(indexes, replies, strict=False):
                if isinstance(reply, Exception):
                    raise reply
                ids[i] = reply.decode()
            if durable:
                _check_acked(replies[-1], durable, replicas, first,
                             [ids[i] for i in indexes], durable_timeout)
        return ids


def _xadd(target: str, fields: Mapping[str, Any], key: PartitionKey | None,
          maxlen: int | None, approximate: bool) -> list[Any]:
    command: list[Any] = ["XADD", target]
    if maxlen is not None:
        command += ["MAXLEN", "~" if approximate else "=", maxlen]
    command.append("*")
    for name, value in fields.items():
        command += [name, value]
    if key is not None:
        command += [KEY_FIELD, key if isinstance(key, str | bytes) else str(key)]
    return command


def _check_durable(durable: object, replicas: object, timeout: object) -> None:
    if durable not in (False, True, "aof"):
        raise ConfigError("durable", f"must be False, True (WAIT) or 'aof' (WAITAOF), got {durable!r}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigError("replicas", f"must be an int >= 1, got {replicas!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError("durable_timeout", f"must be a number of seconds > 0, got {timeout!r}")


def _wait(durable: Durable, replicas: int, timeout: float) -> list[Any]:
    ms = max(1, int(timeout * 1000))
    if durable == "aof":
        return ["WAITAOF", 1, replicas, ms]
    return ["WAIT", replicas, ms]


def _check_acked(reply: Any, durable: Durable, replicas: int, stream: str, ids: list[str],
                 timeout: float) -> None:
    if isinstance(reply, Exception):
        text = str(reply).lower()
        if durable == "aof" and "unknown command" in text:
            raise ConfigError("durable", "durable='aof' needs WAITAOF (Redis 7.2+ or Valkey); "
                              "this server has none: use durable=True (WAIT)") from None
        if durable == "aof" and "appendonly" in text:
            raise ConfigError("durable", "durable='aof' needs appendonly yes on the master of "
                              f"{stream!r} ({reply})") from None
        raise reply
    # WAITAOF: [local fsyncs, replica fsyncs]; the master's own must have happened too
    acked = min(int(reply[0]) * replicas, int(reply[1])) if durable == "aof" else int(reply)
    if acked < replicas:
        raise NotReplicated(
            f"{len(ids)} entr{'y' if len(ids) == 1 else 'ies'} of {stream!r} acknowledged by "
            f"{acked} of {replicas} replica(s) within {timeout:g} s; written to the master "
            "only (they may still replicate, or be lost if it fails first)",
            stream=stream, entry_ids=ids, acked=acked, wanted=replicas,
        )
