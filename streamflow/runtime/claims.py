"""Claims: taking pending entries over with XCLAIM and handing them to the slots.

Three callers: the reclaimer (due retries and dead consumers' entries), and the
consumer at start-up for its own pending entries (a restart under the same name).
Every claim reserves slots first, so claimed entries never exceed ``concurrency``.

XCLAIM counts a delivery, so a claimed entry's attempt is its delivery count + 1; one
that is out of attempts goes straight to the dead-letter stream (a worker kept dying
on it). Ids XCLAIM did not return were taken by another worker meanwhile, or deleted
from the stream (Redis 7+ drops them from the PEL): the deleted ones are acked and
counted as trimmed.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from ..message import Message
from ..redis_errors import Kind, classify
from ..spec import HandlerSpec
from ..stats import Counters
from .failures import Failures
from .slots import SlotPool
from .stop import StopSignal

__all__ = ["Claims", "parse_entries"]

#: Entries asked for per XPENDING page of the own-pending drain.
OWN_PAGE = 1000


def parse_entries(entries: list[Any] | None) -> list[tuple[bytes, list[bytes] | None]]:
    """Normalise a list of ``[id, fields]`` stream entries from a raw reply."""
    if not entries:
        return []
    return [(e[0], e[1]) for e in entries]


class Claims:
    """Claims entries for one consumer and feeds them to its slot pool."""

    def __init__(
        self, client: Any, spec: HandlerSpec, *, pool: SlotPool, failures: Failures,
        origin: dict[str, str], group: str, consumer: str, max_payload_bytes: int,
        counters: Counters, stop: StopSignal, log: Any,
    ) -> None:
        self.client = client  # shared redis.asyncio client
        self.spec = spec  # for max_attempts
        self.pool = pool  # where claimed entries run
        self.failures = failures  # dead-letters entries out of attempts, acks deleted ones
        self.origin = origin  # stream key -> the stream its entries belong to (replay streams)
        self.group = group
        self.consumer = consumer  # claims are made for this consumer name
        self.max_payload_bytes = max_payload_bytes  # handed to every Message
        self.counters = counters  # reclaimed
        self.stop = stop
        self.log = log
        self._draining_after_error = False  # the drain hit an error and has not read since

    async def claim(self, stream: str, due: list[tuple[bytes, int, int]]) -> int:
        """XCLAIM ``due`` ((id, min idle ms, deliveries) rows) as slots free up; return how many."""
        got = 0
        pool = self.pool
        while due:
            n = await pool.reserve(len(due))
            if not n:
                break
            chunk, due = due[:n], due[n:]
            try:
                pipe = self.client.pipeline(transaction=False)
                for raw_id, need, _ in chunk:
                    pipe.execute_command("XCLAIM", stream, self.group, self.consumer, need, raw_id)
                replies = await pipe.execute()
                claimed: list[Any] = [entry for reply in replies for entry in (reply or [])]
                attempts = {raw_id: d + 1 for raw_id, _, d in chunk}
                if claimed:
                    self.log.info("reclaimed", stream=stream, entries=len(claimed))
                await self.dispatch(stream, claimed, attempts)
                got += len(claimed)
            finally:
                pool.release(n)
        return got

    async def dispatch(
        self, stream: str, claimed: list[Any] | None, attempts: dict[bytes, int]
    ) -> None:
        """Run entries XCLAIM returned; dead-letter those out of attempts; ack deleted ones.

        ``attempts`` maps every id that was asked for to its attempt number.
        """
        batch: list[Message] = []
        limit = self.max_payload_bytes
        retry_for = self.spec.retry_for
        key, stream = stream, self.origin.get(stream, stream)
        entries = parse_entries(claimed)
        self.counters.reclaimed += len(entries)
        returned = {raw_id for raw_id, _ in entries}
        missing = [raw_id for raw_id in attempts if raw_id not in returned]
        if missing:
            await self.failures.count_deleted(key, missing)
        for raw_id, raw_fields in entries:
            if raw_fields is None:
                await self.failures.ack_trimmed(key, [raw_id])
                continue
            msg = Message(raw_id, raw_fields, stream, self.group, attempts.get(raw_id, 1), limit,
                          key)
            max_attempts = retry_for(raw_fields).max_attempts
            if msg.attempt > max_attempts:
                try:
                    await self.failures.dead_letter(
                        msg, "MaxAttemptsExceeded",
                        f"delivered {msg.attempt} times, more than max_attempts="
                        f"{max_attempts} (a worker may have died while running it)",
                    )
                except (RedisError, OSError) as exc:
                    # Stays pending: reclaimed and dead-lettered again later. The other
                    # entries of this claim still run.
                    self.log.error("dead_letter_failed", stream=stream, message_id=msg.id,
                                   attempt=msg.attempt, error=str(exc))
                continue
            batch.append(msg)
        self.pool.submit(batch)

    async def drain_own_pending(self, streams: tuple[str, ...], *, everyone: bool = False) -> None:
        """Take back this consumer's own pending entries (after a restart under its name).

        Walks the consumer's PEL once per stream, in id order, claiming (XCLAIM, which
        counts the delivery) as many entries at a time as there are free slots. A
        connection error or a server restart on the way is ridden out with backoff: the
        walk resumes after the last id it handed over. ``everyone``: every consumer's
        pending entries (an ordered handler taking a partition over).
        """
        for stream in streams:
            cursor = ["-"]  # XPENDING start of what is not handed over yet
            delay = 0.0
            self._draining_after_error = False
            while not self.stop.is_set:
                try:
                    done = await self._drain_page(stream, cursor, everyone)
                except (RedisError, OSError) as exc:
                    kind = classify(exc)
                    if kind is Kind.NOGROUP:
                        break  # nothing of ours is pending in a group that is gone
                    if kind not in (Kind.TRANSIENT, Kind.OOM):
                        raise
                    if not self._draining_after_error:
                        self.log.warning("own_pending_drain_failed", stream=stream,
                                         error=str(exc) or type(exc).__name__,
                                         hint="retrying with backoff")
                        self._draining_after_error = True
                    delay = min(max(delay * 2, 0.1), 5.0)
                    await self.stop.pause(delay)
                    continue
                delay = 0.0
                if done:
                    break

    async def _drain_page(self, stream: str, cursor: list[str], everyone: bool = False) -> bool:
        """Claim one XPENDING page of own entries from ``cursor[0]``; True when none are left.

        ``cursor[0]`` moves past each chunk only once the chunk was handed to the slots,
        so a retry after an error claims again exactly what was not handed over.
        """
        rows = await self.client.execute_command(
            "XPENDING", stream, self.group, cursor[0], "+", OWN_PAGE,
            *(() if everyone else (self.consumer,)),
        )
        if self._draining_after_error:
            self.log.info("own_pending_drain_recovered", stream=stream)
            self._draining_after_error = False
        if not rows:
            return True
        self.log.info("own_pending_found", stream=stream, entries=len(rows))
        done = 0
        while done < len(rows):
            n = await self.pool.reserve(len(rows) - done)
            if not n:
                return True
            chunk = rows[done:done + n]
            try:
                attempts = {r[0]: int(r[3]) + 1 for r in chunk}
                claimed = await self.client.execute_command(
                    "XCLAIM", stream, self.group, self.consumer, 0, *[r[0] for r in chunk]
                )
                await self.dispatch(stream, claimed, attempts)
            finally:
                self.pool.release(n)
            done += n
            cursor[0] = "(" + chunk[-1][0].decode()
        return len(rows) < OWN_PAGE
