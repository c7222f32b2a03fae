"""Reclaimer: brings back due retries and dead consumers' entries; prunes consumers; trims.

Why XPENDING + XCLAIM and not XAUTOCLAIM: a retry must wait its own backoff, which
depends on the entry's delivery count, and XAUTOCLAIM neither filters by consumer nor
reports delivery counts. XPENDING's extended form gives owner, idle time and delivery
count per entry; XCLAIM with ``min-idle-time`` then claims an entry only if nobody else
claimed it since (claiming resets its idle time), so any number of workers can reclaim
at once without a lock and without running an entry twice at the same time.

Two scans per stream and pass:

* entries parked on ``streamflow:retry`` (failed, waiting for their backoff) whose idle
  time reached ``Retry.delay(attempt)``;
* entries of any other consumer idle longer than ``visibility_timeout`` (their worker
  died: live workers renew the idle time of what they run).

Claimed entries go to the handler slots with ``attempt`` = delivery count, or straight
to the dead-letter stream when they are out of attempts (a worker kept dying on them).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
from redis.exceptions import RedisError, ResponseError

from . import scripts
from .consumer import RETRY_CONSUMER

if TYPE_CHECKING:
    from .consumer import Consumer

__all__ = ["Reclaimer", "id_successor", "parse_id"]

PAGE = 100


def parse_id(raw: bytes | str) -> tuple[int, int]:
    """``b"1700-3"`` -> ``(1700, 3)``."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def id_successor(raw: bytes | str) -> str:
    """The smallest stream id greater than ``raw``."""
    ms, seq = parse_id(raw)
    return f"{ms}-{seq + 1}"


