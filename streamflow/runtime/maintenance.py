"""Maintenance: removing long-idle consumers and trimming streams by a retention policy.

Needs only a client and the handler's spec: it runs as its own background task of a
consumer, every ``min(30 s, max(1 s, dead_consumer_after / 10))``.

* **Idle consumers** with no pending entries, idle longer than ``dead_consumer_after``,
  are deleted by a script that checks and deletes atomically (DELCONSUMER would throw
  pending entries away).
* **Retention** trims with ``XTRIM MINID ~`` never past the oldest id some group still
  needs (its oldest pending entry, or the entry after its last-delivered id).
"""

from __future__ import annotations

import time
from typing import Any

from redis.exceptions import RedisError

from .. import scripts
from ..keys import RETRY_CONSUMER, id_successor, parse_id
from ..redis_errors import Kind, classify
from ..spec import HandlerSpec
from ..stats import Counters
from .stop import StopSignal

__all__ = ["Maintenance", "safe_trim_floor"]


class Maintenance:
    """Prunes idle consumers of one handler's group and applies its retention policy."""

    def __init__(
        self, client: Any, spec: HandlerSpec, *, consumer: str, dead_consumer_after: float,
        log: Any, counters: Counters | None = None, keys: tuple[str, ...] | None = None,
    ) -> None:
        self.client = client  # shared redis.asyncio client
        self.spec = spec  # group and retention policy
        self.keys = keys or spec.streams  # every key the group reads (streams, replay streams)
        self.consumer = consumer  # never pruned: this process
        self.dead_consumer_after = dead_consumer_after  # seconds idle before a consumer goes
        self.every = min(30.0, max(1.0, dead_consumer_after / 10))  # seconds between passes
        self.log = log
        self.counters = counters if counters is not None else Counters()  # maintenance_passes

    async def run(self, stop: StopSignal) -> None:
        """Maintain every :attr:`every` seconds until ``stop``; errors are logged, never fatal."""
        while not stop.is_set:
            await stop.pause(self.every)
            if stop.is_set:
                return
            try:
                await self.maintain()
            except (RedisError, OSError) as exc:
                if classify(exc) not in (Kind.TRANSIENT, Kind.NOGROUP):
                    self.log.error("maintenance_failed", error=str(exc) or type(exc).__name__)
            self.counters.maintenance_passes += 1

    async def maintain(self) -> None:
        """One pass: prune consumers, then trim, on every stream key."""
        for stream in self.keys:
            try:
                await self.prune_consumers(stream)
                if self.spec.retention is not None:
                    await self.trim(stream)
            except (RedisError, OSError) as exc:
                if classify(exc) is not Kind.NOGROUP:  # a replay stream not created yet
                    raise

    async def prune_consumers(self, stream: str) -> list[str]:
        """Delete consumers idle > ``dead_consumer_after`` that hold no pending entries."""
        group = self.spec.group
        idle_ms = int(self.dead_consumer_after * 1000)
        rows = await self.client.execute_command("XINFO", "CONSUMERS", stream, group)
        removed: list[str] = []
        for row in rows or []:
            info = dict(zip(row[::2], row[1::2], strict=True))
            name = info[b"name"].decode()
            if name in (self.consumer, RETRY_CONSUMER):
                continue
            if int(info[b"pending"]) == 0 and int(info[b"idle"]) >= idle_ms:
                done = await self.client.eval(
                    scripts.DELETE_IDLE_CONSUMER, 1, stream, group, name, idle_ms
                )
                if done:
                    removed.append(name)
                    self.log.info("consumer_removed", stream=stream, removed_consumer=name,
                                  idle_s=int(info[b"idle"]) // 1000)
        return removed

    async def trim(self, stream: str) -> str | None:
        """Trim ``stream`` by the retention policy, never past what a group still needs."""
        policy = self.spec.retention
        if policy is None:
            return None
        floor = await safe_trim_floor(self.client, stream)
        if floor is None:
            return None
        cutoff: tuple[int, int] | None = None
        if policy.max_age is not None:
            cutoff = (int(time.time() * 1000 - policy.max_age * 1000), 0)
        if policy.max_len is not None:
            length = int(await self.client.execute_command("XLEN", stream))
            excess = length - policy.max_len
            if excess > 0:
                rows = await self.client.execute_command(
                    "XRANGE", stream, "-", "+", "COUNT", min(excess, 10_000)
                )
                if rows:
                    by_len = parse_id(id_successor(rows[-1][0]))
                    cutoff = by_len if cutoff is None else max(cutoff, by_len)
        if cutoff is None:
            return None
        minid = min(cutoff, floor)
        text = f"{minid[0]}-{minid[1]}"
        removed = await self.client.execute_command("XTRIM", stream, "MINID", "~", text)
        if removed:
            self.log.info("stream_trimmed", stream=stream, removed=int(removed), minid=text)
        return text


async def safe_trim_floor(client: Any, stream: str) -> tuple[int, int] | None:
    """Lowest id some group of ``stream`` still needs (oldest pending or next undelivered).

    None when the stream has no groups (nothing is known to be processed).
    """
    groups = await client.execute_command("XINFO", "GROUPS", stream)
    if not groups:
        return None
    floor: tuple[int, int] | None = None
    for row in groups:
        info = dict(zip(row[::2], row[1::2], strict=True))
        need = parse_id(id_successor(info[b"last-delivered-id"]))
        if int(info[b"pending"]) > 0:
            summary = await client.execute_command("XPENDING", stream, info[b"name"])
            if summary and summary[1] is not None:
                need = min(need, parse_id(summary[1]))
        floor = need if floor is None else min(floor, need)
    return floor
