"""Reader: one read loop, ``XREADGROUP COUNT n BLOCK t`` over all of a handler's streams.

Each read first reserves ``n`` slots in the pool (so memory is bounded by
``concurrency``, not by the backlog) and carries the acks buffered so far in the same
write, on the loop's own connection. A consumer runs ``readers`` loops (default 2), each
asking for at most ``concurrency / (readers + 1)``, so one batch is on its way while
the slots work through another. After a read that came back short a loop asks for
twice what it got (at least 1): a read blocked on an idle stream then holds one slot,
and the reclaimer can use the rest.

Errors never end the loop: NOGROUP recreates the group, connection errors and server
restarts are retried with backoff (logged once per outage).
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from ..message import Message
from ..rawpipe import RawPipe
from ..redis_errors import Kind, classify
from ..stats import Counters
from .acks import AckBuffer
from .groups import Groups
from .ownership import Ownership
from .slots import SlotPool
from .stop import StopSignal

__all__ = ["Reader"]


class Reader:
    """The read loops of one consumer (run :meth:`run` once per loop)."""

    def __init__(
        self, client: Any, *, pool: SlotPool, acker: AckBuffer, groups: Groups,
        origin: dict[str, str], consumer: str, block_ms: int, batch: int,
        max_payload_bytes: int, counters: Counters, stop: StopSignal, log: Any,
        least: int | None = None, keys: tuple[str, ...] | None = None,
        owners: Ownership | None = None,
    ) -> None:
        self.client = client  # each loop takes its own connection from this client's pool
        self.pool = pool  # where entries go; reserve() bounds every read
        self.acker = acker  # its buffered acks ride along with each read
        self.groups = groups  # recreated after NOGROUP; last_seen kept for that
        self.consumer = consumer
        self.block_ms = block_ms
        self.batch = batch  # most entries one loop asks for in one read
        # fewest free slots a read waits for (None: half of what it asks for)
        self.least = least
        self.max_payload_bytes = max_payload_bytes
        self.counters = counters  # reads, read_passes
        self.stop = stop
        self.log = log
        # reply key -> (key, the stream a handler sees: the original one for replay streams)
        self._by_raw = {k.encode(): (k, origin.get(k, k)) for k in groups.streams}
        # On a Redis Cluster: the keys of one slot this reader reads (one XREADGROUP may not
        # span slots) and whose acks ride with its reads; None: every key, one server.
        self.keys = keys
        self._mine = frozenset(keys) if keys is not None else None
        # An ordered handler's partitions are read only by their owner: the keys of the
        # partitions this consumer owns now (None: every key).
        self.owners = owners

    async def run(self) -> None:
        """Read batches until the stop signal is set (or cancelled)."""
        pool = self.pool
        groups = self.groups
        owners = self.owners
        version = groups.version + (owners.version if owners is not None else 0)
        read_args = self._command(self._ready())
        # One of several loops of a handler (a partition's): only a read that follows an
        # empty one blocks, so a loop waiting on an idle partition holds one slot, never a
        # whole batch the busy partitions' loops could use.
        split = self.keys is not None
        quick_args = read_args[:6] + read_args[8:]  # the same read without BLOCK
        idle = False
        batch = self.batch
        want = batch
        reader = RawPipe(self.client, self.keys[0] if self.keys else None)
        mine = self._mine
        delay = 0.0
        failing = False
        self.log.debug("read_loop_started", batch=batch, block_ms=self.block_ms)
        try:
            while True:
                least = self.least if self.least is not None else want // 2
                count = await pool.reserve(want, max(1, min(least, want)))
                if not count:
                    return
                now = groups.version + (owners.version if owners is not None else 0)
                if now != version:  # a deferred group was created, a partition taken or left
                    version = now
                    read_args = self._command(self._ready())
                    quick_args = read_args[:6] + read_args[8:]
                if owners is not None and len(read_args) == 9:  # owns none of its keys now
                    pool.release(count)
                    await owners.changed(owners.version)
                    if self.stop.is_set:
                        return
                    continue
                try:
                    args = quick_args if split and not idle else read_args
                    args[5] = count
                    try:
                        reply = await self.acker.send_with(reader, args, mine)
                    except (RedisError, OSError) as exc:
                        kind = classify(exc)
                        if kind is Kind.NOGROUP:
                            self.log.warning("nogroup", error=str(exc))
                            await self.groups.recreate()
                        elif kind is Kind.TRANSIENT:
                            if not failing:
                                self.log.warning("read_failed",
                                                 error=str(exc) or type(exc).__name__)
                                failing = True
                        else:
                            self.log.error("read_failed", error=str(exc) or type(exc).__name__)
                        delay = min(max(delay * 2, 0.1), 5.0)
                        await self.stop.pause(delay)
                        continue
                    if failing:
                        self.log.info("read_recovered")
                        failing = False
                    delay = 0.0
                    got = 0
                    self.counters.read_passes += 1
                    if reply:
                        self.counters.reads += 1
                        got = self._submit_reply(reply)
                    want = batch if got >= count else max(1, min(batch, 2 * got))
                    idle = got == 0
                finally:
                    pool.release(count)
        finally:
            await reader.aclose()
            self.log.debug("read_loop_stopped", reads=self.counters.reads)

    def _ready(self) -> tuple[str, ...]:
        """The keys to read now: the groups' ready keys (of this reader's slot)."""
        ready = self.groups.ready
        if self._mine is not None:
            ready = tuple(k for k in ready if k in self._mine)
        if self.owners is not None:
            ready = tuple(k for k in ready if self.owners.allows(k))
        return ready

    def _command(self, keys: tuple[str, ...]) -> list[Any]:
        """The XREADGROUP command over ``keys`` (its COUNT, index 5, is set per read)."""
        return ["XREADGROUP", "GROUP", self.groups.group, self.consumer, "COUNT", 0,
                "BLOCK", self.block_ms, "STREAMS", *keys, *([">"] * len(keys))]

    def _submit_reply(self, reply: Any) -> int:
        """Queue the entries of an XREADGROUP reply; return how many there were."""
        items = reply.items() if isinstance(reply, dict) else reply
        group = self.groups.group
        limit = self.max_payload_bytes
        last_seen = self.groups.last_seen
        batch: list[Message] = []
        for raw_key, entries in items:
            key, stream = self._by_raw.get(raw_key) or (raw_key.decode(), raw_key.decode())
            if entries:
                for raw_id, raw_fields in entries:
                    batch.append(Message(raw_id, raw_fields, stream, group, 1, limit, key))
                last_seen[key] = entries[-1][0]
        self.pool.submit(batch)
        return len(batch)
