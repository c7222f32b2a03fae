"""Per-key order (``@app.handler(..., ordered=True)``): entries with the same key run one
after another, in stream order; entries with different keys run concurrently.

:class:`KeyOrder` wraps the handler the slots run. Each entry with a key (its ``sf:key``
field: ``publish(..., key=...)``) first waits at its key's gate, a FIFO: the slots take
entries from their queue in stream order, so they reach the gate in that order. The entry
holds the gate through all its attempts: a failed attempt is retried in place after its
backoff (no parking on the retry consumer, which would let the next entry of the key
overtake it), with the timeout applied per attempt. After the last attempt the entry is
dead-lettered by the consumer's failure path *before* the gate opens, so the next entry
of the key runs only once this one succeeded or reached the dead-letter stream. Entries
without a key are not ordered.

Across workers the order holds because only the owner of a partition reads it
(:mod:`.ownership`); a new owner first takes over every entry still pending in the
partition, in id order, so an entry a dead worker left runs before later ones of its key.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ..errors import HandlerTimeout, PayloadError, Reject
from ..message import Message
from ..spec import Handler, HandlerSpec
from ..stats import Counters

__all__ = ["KeyOrder"]


class _Gate:
    """A FIFO lock for one key: who holds it, and who waits, in arrival order."""

    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: deque[asyncio.Future[None]] = deque()


class KeyOrder:
    """Runs one handler's entries in order per key (see the module docstring)."""

    def __init__(
        self, func: Handler, spec: HandlerSpec, *, on_failure: Callable[[Message, BaseException],
                                                                         Awaitable[None]],
        counters: Counters, log: Any,
    ) -> None:
        self.func = func  # the user's handler
        self.spec = spec  # retry policy and timeout
        self._on_failure = on_failure  # the consumer's failure path (dead-letters)
        self.counters = counters  # failed / retried of in-place retries
        self.log = log
        self._gates: dict[tuple[str, str], _Gate] = {}  # (stream key, entry key) -> gate
        # (stream key, entry id) -> the gate it still holds (ids repeat across partitions)
        self._holding: dict[tuple[str, bytes], tuple[str, str]] = {}

    @property
    def waiting(self) -> int:
        """Entries waiting at a gate for an earlier entry of their key."""
        return sum(len(g.waiters) for g in self._gates.values())

    async def handle(self, msg: Message) -> None:
        """The slots' handler: wait for the key, then run every attempt of ``msg``."""
        key = msg.partition_key
        if key is None:
            await self._attempts(msg)
            return
        gate_key = (msg.key, key)
        await self._enter(gate_key)
        try:
            await self._attempts(msg)
        except BaseException as exc:
            if isinstance(exc, Exception):  # final failure: open the gate after on_failure
                self._holding[(msg.key, msg.raw_id)] = gate_key
                raise
            self._leave(gate_key)
            raise
        self._leave(gate_key)

    async def on_failure(self, msg: Message, exc: BaseException) -> None:
        """The slots' failure hook: dead-letter (or reject) ``msg``, then open its gate."""
        try:
            await self._on_failure(msg, exc)
        finally:
            gate_key = self._holding.pop((msg.key, msg.raw_id), None)
            if gate_key is not None:
                self._leave(gate_key)

    async def _attempts(self, msg: Message) -> None:
        """Run ``msg`` until it succeeds, is rejected, or is out of attempts (then raise)."""
        retry = self.spec.retry_for(msg.raw_fields)
        timeout = self.spec.timeout_for(msg.raw_fields)
        while True:
            try:
                if timeout is None:
                    await self.func(msg)
                else:
                    try:
                        with anyio.fail_after(timeout):
                            await self.func(msg)
                    except TimeoutError:
                        raise HandlerTimeout(f"handler timed out after {timeout:g}s") from None
                return
            except (PayloadError, Reject):
                raise
            except Exception as exc:  # a handler may raise anything
                if msg.attempt >= retry.max_attempts:
                    raise
                delay = retry.delay(msg.attempt, msg.raw_id)
                self.counters.failed += 1
                self.counters.retried += 1
                self.log.warning("handler_failed", stream=msg.stream, message_id=msg.id,
                                 attempt=msg.attempt, error_type=type(exc).__name__,
                                 error=str(exc) or type(exc).__name__, retry_in=round(delay, 3),
                                 ordered_key=msg.partition_key, exc_info=exc)
                await anyio.sleep(delay)
                msg.attempt += 1

    async def _enter(self, gate_key: tuple[str, str]) -> None:
        gate = self._gates.get(gate_key)
        if gate is None:
            gate = self._gates[gate_key] = _Gate()
        if not gate.held and not gate.waiters:
            gate.held = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():  # handed the gate, then cancelled
                self._leave(gate_key)
            else:
                gate.waiters.remove(fut)
            raise

    def _leave(self, gate_key: tuple[str, str]) -> None:
        gate = self._gates[gate_key]
        while gate.waiters:
            fut = gate.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the gate passes on, still held
                return
        gate.held = False
        del self._gates[gate_key]

