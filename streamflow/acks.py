"""AckBuffer: coalesces the XACKs of many handlers into one pipelined round trip."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import structlog
from redis.exceptions import RedisError

__all__ = ["AckBuffer"]

log = structlog.get_logger("streamflow.acks")


class AckBuffer:
    """Collects ids of handled entries per (stream, group) and acks them in batches.

    A batch is flushed when it holds ``max_batch`` ids or ``interval`` seconds after
    its first id arrived, whichever comes first; all (stream, group) pairs of one
    flush go to Redis in one pipeline. Ids whose flush failed (connection lost) are
    kept and sent again; XACK is idempotent, so a resend never acks twice.
    """

    def __init__(self, client: Any, *, max_batch: int = 500, interval: float = 0.005) -> None:
        self._client = client  # redis.asyncio client (or cluster client)
        self.max_batch = max_batch  # flush as soon as this many ids are buffered
        self.interval = interval  # ... or this long after the first buffered id
        self._pending: dict[tuple[str, str], list[bytes]] = {}  # ids waiting, per (stream, group)
        self._count = 0  # ids in _pending
        self._has_items = asyncio.Event()  # set when _pending goes from empty to non-empty
        self._full = asyncio.Event()  # set when _count reaches max_batch
        self._closing = False  # set by close(): flush what is left and stop
        self.acked = 0  # ids Redis confirmed acked
        self.flushes = 0  # pipelines sent
        self.missing = 0  # ids XACK reported as not pending (already acked or deleted)

    def add(self, stream: str, group: str, raw_id: bytes) -> None:
        """Buffer one id for acking (called by a handler slot after its handler returned)."""
        key = (stream, group)
        ids = self._pending.get(key)
        if ids is None:
            self._pending[key] = [raw_id]
        else:
            ids.append(raw_id)
        self._count += 1
        if self._count == 1:
            self._has_items.set()
        if self._count >= self.max_batch:
            self._full.set()

    def __len__(self) -> int:
        return self._count

    def take(self) -> dict[tuple[str, str], list[bytes]]:
        """Remove and return everything buffered (for a caller that sends it itself)."""
        batch, self._pending = self._pending, {}
        self._count = 0
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
            if isinstance(result, Exception):
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

    async def flush(self) -> None:
        """Send everything buffered now, in one pipeline; keep the ids if sending fails."""
        if not self._count:
            return
        batch = self.take()
        pipe = self._client.pipeline(transaction=False)
        for (stream, group), ids in batch.items():
            pipe.execute_command("XACK", stream, group, *ids)
        try:
            results = await pipe.execute(raise_on_error=False)
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
            if not self._count:
                if self._closing:
                    return
                await self._has_items.wait()
                if not self._count:
                    continue
            if self._count < self.max_batch and not self._closing:
                with anyio.move_on_after(self.interval):
                    await self._full.wait()
            try:
                await self.flush()
                delay = 0.05
            except (RedisError, OSError):
                if self._closing:
                    log.error("acks_lost_on_shutdown", ids=self._count,
                              hint="these entries stay pending and will be redelivered")
                    return
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        """Ask :meth:`run` to flush what is buffered and return."""
        self._closing = True
        self._has_items.set()
        self._full.set()
