"""Consumer: wires the runtime's parts for one registered handler and owns their tasks.

::

    Consumer.run
    └── task group "outer"
        ├── renew_leases       every visibility_timeout/4: long runners keep their entries
        ├── watchdog           every min(1 s, timeout/10): cancel handlers past timeout
        ├── Maintenance.run    prune idle consumers, retention trimming
        ├── Groups.create_deferred   replay-stream groups the server had no memory for
        └── SlotPool.open      handler slots, spawned on demand up to `concurrency`
            └── cancel scope "intake"
                └── task group
                    ├── (first, awaited) Claims.drain_own_pending
                    ├── Reader.run x readers (on a cluster: one per slot of its keys)
                    └── Reclaimer.run

:meth:`stop` sets the one :class:`~.stop.StopSignal` the parts share: readers and the
reclaimer return after their current step (a read already sent returns within
``block_ms`` and its entries are handled), the slots finish what was taken, and
:attr:`drained` is set. :meth:`cancel_handlers` cancels what still runs.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
import structlog
from redis.exceptions import RedisError

from ..clustering import is_cluster, key_slot
from ..config import Settings
from ..keys import hash_tag, replay_stream
from ..spec import HandlerSpec
from ..stats import Counters, HandlerStats
from .acks import AckBuffer
from .claims import Claims
from .failures import Failures
from .groups import Groups
from .leases import renew_leases, watchdog
from .maintenance import Maintenance
from .ordering import KeyOrder
from .ownership import Ownership
from .reader import Reader
from .reclaimer import Reclaimer
from .slots import SlotPool, logging_handled
from .stop import StopSignal

__all__ = ["Consumer"]

log = structlog.get_logger("streamflow.consumer")


class Consumer:
    """Reads, dispatches, acks, retries and dead-letters entries for one handler."""

    def __init__(
        self, spec: HandlerSpec, client: object, acker: AckBuffer, settings: Settings,
        consumer_name: str,
    ) -> None:
        self.spec = spec  # what to run and with which policies
        self.name = consumer_name  # this process's consumer name in every group
        self.group = spec.group
        self.streams = spec.streams
        # Each stream's replay stream: `dlq replay` writes this group's records there, so a
        # replayed entry reaches this handler and no other group of the stream.
        replays = {replay_stream(s, self.group): s for s in self.streams}
        self.keys = self.streams + tuple(replays)  # every stream key this consumer reads
        origin = {**{s: s for s in self.streams}, **replays}  # key -> the stream handlers see
        self.concurrency = settings.concurrency or spec.concurrency  # handler slots
        self.settings = settings
        # Everything the parts count (snapshot: stats()); with the metrics exporter on, the
        # slots also fill duration and latency histograms.
        self.counters = Counters(histograms=settings.metrics_port is not None)
        self.stop_signal = StopSignal()  # the one "no new work" flag of every part
        self.drained = anyio.Event()  # set when run() has finished all its work
        self.log = log.bind(group=self.group, consumer=self.name, handler=spec.name)
        self._intake_scope: anyio.CancelScope | None = None  # readers and reclaimer

        common = {"counters": self.counters, "log": self.log}
        self.failures = Failures(client, spec, group=self.group, consumer=self.name,
                                 reclaim_interval=settings.reclaim_interval, **common)
        func = spec.func
        if _debug_enabled(self.log):
            func = logging_handled(func, self.log)
        on_failure = self.failures.handle
        # ordered=True: one entry per key at a time, retried in place (runtime/ordering.py)
        self.order: KeyOrder | None = None
        if spec.ordered:
            self.order = KeyOrder(func, spec, on_failure=on_failure, counters=self.counters,
                                  log=self.log)
            func, on_failure = self.order.handle, self.order.on_failure
        self.pool = SlotPool(
            func, concurrency=self.concurrency, acker=acker, group=self.group,
            keys=self.keys, counters=self.counters, stop=self.stop_signal,
            on_failure=on_failure, eager_acks=spec.completion is not None,
        )
        if spec.completion is not None:
            for key in self.keys:
                acker.use_completion(key, self.group, spec.completion, consumer_name)
        # A replay stream holds only what an operator replayed: always read from its start.
        starts = {s: spec.start_id for s in self.streams} | dict.fromkeys(replays, "0")
        self.groups = Groups(client, starts=starts, group=self.group, stop=self.stop_signal,
                             log=self.log, optional=frozenset(replays))
        self.claims = Claims(
            client, spec, pool=self.pool, failures=self.failures, origin=origin,
            group=self.group, consumer=self.name, max_payload_bytes=settings.max_payload_bytes,
            stop=self.stop_signal, **common,
        )
        # ordered=True: only the owner of a partition reads it (runtime/ownership.py)
        self.owners: Ownership | None = None
        if spec.ordered:
            self.owners = Ownership(
                client, streams=self.streams, origin=origin, group=self.group,
                consumer=self.name, lease=settings.visibility_timeout, claims=self.claims,
                stop=self.stop_signal, log=self.log,
            )
        # One XREADGROUP may only span one cluster slot: on a cluster, one reader per slot
        # of this consumer's keys (each partition's keys share a slot), one loop each; on
        # one server one reader over every key, with `readers` loops.
        # Partitioned streams (every key hash-tagged) get one reader per partition on one
        # server too: XREADGROUP's COUNT is per stream, so one read over N partitions could
        # bring N times the slots it reserved.
        split = is_cluster(client) or (
            len(self.streams) > 1 and all(hash_tag(k) != k for k in self.keys))
        self.slot_keys = _by_slot(self.keys) if split else [self.keys]
        self.loops = settings.readers if len(self.slot_keys) == 1 else 1
        # Each read loop asks for at most a share of the slots (a third with two loops),
        # so the next read is already on its way while the slots work through a batch.
        batch = max(1, min(settings.batch_size, self.concurrency // (settings.readers + 1)))
        self.readers = [
            Reader(
                client, pool=self.pool, acker=acker, groups=self.groups, origin=origin,
                consumer=self.name,
                block_ms=settings.block_ms, batch=batch,
                max_payload_bytes=settings.max_payload_bytes, stop=self.stop_signal, **common,
                # A job queue's handlers are slow next to a read: a read waits for a twentieth
                # of the slots, not half a batch, so slots do not idle waiting for company.
                least=max(1, self.concurrency // 20) if spec.completion is not None else None,
                keys=keys if split else None, owners=self.owners,
            )
            for keys in self.slot_keys
        ]
        self.reclaimer = Reclaimer(
            client, spec, pool=self.pool, claims=self.claims, groups=self.groups,
            group=self.group, consumer=self.name, interval=settings.reclaim_interval,
            visibility_timeout=settings.visibility_timeout, stop=self.stop_signal, **common,
        )
        self._acker = acker
        self.maintenance = Maintenance(client, spec, consumer=self.name,
                                       dead_consumer_after=settings.dead_consumer_after,
                                       log=self.log, counters=self.counters, keys=self.keys)
        self._client = client

    # -- lifecycle ------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Create groups, drain this consumer's own pending entries, then read until stopped."""
        try:
            await self.groups.ensure()
            task_status.started()
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._leases)
                if self.order is None:  # an ordered handler times each attempt itself
                    outer.start_soon(watchdog, self.pool, self.spec.timeout, self.spec.timeout_of)
                outer.start_soon(self.maintenance.run, self.stop_signal)
                outer.start_soon(self.groups.create_deferred)
                async with self.pool.open():
                    with anyio.CancelScope() as intake_scope:
                        self._intake_scope = intake_scope
                        if not self.stop_signal.is_set:
                            async with anyio.create_task_group() as intake:
                                if self.owners is not None:
                                    # owned partitions' pending entries are claimed as each
                                    # is taken; nothing is parked for the reclaimer
                                    intake.start_soon(self.owners.run)
                                else:
                                    await self.claims.drain_own_pending(self.groups.ready)
                                for reader in self.readers:
                                    for _ in range(self.loops):
                                        intake.start_soon(reader.run)
                                if self.owners is None:
                                    intake.start_soon(self.reclaimer.run)
                if self.owners is not None:
                    await self._release_partitions()
                outer.cancel_scope.cancel()
        finally:
            self.drained.set()

    async def _release_partitions(self) -> None:
        """After the slots drained: send the acks, then give the partitions back (a
        new owner would otherwise run again what ran here)."""
        assert self.owners is not None
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._acker.flush()
            except (RedisError, OSError) as exc:
                self.log.warning("ack_flush_failed", error=str(exc) or type(exc).__name__)
            await self.owners.release_all()

    async def _leases(self) -> None:
        await renew_leases(self.pool, self._client, group=self.group, consumer=self.name,
                           every=self.settings.visibility_timeout / 4, log=self.log)

    def stop(self) -> None:
        """Stop reading and reclaiming; slots finish the entries already taken, then exit.

        A read already on its way is not cancelled (that would strand the entries Redis
        delivered to it): it returns within ``block_ms`` and its entries are handled.
        """
        self.stop_signal.set()
        self.pool.wake_reservers()

    def cancel_handlers(self) -> None:
        """Cancel running handlers now (their entries stay pending and will be redelivered)."""
        self.stop()
        if self._intake_scope is not None:
            self._intake_scope.cancel()
        self.pool.cancel()

    @property
    def in_flight(self) -> int:
        """Entries taken from Redis and not finished: queued plus running."""
        return self.pool.in_flight

    def stats(self) -> HandlerStats:
        """A snapshot of this consumer's counters and load."""
        return HandlerStats.of(
            self.counters, handler=self.spec.name, group=self.group, streams=self.streams,
            concurrency=self.concurrency, in_flight=self.pool.in_flight,
            running=self.pool.running, reserved=self.pool.reserved,
        )


def _by_slot(keys: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``keys`` grouped by cluster slot, in first-seen order."""
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key), []).append(key)
    return [tuple(g) for g in groups.values()]


def _debug_enabled(bound: Any) -> bool:
    """True when structlog was configured (e.g. ``--log-level debug``) to emit ``bound``'s
    debug lines; an application that never configured structlog gets no per-message line."""
    if not structlog.is_configured():
        return False
    check = getattr(bound, "is_enabled_for", None)
    return bool(check(logging.DEBUG)) if check is not None else False
