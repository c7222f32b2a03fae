"""AckBuffer: coalesces the XACKs of many handlers into one pipelined round trip."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import structlog
from redis.exceptions import RedisError

from ..clustering import initialized, is_cluster, node_name
from ..rawpipe import RawPipe
from ..redis_errors import is_transient
from ..spec import Completion

__all__ = ["AckBuffer"]

log = structlog.get_logger("streamflow.acks")


class AckBuffer:
    """Collects ids of handled entries per (stream, group) and acks them in batches.

    A batch is flushed when it holds ``max_batch`` ids or ``interval`` seconds after
    its first id arrived, whichever comes first; all (stream, group) pairs of one
    flush go to Redis in one pipeline. Ids whose flush failed (connection lost) are
    kept and sent again; XACK is idempotent, so a resend never acks twice.

    A (stream, group) with a :class:`~streamflow.spec.Completion` (a job queue) is acked
    by the command the completion builds (a script that stores each job's result and
    acks it in one atomic step) instead of XACK.
    """

    def __init__(self, client: Any, *, max_batch: int = 500, interval: float = 0.005) -> None:
        self._client = client  # redis.asyncio client (or cluster client)
        self.max_batch = max_batch  # flush as soon as this many ids are buffered
        self.interval = interval  # ... or this long after the first buffered id
        self._pending: dict[tuple[str, str], list[bytes]] = {}  # ids waiting, per (stream, group)
        self._has_items = asyncio.Event()  # set when _pending goes from empty to non-empty
        self._full = asyncio.Event()  # set when a bucket reaches max_batch
        self._closing = False  # set by close(): flush what is left and stop
        self._pipe: RawPipe | None = None  # the flusher's own connection
        self._pipes: dict[str, RawPipe] = {}  # on a cluster: one per node ("host:port")
        # (stream, group) -> (completion, consumer name) for buckets not acked by XACK
        self._completions: dict[tuple[str, str], tuple[Completion, str]] = {}
        self.acked = 0  # ids Redis confirmed acked
        self.flushes = 0  # pipelines sent
        self.missing = 0  # ids XACK reported as not pending (already acked or deleted)

    def bucket(self, stream: str, group: str) -> list[bytes]:
        """The list that collects ids to ack for (stream, group); it lives as long as the buffer.

        Hot-path callers append to it directly and then call :meth:`notify`.
        """
        ids = self._pending.get((stream, group))
        if ids is None:
            ids = self._pending[(stream, group)] = []
        return ids

    def use_completion(
        self, stream: str, group: str, completion: Completion, consumer: str
    ) -> None:
        """Ack (stream, group)'s ids with ``completion``'s command (for ``consumer``)."""
        self._completions[(stream, group)] = (completion, consumer)

    def notify(self, size: int) -> None:
        """Tell the flusher a bucket grew to ``size`` ids (wakes it on first id and when full)."""
        if not self._has_items.is_set():
            self._has_items.set()
        if size >= self.max_batch:
            self._full.set()

    def add(self, stream: str, group: str, raw_id: bytes) -> None:
        """Buffer one id for acking (called after its handler returned)."""
        ids = self.bucket(stream, group)
        ids.append(raw_id)
        self.notify(len(ids))

    def __len__(self) -> int:
        return sum(map(len, self._pending.values()))

    def take(self, keys: frozenset[str] | None = None) -> dict[tuple[str, str], list[bytes]]:
        """Remove and return everything buffered (for a caller that sends it itself), or
        only the buckets of the streams ``keys`` (one cluster slot's)."""
        batch = {}
        for key, ids in self._pending.items():
            if ids and (keys is None or key[0] in keys):
                batch[key] = ids[:]
                ids.clear()
        if keys is None or not any(self._pending.values()):
            self._has_items.clear()
            self._full.clear()
        return batch

    def put_back(self, batch: dict[tuple[str, str], list[bytes]]) -> None:
        """Return ids whose XACK could not be sent, so the next flush retries them."""
        for (stream, group), ids in batch.items():
            for raw_id in ids:
                self.add(stream, group, raw_id)

    def record(self, batch: dict[tuple[str, str], list[bytes]], results: list[Any]) -> None:
        """Account for XACK replies; log when Redis acked fewer ids than were sent."""
        self.flushes += 1
        for ((stream, group), ids), result in zip(batch.items(), results, strict=True):
            completion = self._completions.get((stream, group))
            if completion is not None and completion[0].acked(ids, result):
                self.put_back({(stream, group): ids})  # e.g. NOSCRIPT: sent again, in full
                continue
            if isinstance(result, Exception):
                if is_transient(result):  # e.g. MOVED or READONLY during a cluster failover
                    log.warning("xack_deferred", stream=stream, group=group, ids=len(ids),
                                error=str(result))
                    self.put_back({(stream, group): ids})
                    continue
                log.error("xack_failed", stream=stream, group=group, ids=len(ids), error=str(result))
                continue
            n = int(result)
            self.acked += n
            if n < len(ids):
                self.missing += len(ids) - n
                log.warning(
                    "xack_short", stream=stream, group=group, sent=len(ids), acked=n,
                    hint="entries were already acked, deleted, or their group was recreated",
                )

    async def send_with(
        self, pipe: RawPipe, command: list[Any], keys: frozenset[str] | None = None
    ) -> Any:
        """Send the buffered acks and then ``command`` in one round trip; return its reply.

        The reader uses this so that acking costs no round trip of its own. A reply
        that is an error is raised after the acks were accounted for. ``keys``: only
        the acks of these streams (on a cluster, the ones in the reader's slot).
        """
        batch = self.take(keys) if self._has_items.is_set() else {}
        commands = self._commands(batch)
        commands.append(command)
        try:
            results = await pipe.execute(commands)
        except BaseException:
            self.put_back(batch)
            raise
        if batch:
            self.record(batch, results[:-1])
        reply = results[-1]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def flush(self) -> None:
        """Send everything buffered now, in one round trip (one per cluster node); keep the
        ids whose sending failed."""
        batch = self.take()
        if not batch:
            return
        if not is_cluster(self._client):
            if self._pipe is None:
                self._pipe = RawPipe(self._client)
            await self._send(self._pipe, batch)
            return
        try:
            await initialized(self._client)
        except RedisError:
            self.put_back(batch)
            raise
        by_node: dict[str, dict[tuple[str, str], list[bytes]]] = {}
        for key, ids in batch.items():
            try:
                node = node_name(self._client, key[0])
            except RedisError:  # no master for the slot now: that node's turn fails
                node = "?"
            by_node.setdefault(node, {})[key] = ids
        failed: BaseException | None = None
        for node, part in by_node.items():
            pipe = self._pipes.get(node)
            if pipe is None:
                pipe = self._pipes[node] = RawPipe(self._client, next(iter(part))[0])
            try:
                await self._send(pipe, part)
            except (RedisError, OSError) as exc:
                failed = exc
                self._pipes.pop(node, None)
                await pipe.aclose()
        if failed is not None:
            raise failed

    async def _send(self, pipe: RawPipe, batch: dict[tuple[str, str], list[bytes]]) -> None:
        commands = self._commands(batch)
        try:
            results = await pipe.execute(commands)
        except (RedisError, OSError) as exc:
            self.put_back(batch)
            log.warning("ack_flush_failed", ids=sum(map(len, batch.values())), error=str(exc))
            raise
        except BaseException:
            self.put_back(batch)
            raise
        self.record(batch, results)

    async def run(self) -> None:
        """Flush loop: runs until :meth:`close`, then flushes what is left and returns."""
        delay = 0.05
        while True:
            if not len(self):
                if self._closing:
                    return
                self._has_items.clear()
                await self._has_items.wait()
                if not len(self):
                    continue
            if not self._full.is_set() and not self._closing:
                with anyio.move_on_after(self.interval):
                    await self._full.wait()
            try:
                await self.flush()
                delay = 0.05
            except (RedisError, OSError):
                if self._closing:
                    log.error("acks_lost_on_shutdown", ids=len(self),
                              hint="these entries stay pending and will be redelivered")
                    await self._close_pipe()
                    return
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
            if self._closing and not len(self):
                await self._close_pipe()
                return

    async def _close_pipe(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            await pipe.aclose()
        pipes, self._pipes = list(self._pipes.values()), {}
        for pipe in pipes:
            await pipe.aclose()

    def _commands(self, batch: dict[tuple[str, str], list[bytes]]) -> list[list[Any]]:
        """One ack command per (stream, group) of ``batch``: XACK, or its completion's."""
        completions = self._completions
        out: list[list[Any]] = []
        for (stream, group), ids in batch.items():
            completion = completions.get((stream, group)) if completions else None
            if completion is None:
                out.append(["XACK", stream, group, *ids])
            else:
                out.append(completion[0].ack_command(stream, group, completion[1], ids))
        return out

    def close(self) -> None:
        """Ask :meth:`run` to flush what is buffered and return."""
        self._closing = True
        self._has_items.set()
        self._full.set()
