"""Ownership of partitions for ordered handlers: each partition is read by one consumer
of the group at a time, so the entries of a key never run in two workers at once.

A consumer owns a partition while it holds the partition's owner key
(:func:`~streamflow.keys.owner_key`, in the partition's slot) with a lease of
``visibility_timeout``, renewed every third of it. Every step it counts the group's live
consumers (unexpired consumer-name leases whose process is not provably dead, see
:mod:`streamflow.name_lease`), takes free partitions (and those of dead consumers) up to
its fair share (``ceil(partitions / live)``) and gives back what it holds beyond it: it
stops reading such a partition and releases it once nothing of it is pending to this
consumer (its entries ran and were acked). No coordinator: the owner
keys and the consumer leases are the whole protocol.

Taking a partition over first claims every entry still pending in it, of whatever
consumer, in id order (:meth:`~.claims.Claims.drain_own_pending` with ``everyone``):
what a dead owner left runs before anything read after. A restarted worker under the same
name renews its own leases at once. A lease that could not be renewed in time (the server
unreachable longer than the lease) may be taken by another consumer: this one then stops
reading the partition (logged as ``partition_lost``), though handlers already running
finish - the one window in which two workers can run entries of a key at once.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import anyio
from redis.exceptions import RedisError

from .. import scripts
from ..connection import server_time_ms
from ..keys import owner_key
from ..name_lease import judge, read_holders
from .claims import Claims
from .stop import StopSignal

__all__ = ["Ownership"]


class Ownership:
    """Which of a handler's partitions this consumer reads (see the module docstring)."""

    def __init__(
        self, client: Any, *, streams: tuple[str, ...], origin: dict[str, str], group: str,
        consumer: str, lease: float, claims: Claims, stop: StopSignal, log: Any,
    ) -> None:
        self.client = client
        self.streams = streams  # the partitions (stream keys) of the handler
        self.origin = origin  # every key read (replay streams too) -> its stream
        # partition -> its keys (itself and its replay streams)
        self._keys_of = {s: tuple(k for k, o in origin.items() if o == s) for s in streams}
        self.group = group
        self.consumer = consumer
        self.lease_ms = max(1000, int(lease * 1000))
        self.claims = claims  # takes over a partition's pending entries
        self.stop = stop
        self.log = log
        self.owned: set[str] = set()  # partitions this consumer reads
        self.releasing: set[str] = set()  # no longer read; given back once drained
        self.version = 0  # bumped on every change of ``owned``
        self._changed = anyio.Event()
        # where to start looking for free partitions: spreads consumers' first picks
        self._offset = sum(consumer.encode()) % max(1, len(streams))

    def allows(self, key: str) -> bool:
        """True if ``key`` (a partition or its replay stream) belongs to an owned partition."""
        return self.origin.get(key, key) in self.owned

    async def changed(self, version: int) -> None:
        """Return once :attr:`version` differs from ``version`` (or the stop signal is set)."""
        while self.version == version and not self.stop.is_set:
            event = self._changed
            with anyio.move_on_after(1.0):
                await event.wait()

    async def run(self) -> None:
        """Take, renew and give back partitions until stopped (the consumer releases what
        is left with :meth:`release_all` once its slots drained and its acks were sent)."""
        every = self.lease_ms / 3000
        delay = 0.0
        while not self.stop.is_set:
            try:
                await self.step()
                delay = 0.0
            except (RedisError, OSError) as exc:
                delay = min(max(delay * 2, 0.1), every)
                self.log.warning("ownership_step_failed", error=str(exc) or type(exc).__name__,
                                 retry_in=delay)
                await self.stop.pause(delay)
                continue
            await self.stop.pause(every)

    async def step(self) -> None:
        """One pass: renew, count live consumers, take up to the fair share, give back extras."""
        live = await self._live()
        for key in sorted(self.owned | self.releasing):
            if await self._take(key, live) == 0:
                self.log.warning("partition_lost", stream=key, group=self.group,
                                 hint="its lease was not renewed in time; another consumer owns it")
                self.releasing.discard(key)
                self._drop(key)
        fair = math.ceil(len(self.streams) / len(live))
        n = len(self.streams)
        for i in range(n):
            if len(self.owned) + len(self.releasing) >= fair or self.stop.is_set:
                break
            key = self.streams[(self._offset + i) % n]
            if key in self.owned or key in self.releasing:
                continue
            if await self._take(key, live):
                await self._handover(key)
        while len(self.owned) > fair:
            key = max(self.owned)
            self._drop(key)
            self.releasing.add(key)
            self.log.info("partition_releasing", stream=key, group=self.group, fair_share=fair)
        for key in sorted(self.releasing):
            if not await self._pending_to_me(key):
                await self._release(key)
                self.releasing.discard(key)

    async def release_all(self) -> None:
        """Give back every partition (at shutdown, after the slots drained)."""
        for key in sorted(self.owned | self.releasing):
            with contextlib.suppress(RedisError, OSError):  # else it expires after the lease
                await self._release(key)
        self.owned.clear()
        self.releasing.clear()

    async def _handover(self, key: str) -> None:
        """Claim every entry pending in ``key`` (and its replay stream), then read it."""
        await self.claims.drain_own_pending(self._keys_of[key], everyone=True)
        self.owned.add(key)
        self._bump()
        self.log.info("partition_taken", stream=key, group=self.group)

    def _drop(self, key: str) -> None:
        if key in self.owned:
            self.owned.discard(key)
            self._bump()

    def _bump(self) -> None:
        self.version += 1
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def _take(self, key: str, live: set[str]) -> int:
        return int(await self.client.eval(scripts.OWNER_TAKE, 1, owner_key(key, self.group),
                                          self.consumer, self.lease_ms, *sorted(live)))

    async def _release(self, key: str) -> None:
        await self.client.eval(scripts.OWNER_RELEASE, 1, owner_key(key, self.group),
                               self.consumer)

    async def _pending_to_me(self, key: str) -> bool:
        for k in self._keys_of[key]:
            rows = await self.client.execute_command("XPENDING", k, self.group, "-", "+", 1,
                                                     self.consumer)
            if rows:
                return True
        return False

    async def _live(self) -> set[str]:
        """Names of the group's consumers with an unexpired lease whose process is not
        provably dead (this one included)."""
        holders = await read_holders(self.client, self.streams[0], self.group)
        now = await server_time_ms(self.client) if holders else 0
        live = {name for name, h in holders.items() if h.expires_ms > now and judge(h) != "dead"}
        live.add(self.consumer)
        return live