class Reclaimer:
    """Background task of one :class:`~streamflow.consumer.Consumer`; see the module doc."""

    def __init__(self, consumer: Consumer) -> None:
        self.c = consumer  # the consumer whose slots receive claimed entries
        self.interval = consumer.settings.reclaim_interval  # seconds between passes
        self.maintenance_every = min(30.0, max(1.0, consumer.settings.dead_consumer_after / 10))
        self._last_maintenance = 0.0  # monotonic time of the last prune/trim
        self.claimed = 0  # entries claimed in all

    async def run(self) -> None:
        """Reclaim every ``reclaim_interval`` until cancelled; errors are logged, never fatal."""
        failing = False
        while not self.c._stopping:
            with anyio.move_on_after(self.interval):
                await self.c.stop_requested.wait()
            if self.c._stopping:
                return
            try:
                await self.reclaim_once()
                now = time.monotonic()
                if now - self._last_maintenance >= self.maintenance_every:
                    self._last_maintenance = now
                    await self.maintain()
                if failing:
                    self.c.log.info("reclaim_recovered")
                    failing = False
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    self.c.log.error("reclaim_failed", error=str(exc))
            except (RedisError, OSError) as exc:
                if not failing:
                    self.c.log.warning("reclaim_failed", error=str(exc) or type(exc).__name__)
                    failing = True

    async def reclaim_once(self) -> int:
        """One pass over every stream; returns how many entries were claimed."""
        total = 0
        for stream in self.c.streams:
            total += await self._scan(stream, retries=True)
            total += await self._scan(stream, retries=False)
        self.claimed += total
        return total

    async def _scan(self, stream: str, *, retries: bool) -> int:
        c = self.c
        retry = c.spec.retry
        vis_ms = int(c.settings.visibility_timeout * 1000)
        if retries:
            min_idle = int(retry.base_delay(1) * (1 - retry.jitter) * 1000)
            extra: list[Any] = [RETRY_CONSUMER]
        else:
            min_idle = vis_ms
            extra = []
        start = "-"
        claimed = 0
        running = c.running_ids() if not retries else set()
        suspect_taken: bytes | None = None
        while True:
            rows = await c.client.execute_command(
                "XPENDING", stream, c.group, "IDLE", min_idle, start, "+", PAGE, *extra
            )
            if not rows:
                return claimed
            due: list[tuple[bytes, int, int]] = []  # (id, min idle ms, deliveries)
            for raw_id, owner, idle, deliveries in rows:
                if retries:
                    need = int(retry.delay(int(deliveries), raw_id) * 1000)
                else:
                    if owner == RETRY_CONSUMER.encode():
                        continue  # waits for its own backoff, handled by the retry scan
                    if owner == c.name.encode() and (stream, raw_id) in running:
                        continue  # running here right now (its lease is being renewed)
                    need = vis_ms
                    if self._is_suspect(int(deliveries)):
                        if c._suspects or suspect_taken:
                            continue  # one crash suspect at a time (see _is_suspect)
                        if int(idle) >= need:
                            suspect_taken = raw_id
                if int(idle) >= need:
                    due.append((raw_id, need, int(deliveries)))
            if due:
                if suspect_taken is not None:
                    c._suspects.add(suspect_taken)
                try:
                    claimed += await self._claim(stream, due)
                finally:
                    if suspect_taken is not None and not c.holds(stream, suspect_taken):
                        c._suspects.discard(suspect_taken)  # not ours, dead-lettered or gone
            if len(rows) < PAGE:
                return claimed
            start = "(" + rows[-1][0].decode()

    def _is_suspect(self, deliveries: int) -> bool:
        """An entry of a dead consumer delivered twice already may be what kills workers.

        Poison that crashes the process (``os._exit``, a segfault) takes every entry in
        flight with it, so innocent entries gain a delivery each time. Entries reclaimed
        from dead consumers for the third time or more are therefore run one at a time
        per worker: a poison entry then dies alone until it runs out of attempts, and the
        entries that shared its crashes finish. (An entry out of attempts is not run at
        all: it goes straight to the dead-letter stream.)
        """
        return 2 <= deliveries < self.c.spec.retry.max_attempts

    async def _claim(self, stream: str, due: list[tuple[bytes, int, int]]) -> int:
        c = self.c
        got = 0
        while due:
            n = await c.reserve(len(due))
            if not n:
                break
            chunk, due = due[:n], due[n:]
            try:
                pipe = c.client.pipeline(transaction=False)
                for raw_id, need, _ in chunk:
                    pipe.execute_command("XCLAIM", stream, c.group, c.name, need, raw_id)
                replies = await pipe.execute()
                claimed: list[Any] = [entry for reply in replies for entry in (reply or [])]
                attempts = {raw_id: d + 1 for raw_id, _, d in chunk}
                if claimed:
                    c.log.info("reclaimed", stream=stream, entries=len(claimed))
                await c.dispatch_claimed(stream, claimed, attempts)
                got += len(claimed)
            finally:
                c.release(n)
        return got

    # -- maintenance ----------------------------------------------------------------------

    async def maintain(self) -> None:
        """Remove long-idle consumers without pending entries; apply the retention policy."""
        for stream in self.c.streams:
            await self.prune_consumers(stream)
            if self.c.spec.retention is not None:
                await self.trim(stream)

    async def prune_consumers(self, stream: str) -> list[str]:
        """Delete consumers idle > ``dead_consumer_after`` that hold no pending entries."""
        c = self.c
        idle_ms = int(c.settings.dead_consumer_after * 1000)
        rows = await c.client.execute_command("XINFO", "CONSUMERS", stream, c.group)
        removed: list[str] = []
        for row in rows or []:
            info = dict(zip(row[::2], row[1::2], strict=True))
            name = info[b"name"].decode()
            if name in (c.name, RETRY_CONSUMER):
                continue
            if int(info[b"pending"]) == 0 and int(info[b"idle"]) >= idle_ms:
                done = await c.client.eval(
                    scripts.DELETE_IDLE_CONSUMER, 1, stream, c.group, name, idle_ms
                )
                if done:
                    removed.append(name)
                    c.log.info("consumer_removed", stream=stream, removed_consumer=name,
                               idle_s=int(info[b"idle"]) // 1000)
        return removed

    async def trim(self, stream: str) -> str | None:
        """Trim ``stream`` by the retention policy, never past what a group still needs."""
        policy = self.c.spec.retention
        if policy is None:
            return None
        floor = await safe_trim_floor(self.c.client, stream)
        if floor is None:
            return None
        cutoff: tuple[int, int] | None = None
        if policy.max_age is not None:
            cutoff = (int(time.time() * 1000 - policy.max_age * 1000), 0)
        if policy.max_len is not None:
            length = int(await self.c.client.execute_command("XLEN", stream))
            excess = length - policy.max_len
            if excess > 0:
                rows = await self.c.client.execute_command(
                    "XRANGE", stream, "-", "+", "COUNT", min(excess, 10_000)
                )
                if rows:
                    by_len = parse_id(id_successor(rows[-1][0]))
                    cutoff = by_len if cutoff is None else max(cutoff, by_len)
        if cutoff is None:
            return None
        minid = min(cutoff, floor)
        text = f"{minid[0]}-{minid[1]}"
        removed = await self.c.client.execute_command("XTRIM", stream, "MINID", "~", text)
        if removed:
            self.c.log.info("stream_trimmed", stream=stream, removed=int(removed), minid=text)
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
