"""SlotPool: at most ``concurrency`` handler slots, the queue that feeds them, and admission.

A slot is a long-lived coroutine that takes entries from the pool's queue. A slot that
finishes a fast handler takes the next entry without a task switch; an idle slot is
woken only when its help is needed, so a handler that never awaits runs a whole batch
in one slot and one that awaits fans out across slots.

Admission: a reader or a claimer :meth:`~SlotPool.reserve` s slots before it asks Redis
for entries and :meth:`~SlotPool.release` s them once the entries are queued, so the
entries taken from Redis (queued plus running) never exceed ``concurrency``.

The slot loop is the hot path: it binds what it touches to local names, reads no clock
(the watchdog and lease loop observe start times), and sends no command of its own
(acks go to the worker's :class:`~streamflow.runtime.acks.AckBuffer` buckets). Only
when metrics are exported (the counters carry a :class:`~streamflow.stats.Timing`) does
it time entries: one in ``every`` per slot, ``every`` being 1 until the handler runs
more than :data:`~streamflow.stats.TIMED_PER_SECOND` entries a second. An untimed entry
costs a countdown (about 20 ns); a timed one the clock reads and bisects of
:meth:`Timing.start() <streamflow.stats.Timing.start>` and
:meth:`~streamflow.stats.Timing.finish` (about 0.7 us), weighted by the entries it
stands for.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from ..context import current_message
from ..errors import HandlerTimeout
from ..message import Message
from ..spec import Handler
from ..stats import Counters
from .acks import AckBuffer
from .stop import StopSignal

__all__ = ["FailureHook", "SlotPool", "SlotState", "logging_handled"]

#: Called by a slot with an entry whose handler raised or timed out.
FailureHook = Callable[[Message, BaseException], Awaitable[None]]


def logging_handled(func: Handler, log: Any) -> Handler:
    """``func`` wrapped to log every handled message with its duration at debug level.

    Used only when debug logging is on, so the slot loop pays nothing for it otherwise.
    """

    async def handled(msg: Message) -> Any:
        started = time.perf_counter()
        result = await func(msg)
        log.debug("message_handled", stream=msg.stream, message_id=msg.id,
                  attempt=msg.attempt, duration_ms=round((time.perf_counter() - started) * 1e3, 3))
        return result

    return handled


class SlotState:
    """What one handler slot is doing (read by the lease loop, the watchdog and claims)."""

    __slots__ = ("leased", "msg", "seen", "started", "task", "timed_out")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task  # the slot's task (cancelled by the watchdog on timeout)
        self.msg: Message | None = None  # entry being handled, None when idle
        self.seen: Message | None = None  # msg when the watchdog/lease loop last looked
        self.started = 0.0  # monotonic time the handler was first seen running
        self.leased = 0.0  # monotonic time of the last lease renewal (or start)
        self.timed_out = False  # set by the watchdog just before it cancels the task


class SlotPool:
    """The handler slots of one consumer; see the module docstring."""

    def __init__(
        self,
        func: Handler,
        *,
        concurrency: int,
        acker: AckBuffer,
        group: str,
        keys: tuple[str, ...],
        counters: Counters,
        stop: StopSignal,
        on_failure: FailureHook,
        eager_acks: bool = False,
    ) -> None:
        self.func = func  # the handler
        # Flush an ack batch as soon as its first id arrives (job queues: a caller may be
        # waiting for the result that rides with the ack), not ``ack_interval`` later.
        self.eager_acks = eager_acks
        self.concurrency = concurrency  # most entries taken (queued + running) at once
        self.acker = acker  # where handled ids go
        self.group = group
        self.keys = keys  # the stream keys entries come from (streams and replay streams)
        self.counters = counters  # handled / high_water are counted here
        self.stop = stop  # reserve() promises nothing once set
        self.on_failure = on_failure  # the failure path (retry or dead-letter)
        self.suspects: set[bytes] = set()  # crash suspects claimed and not finished (claims)
        self.states: set[SlotState] = set()  # one per live slot coroutine
        self._queue: deque[Message] = deque()  # entries taken, waiting for a slot
        self._idle: deque[asyncio.Future[None]] = deque()  # wake-up futures of idle slots
        self._slots = 0  # slot coroutines alive
        self._waking = 0  # slots woken (or spawned) that have not yet looked at the queue
        self._busy = 0  # slots running a handler right now
        self._reserved = 0  # slots promised to reads/claims that are still in progress
        self._space = asyncio.Event()  # set when enough slots freed while someone waits
        self._space_needed = 0  # fewest free slots a waiting task wants (0: nobody waits)
        self._space_waiters: list[int] = []  # what each waiting task wants
        self._closing = False  # no new work: idle slots exit once the queue is empty
        self._tg: anyio.abc.TaskGroup | None = None  # owns the slot coroutines (open())

    # -- lifecycle ------------------------------------------------------------------------

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Own the slot coroutines for the ``async with`` body; then let them finish the queue.

        On normal exit idle slots are told to leave once the queue is empty, and the
        block waits for every slot to finish its entry.
        """
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._close()

    def wake_reservers(self) -> None:
        """Wake tasks waiting in :meth:`reserve` (they see the stop signal and return 0)."""
        self._space.set()

    def cancel(self) -> None:
        """Drop queued entries and cancel running handlers (their entries stay pending)."""
        self._queue.clear()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _close(self) -> None:
        self._closing = True
        while self._idle:
            fut = self._idle.popleft()
            if not fut.done():
                fut.set_result(None)

    # -- what is in the pool --------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Entries taken from Redis and not finished: queued plus running."""
        return len(self._queue) + self._busy

    @property
    def running(self) -> int:
        """Handlers running right now."""
        return self._busy

    @property
    def reserved(self) -> int:
        """Slots promised to reads and claims that are on their way."""
        return self._reserved

    def free_slots(self) -> int:
        """Slots not running, queued for, or promised to an entry."""
        return self.concurrency - self._busy - len(self._queue) - self._reserved

    def running_ids(self) -> set[tuple[str, bytes]]:
        """(stream, id) of every entry a handler of this pool is running now."""
        return {(st.msg.key, st.msg.raw_id) for st in self.states if st.msg is not None}

    def holds(self, key: str, raw_id: bytes) -> bool:
        """True if the entry (pending in stream ``key``) is queued or running here."""
        return any(m.raw_id == raw_id and m.key == key for m in self._queue) or (
            (key, raw_id) in self.running_ids()
        )

    def observe(self, now: float) -> None:
        """Note the start time of handlers that began since the last look.

        Slots do not read the clock per message; start times are those first seen by
        the watchdog or the lease loop, so they are late by at most one watchdog tick.
        """
        for state in self.states:
            msg = state.msg
            if msg is not state.seen:
                state.seen = msg
                state.started = state.leased = now

    # -- admission ------------------------------------------------------------------------

    async def reserve(self, most: int, least: int = 1) -> int:
        """Wait until ``least`` slots are free (or all are), then promise up to ``most``.

        Returns how many were promised (0 once the stop signal is set); the caller gives
        them back with :meth:`release` once the entries are queued (or the read failed).
        Several tasks may wait at once (read loops, the reclaimer): each wake-up wakes
        them all, and each checks its own need again.
        """
        least = max(1, min(least, most, self.concurrency))
        if self._space_waiters:
            # Others are waiting, perhaps woken by the release that let this task loop
            # round: let them look first, so that a reader going straight from one read to
            # the next cannot keep the reclaimer (or another reader) from ever getting a slot.
            await asyncio.sleep(0)
        while True:
            if self.stop.is_set:
                return 0
            free = self.free_slots()
            if free >= least or (free > 0 and self._busy == 0 and not self._queue):
                n = min(free, most)
                self._reserved += n
                return n
            self._space.clear()
            self._space_waiters.append(least)
            self._space_needed = min(self._space_waiters)
            try:
                await self._space.wait()
            finally:
                self._space_waiters.remove(least)
                self._space_needed = min(self._space_waiters, default=0)

    def release(self, n: int) -> None:
        """Give back ``n`` promised slots (their entries are queued now, or never came)."""
        self._reserved -= n
        needed = self._space_needed
        if needed and self.free_slots() >= needed:
            self._space.set()

    def submit(self, batch: list[Message]) -> None:
        """Queue entries for the slots (callers reserved the room beforehand)."""
        if not batch:
            return
        self._queue.extend(batch)
        if not self._waking:
            self._wake_one()

    def _wake_one(self) -> None:
        while self._idle:
            fut = self._idle.popleft()
            if not fut.done():
                fut.set_result(None)
                self._waking += 1
                return
        if self._slots < self.concurrency and self._tg is not None:
            self._slots += 1
            self._waking += 1
            self._tg.start_soon(self._slot)

    # -- the slot coroutine (hot path) ----------------------------------------------------

    async def _slot(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        func = self.func
        acker = self.acker
        notify = acker.notify
        buckets = {key: acker.bucket(key, self.group) for key in self.keys}
        ack_max = acker.max_batch
        first_ack = ack_max if self.eager_acks else 1  # what the first id reports as size
        suspects = self.suspects
        counters = self.counters
        on_failure = self.on_failure
        concurrency = self.concurrency
        # The histograms (None unless metrics are exported): this slot times the entry at
        # which ``left`` counts down to 0, and counts it ``weight`` times (the entries
        # since the one it timed before); off, ``left`` stays -1.
        timing = counters.timing
        left = weight = 1 if timing is not None else -1
        began = 0.0
        task = asyncio.current_task()
        state = SlotState(task)
        current_message.bind_slot(state)  # handlers' log lines carry state.msg's context
        self.states.add(state)
        self._waking -= 1
        try:
            while True:
                if not queue:
                    if self._closing:
                        return
                    fut: asyncio.Future[None] = loop.create_future()
                    self._idle.append(fut)
                    try:
                        await fut
                    except BaseException:
                        if fut.done() and not fut.cancelled():
                            self._waking -= 1
                        raise
                    self._waking -= 1
                    continue
                msg = queue.popleft()
                if queue and not self._waking:
                    self._wake_one()
                self._busy += 1
                if self._busy > counters.high_water:
                    counters.high_water = self._busy
                state.msg = msg
                if timing is not None:
                    left -= 1
                    if not left:
                        began = timing.start(msg._id, weight)
                failure: BaseException | None = None
                try:
                    await func(msg)
                except asyncio.CancelledError:
                    # The watchdog cancels a handler past its timeout; any other
                    # cancellation (shutdown) propagates.
                    if not state.timed_out or task is None or task.uncancel() > 0:
                        state.msg = None
                        self._busy -= 1
                        raise
                    state.timed_out = False
                    failure = HandlerTimeout()
                except Exception as exc:  # a handler may raise anything
                    failure = exc
                if state.timed_out and task is not None:
                    # The handler swallowed the watchdog's cancellation and returned.
                    state.timed_out = False
                    task.uncancel()
                if not left and timing is not None:
                    left = weight = timing.finish(began, weight)
                state.msg = None
                if suspects:
                    suspects.discard(msg._id)
                if failure is None:
                    counters.handled += 1
                    bucket = buckets[msg.key]
                    bucket.append(msg._id)
                    n = len(bucket)
                    if n == 1:
                        notify(first_ack)
                    elif n >= ack_max:
                        notify(n)
                    self._busy -= 1
                else:
                    try:
                        await on_failure(msg, failure)
                    finally:
                        self._busy -= 1
                needed = self._space_needed
                if needed and concurrency - self._busy - len(queue) - self._reserved >= needed:
                    self._space.set()
                    # Let the reader send its next read now, so that it travels while
                    # this slot works through the rest of the queue.
                    await asyncio.sleep(0)
        finally:
            self.states.discard(state)
            self._slots -= 1
