"""Consumer: the read loop and bounded handler dispatch for one handler's group of streams.

One :class:`Consumer` serves one registered handler. It owns

* reader loop(s): ``XREADGROUP COUNT n BLOCK t`` over all the handler's streams in one
  call, where ``n`` never exceeds the free handler slots (memory stays bounded);
* a pool of handler slots (at most ``concurrency``): long-lived coroutines that take
  entries from a local queue. A slot that finishes a fast handler takes the next entry
  without a task switch; an idle slot is woken only when its help is needed;
* the failure path: retry later (the entry is parked on the group's retry consumer
  until its backoff elapses), or dead-letter it;
* a lease loop that keeps long-running entries from being reclaimed by other workers;
* a :class:`~streamflow.reclaimer.Reclaimer` that feeds due retries and entries of
  dead consumers into the same slots.

Successful entries are acked through the worker's shared :class:`~streamflow.acks.AckBuffer`.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections import deque
from typing import Any

import anyio
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import scripts
from .acks import AckBuffer
from .app import HandlerSpec
from .config import Settings
from .deadletter import build_record
from .errors import ConfigError, PayloadError, Reject, ServerUnavailable
from .message import Message
from .rawpipe import RawPipe

__all__ = ["RETRY_CONSUMER", "Consumer", "parse_entries"]

log = structlog.get_logger("streamflow.consumer")

#: Pseudo-consumer that holds failed entries while their retry backoff runs.
RETRY_CONSUMER = "streamflow:retry"

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


def parse_entries(entries: list[Any] | None) -> list[tuple[bytes, list[bytes] | None]]:
    """Normalise a list of ``[id, fields]`` stream entries from a raw reply."""
    if not entries:
        return []
    return [(e[0], e[1]) for e in entries]


class Consumer:
    """Reads, dispatches, acks, retries and dead-letters entries for one handler."""

    def __init__(
        self,
        spec: HandlerSpec,
        client: Any,
        acker: AckBuffer,
        settings: Settings,
        consumer_name: str,
    ) -> None:
        self.spec = spec  # what to run and with which policies
        self.client = client  # shared redis.asyncio client
        self.acker = acker  # worker-wide ack batcher
        self.settings = settings
        self.name = consumer_name  # this process's consumer name in every group
        self.group = spec.group
        self.streams = list(spec.streams)
        self.concurrency = settings.concurrency or spec.concurrency  # handler slots
        self._stream_by_raw = {s.encode(): s for s in self.streams}  # reply key -> name
        self._last_seen: dict[str, bytes] = {}  # newest id read per stream (for NOGROUP)
        self.log = log.bind(group=self.group, consumer=self.name, handler=spec.name)

        # -- handler slots --------------------------------------------------------------
        self._queue: deque[Message] = deque()  # entries read, waiting for a slot
        self._idle: deque[asyncio.Future[None]] = deque()  # wake-up futures of idle slots
        self._slots = 0  # slot coroutines alive
        self._waking = 0  # slots woken (or spawned) that have not yet looked at the queue
        self._busy = 0  # slots running a handler right now
        self._reserved = 0  # slots promised to reads/claims that are still in progress
        self._slot_states: set[_SlotState] = set()  # one per live slot coroutine
        self._suspects: set[bytes] = set()  # crash suspects claimed and not finished
        self._space = asyncio.Event()  # set when enough slots freed while a reader waits
        self._space_needed = 0  # fewest free slots a waiting task wants (0: nobody waits)
        self._space_waiters: list[int] = []  # what each waiting task wants
        self._closing = False  # no new work: idle slots exit once the queue is empty
        self._work_tg: anyio.abc.TaskGroup | None = None  # owns the slot coroutines
        self._intake_scope: anyio.CancelScope | None = None  # readers and reclaimer
        self._stopping = False  # no new reads or claims once set
        self.stop_requested = anyio.Event()  # the same, for tasks that sleep between passes
        self.drained = anyio.Event()  # set when run() has finished all its work

        # -- counters (read by tests, `info` and benchmarks) ------------------------------
        self.high_water = 0  # most handlers ever in flight at once
        self.handled = 0  # handlers that returned
        self.failed = 0  # handler failures (exceptions and timeouts)
        self.retried = 0  # failures parked for a retry
        self.dead_lettered = 0  # entries moved to the dead-letter stream
        self.trimmed = 0  # pending entries found deleted from their stream
        self.reads = 0  # XREADGROUP calls that returned entries

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Create groups, drain this consumer's own pending entries, then read until stopped."""
        from .reclaimer import Reclaimer

        try:
            await self.ensure_groups()
            task_status.started()
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._lease_loop)
                outer.start_soon(self._watchdog)
                async with anyio.create_task_group() as work:
                    self._work_tg = work
                    with anyio.CancelScope() as intake_scope:
                        self._intake_scope = intake_scope
                        if not self._stopping:
                            async with anyio.create_task_group() as intake:
                                await self._drain_own_pending()
                                for _ in range(self.settings.readers):
                                    intake.start_soon(self._read_loop)
                                intake.start_soon(Reclaimer(self).run)
                    self._close_slots()
                outer.cancel_scope.cancel()
        finally:
            self.drained.set()

    def stop(self) -> None:
        """Stop reading and reclaiming; slots finish the entries already taken, then exit.

        A read already on its way is not cancelled (that would strand the entries Redis
        delivered to it): it returns within ``block_ms`` and its entries are handled.
        """
        self._stopping = True
        self.stop_requested.set()
        self._space.set()  # wake readers waiting for free slots

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the consumer is asked to stop."""
        with anyio.move_on_after(seconds):
            await self.stop_requested.wait()

    def cancel_handlers(self) -> None:
        """Cancel running handlers now (their entries stay pending and will be redelivered)."""
        self._stopping = True
        self.stop_requested.set()
        if self._intake_scope is not None:
            self._intake_scope.cancel()
        self._queue.clear()
        if self._work_tg is not None:
            self._work_tg.cancel_scope.cancel()

    @property
    def in_flight(self) -> int:
        """Entries taken from Redis and not finished: queued plus running."""
        return len(self._queue) + self._busy

    # -- groups ---------------------------------------------------------------------------

    async def ensure_groups(self, start_ids: dict[str, bytes | str] | None = None) -> None:
        """Create the group on every stream (MKSTREAM); an existing group is left as it is.

        A server out of memory refuses XGROUP CREATE even for a group that exists; then
        the group is looked up instead, and creation is retried with backoff (logged)
        while it does not exist yet, rather than exiting into a crash loop.
        """
        for stream in self.streams:
            start = (start_ids or {}).get(stream, self.spec.start_id)
            delay = 0.5
            while not await self._create_group(stream, start, recreated=bool(start_ids)):
                await self._pause(delay)
                if self._stopping:
                    return
                delay = min(delay * 2, 10.0)

    async def _group_exists(self, stream: str) -> bool:
        try:
            groups = await self.client.execute_command("XINFO", "GROUPS", stream)
        except ResponseError:
            return False
        names = {dict(zip(g[::2], g[1::2], strict=True)).get(b"name") for g in groups or []}
        return self.group.encode() in names

    async def _create_group(self, stream: str, start: bytes | str, *, recreated: bool) -> bool:
        """One attempt; True when the group exists afterwards."""
        try:
            await self.client.execute_command(
                "XGROUP", "CREATE", stream, self.group, start, "MKSTREAM"
            )
            if recreated:
                self.log.warning("group_recreated", stream=stream, start_id=_s(start))
            else:
                self.log.info("group_created", stream=stream, start_id=_s(start))
            return True
        except ResponseError as exc:
            text = str(exc)
            if "BUSYGROUP" in text:
                return True
            if isinstance(exc, OutOfMemoryError) or text.startswith("OOM"):
                if await self._group_exists(stream):
                    return True
                self.log.error("group_create_refused", stream=stream, error=text,
                               hint="the server is out of memory; retrying")
                return False
            if "WRONGTYPE" in text:
                raise ConfigError(
                    "stream name", f"key {stream!r} exists and is not a stream"
                ) from None
            if "NOPERM" in text:
                raise ServerUnavailable(
                    f"the Redis user may not create group {self.group!r} on {stream!r}: {text}"
                ) from None
            raise

    async def _recreate_groups(self) -> None:
        """After NOGROUP (server flushed or restarted empty, group or stream deleted)."""
        starts: dict[str, bytes | str] = {}
        for stream in self.streams:
            starts[stream] = self._last_seen.get(stream, b"0")
        await self.ensure_groups(starts)

    # -- reading --------------------------------------------------------------------------

    def free_slots(self) -> int:
        """Slots not running, queued for, or promised to an entry."""
        return self.concurrency - self._busy - len(self._queue) - self._reserved

    async def reserve(self, most: int, least: int = 1) -> int:
        """Wait until ``least`` slots are free (or all are), then promise up to ``most``.

        Returns how many were promised (0 once the consumer is stopping); the caller gives
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
            if self._stopping:
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

    def holds(self, stream: str, raw_id: bytes) -> bool:
        """True if the entry is queued or running in this consumer."""
        return any(m.raw_id == raw_id and m.stream == stream for m in self._queue) or (
            (stream, raw_id) in self.running_ids()
        )

    def running_ids(self) -> set[tuple[str, bytes]]:
        """(stream, id) of every entry a handler of this process is running now."""
        return {(st.msg.stream, st.msg.raw_id) for st in self._slot_states if st.msg is not None}

    async def _read_loop(self) -> None:
        """Read batches until cancelled; each read also carries the acks buffered so far."""
        streams = self.streams
        read_args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.name, "COUNT", 0,
                                "BLOCK", self.settings.block_ms, "STREAMS", *streams,
                                *([">"] * len(streams))]
        # Each read loop asks for at most a share of the slots (a third with two loops), so
        # the next read is already on its way while the slots work through the previous batch.
        readers = self.settings.readers
        batch = max(1, min(self.settings.batch_size, self.concurrency // (readers + 1)))
        # After a read that came back short, ask for twice what it returned (at least 1):
        # a read blocked on an idle stream then holds one slot instead of a batch, and the
        # reclaimer can use the rest. A full read (a backlog) asks for a whole batch again.
        want = batch
        reader = RawPipe(self.client)
        delay = 0.0
        failing = False
        try:
            while True:
                count = await self.reserve(want, max(1, want // 2))
                if not count:
                    return
                try:
                    read_args[5] = count
                    try:
                        reply = await self.acker.send_with(reader, read_args)
                    except ResponseError as exc:
                        if "NOGROUP" in str(exc):
                            self.log.warning("nogroup", error=str(exc))
                            await self._recreate_groups()
                        else:
                            self.log.error("read_failed", error=str(exc))
                        delay = min(max(delay * 2, 0.1), 5.0)
                        await self._pause(delay)
                        continue
                    except _TRANSIENT as exc:
                        if not failing:
                            self.log.warning("read_failed", error=str(exc) or type(exc).__name__)
                            failing = True
                        delay = min(max(delay * 2, 0.1), 5.0)
                        await self._pause(delay)
                        continue
                    if failing:
                        self.log.info("read_recovered")
                        failing = False
                    delay = 0.0
                    got = 0
                    if reply:
                        self.reads += 1
                        got = self._submit_reply(reply)
                    want = batch if got >= count else max(1, min(batch, 2 * got))
                finally:
                    self.release(count)
        finally:
            await reader.aclose()

    def _submit_reply(self, reply: Any) -> int:
        """Queue the entries of an XREADGROUP reply; return how many there were."""
        items = reply.items() if isinstance(reply, dict) else reply
        group = self.group
        limit = self.settings.max_payload_bytes
        batch: list[Message] = []
        for raw_stream, entries in items:
            stream = self._stream_by_raw.get(raw_stream) or raw_stream.decode()
            if entries:
                for raw_id, raw_fields in entries:
                    batch.append(Message(raw_id, raw_fields, stream, group, 1, limit))
                self._last_seen[stream] = entries[-1][0]
        self.submit(batch)
        return len(batch)

    async def _drain_own_pending(self) -> None:
        """Take back this consumer's own pending entries (after a restart under its name).

        Walks the consumer's PEL once, in id order, claiming (XCLAIM, which counts the
        delivery) as many entries at a time as there are free slots.
        """
        page = 1000
        for stream in self.streams:
            start = "-"
            while not self._stopping:
                try:
                    rows = await self.client.execute_command(
                        "XPENDING", stream, self.group, start, "+", page, self.name
                    )
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        break
                    raise
                if not rows:
                    break
                self.log.info("own_pending_found", stream=stream, entries=len(rows))
                done = 0
                while done < len(rows):
                    n = await self.reserve(len(rows) - done)
                    if not n:
                        return
                    chunk = rows[done:done + n]
                    done += n
                    try:
                        attempts = {r[0]: int(r[3]) + 1 for r in chunk}
                        claimed = await self.client.execute_command(
                            "XCLAIM", stream, self.group, self.name, 0, *[r[0] for r in chunk]
                        )
                        await self.dispatch_claimed(stream, claimed, attempts)
                    finally:
                        self.release(n)
                if len(rows) < page:
                    break
                start = "(" + rows[-1][0].decode()

    async def dispatch_claimed(
        self, stream: str, claimed: list[Any] | None, attempts: dict[bytes, int]
    ) -> None:
        """Run entries XCLAIM returned; dead-letter those out of attempts; ack deleted ones.

        ``attempts`` maps every id that was asked for to its attempt number. Ids that
        XCLAIM did not return were either claimed by another worker meanwhile or deleted
        from the stream (Redis 7+ then drops them from the PEL silently): the deleted
        ones are counted as trimmed.
        """
        batch: list[Message] = []
        limit = self.settings.max_payload_bytes
        entries = parse_entries(claimed)
        returned = {raw_id for raw_id, _ in entries}
        missing = [raw_id for raw_id in attempts if raw_id not in returned]
        if missing:
            await self._count_deleted(stream, missing)
        for raw_id, raw_fields in entries:
            if raw_fields is None:
                await self.ack_trimmed(stream, [raw_id])
                continue
            msg = Message(raw_id, raw_fields, stream, self.group, attempts.get(raw_id, 1), limit)
            if msg.attempt > self.spec.retry.max_attempts:
                try:
                    await self.dead_letter(
                        msg, "MaxAttemptsExceeded",
                        f"delivered {msg.attempt} times, more than max_attempts="
                        f"{self.spec.retry.max_attempts} (a worker may have died while running it)",
                    )
                except (RedisError, OSError) as exc:
                    # Stays pending: reclaimed and dead-lettered again later. The other
                    # entries of this claim still run.
                    self.log.error("dead_letter_failed", stream=stream, message_id=msg.id,
                                   attempt=msg.attempt, error=str(exc))
                continue
            batch.append(msg)
        self.submit(batch)

    async def _count_deleted(self, stream: str, raw_ids: list[bytes]) -> None:
        """Of ids a claim did not return, ack and count those no longer in the stream."""
        pipe = self.client.pipeline(transaction=False)
        for raw_id in raw_ids:
            pipe.execute_command("XRANGE", stream, raw_id, raw_id)
        exists = await pipe.execute()
        gone = [raw_id for raw_id, rows in zip(raw_ids, exists, strict=True) if not rows]
        if gone:
            await self.ack_trimmed(stream, gone)

    async def ack_trimmed(self, stream: str, raw_ids: list[bytes]) -> None:
        """Ack pending entries whose content was deleted or trimmed from the stream."""
        if not raw_ids:
            return
        self.trimmed += len(raw_ids)
        self.log.warning("pending_entries_trimmed", stream=stream, count=len(raw_ids),
                         ids=[i.decode() for i in raw_ids[:10]])
        await self.client.execute_command("XACK", stream, self.group, *raw_ids)

    # -- handler slots --------------------------------------------------------------------

    def submit(self, batch: list[Message]) -> None:
        """Queue entries for the handler slots (callers reserved the room beforehand)."""
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
        if self._slots < self.concurrency and self._work_tg is not None:
            self._slots += 1
            self._waking += 1
            self._work_tg.start_soon(self._slot)

    def _close_slots(self) -> None:
        self._closing = True
        while self._idle:
            fut = self._idle.popleft()
            if not fut.done():
                fut.set_result(None)

    async def _slot(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        func = self.spec.func
        acker = self.acker
        notify = acker.notify
        buckets = {stream: acker.bucket(stream, self.group) for stream in self.streams}
        ack_max = acker.max_batch
        suspects = self._suspects
        concurrency = self.concurrency
        task = asyncio.current_task()
        state = _SlotState(task)
        self._slot_states.add(state)
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
                if self._busy > self.high_water:
                    self.high_water = self._busy
                state.msg = msg
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
                state.msg = None
                if suspects:
                    suspects.discard(msg._id)
                if failure is None:
                    self.handled += 1
                    bucket = buckets[msg.stream]
                    bucket.append(msg._id)
                    n = len(bucket)
                    if n == 1 or n >= ack_max:
                        notify(n)
                    self._busy -= 1
                else:
                    try:
                        await self._on_failure(msg, failure)
                    finally:
                        self._busy -= 1
                needed = self._space_needed
                if needed and concurrency - self._busy - len(queue) - self._reserved >= needed:
                    self._space.set()
                    # Let the reader send its next read now, so that it travels while
                    # this slot works through the rest of the queue.
                    await asyncio.sleep(0)
        finally:
            self._slot_states.discard(state)
            self._slots -= 1

    def _observe(self, now: float) -> None:
        """Note the start time of handlers that began since the last look.

        Slots do not read the clock per message; start times are those first seen by
        the watchdog or the lease loop, so they are late by at most one watchdog tick.
        """
        for state in self._slot_states:
            msg = state.msg
            if msg is not state.seen:
                state.seen = msg
                state.started = state.leased = now

    async def _watchdog(self) -> None:
        """Cancel handlers that run longer than the handler timeout.

        Checked every ``min(1 s, timeout / 10)``: a handler is cancelled between
        ``timeout`` and ``timeout`` plus two ticks after it started.
        """
        timeout = self.spec.timeout
        tick = min(1.0, timeout / 10) if timeout is not None else 1.0
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            self._observe(now)
            if timeout is None:
                continue
            for state in list(self._slot_states):
                overdue = state.msg is not None and now - state.started >= timeout
                if overdue and not state.timed_out and state.task is not None:
                    state.timed_out = True
                    state.task.cancel()

    # -- failures -------------------------------------------------------------------------

    async def _on_failure(self, msg: Message, exc: BaseException) -> None:
        self.failed += 1
        retry = self.spec.retry
        fields = {"stream": msg.stream, "message_id": msg.id, "attempt": msg.attempt}
        if isinstance(exc, HandlerTimeout):
            reason = f"handler timed out after {self.spec.timeout:g}s"
            exc_type = "HandlerTimeout"
        else:
            reason = str(exc) or type(exc).__name__
            exc_type = type(exc).__name__
        try:
            if isinstance(exc, PayloadError | Reject):
                self.log.warning("message_rejected", **fields, error_type=exc_type, error=reason)
                await self.dead_letter(msg, exc_type, reason, exc)
            elif msg.attempt >= retry.max_attempts:
                self.log.error("handler_failed_final", **fields, error_type=exc_type,
                               error=reason, exc_info=exc)
                await self.dead_letter(msg, exc_type, reason, exc)
            else:
                delay = retry.base_delay(msg.attempt)
                self.log.warning("handler_failed", **fields, error_type=exc_type, error=reason,
                                 retry_in=round(delay, 3), exc_info=exc)
                moved = await self.client.eval(
                    scripts.CLAIM_IF_OWNED, 1, msg.stream, self.group, self.name,
                    RETRY_CONSUMER, msg.raw_id,
                )
                if moved:
                    self.retried += 1
                else:
                    await self._count_deleted(msg.stream, [msg.raw_id])
        except (RedisError, OSError) as err:
            # The entry stays pending under this consumer: it is retried after the
            # visibility timeout (or when this consumer restarts) - never lost.
            self.log.error("failure_handling_failed", **fields, error=str(err))

    async def dead_letter(
        self, msg: Message, error_type: str, error: str, exc: BaseException | None = None
    ) -> None:
        """Move ``msg`` to its dead-letter stream and ack it, in one atomic step."""
        dlq = self.spec.dead_letter_stream(msg.stream)
        tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
        record = build_record(
            stream=msg.stream, raw_id=msg.raw_id, group=self.group, consumer=self.name,
            attempts=msg.attempt, error_type=error_type, error=error, handler=self.spec.name,
            raw_fields=msg.raw_fields, traceback=tb,
        )
        if len(record) <= scripts.MAX_SCRIPT_ARGS:
            result = await self.client.eval(
                scripts.DEAD_LETTER, 2, msg.stream, dlq, self.group, msg.raw_id, *record
            )
        else:
            # Too wide for a script: MULTI/EXEC is atomic too, but cannot first check that
            # the entry is still pending (a record may then exist for an entry another
            # worker acked meanwhile: a duplicate, never a loss).
            pipe = self.client.pipeline(transaction=True)
            pipe.execute_command("XADD", dlq, "*", *record)
            pipe.execute_command("XACK", msg.stream, self.group, msg.raw_id)
            result = (await pipe.execute())[0]
        if result:
            self.dead_lettered += 1
            self.log.error("dead_lettered", stream=msg.stream, message_id=msg.id,
                           attempt=msg.attempt, dead_letter_stream=dlq, error_type=error_type,
                           error=error)
        else:
            self.log.warning("dead_letter_skipped", stream=msg.stream, message_id=msg.id,
                             reason="entry was no longer pending")

    # -- leases ---------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Renew the idle time of long-running entries so no other worker reclaims them."""
        every = self.settings.visibility_timeout / 4
        while True:
            await anyio.sleep(every)
            now = time.monotonic()
            self._observe(now)
            due: dict[str, list[_SlotState]] = {}
            for state in list(self._slot_states):
                msg = state.msg
                if msg is not None and now - state.leased >= every:
                    due.setdefault(msg.stream, []).append(state)
            for stream, states in due.items():
                raw_ids = [st.msg.raw_id for st in states if st.msg is not None]
                try:
                    renewed = await self.client.eval(
                        scripts.CLAIM_IF_OWNED, 1, stream, self.group, self.name, self.name,
                        *raw_ids,
                    )
                except (RedisError, OSError) as exc:
                    self.log.warning("lease_renewal_failed", stream=stream, entries=len(raw_ids),
                                     error=str(exc))
                    continue
                renewed_set = set(renewed or [])
                for st in states:
                    st.leased = now
                for raw_id in raw_ids:
                    if raw_id not in renewed_set:
                        self.log.warning("lease_lost", stream=stream, message_id=raw_id.decode(),
                                         hint="another worker reclaimed this entry")


class HandlerTimeout(Exception):
    """A handler ran longer than its ``timeout``; counts as a failed attempt."""


class _SlotState:
    """What one handler slot is doing (read by the lease loop, watchdog and reclaimer)."""

    __slots__ = ("leased", "msg", "seen", "started", "task", "timed_out")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task  # the slot's task (cancelled by the watchdog on timeout)
        self.msg: Message | None = None  # entry being handled, None when idle
        self.seen: Message | None = None  # msg when the watchdog/lease loop last looked
        self.started = 0.0  # monotonic time the handler was first seen running
        self.leased = 0.0  # monotonic time of the last lease renewal (or start)
        self.timed_out = False  # set by the watchdog just before it cancels the task


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
