"""The failure path: what to do with an entry whose handler raised, decided apart from I/O.

:func:`decide` is pure (an exception, an attempt number, a retry policy in; a
:class:`Decision` out) and tested without a server. :class:`Failures` carries the
decision out against Redis:

* **retry**: the entry is moved, if still owned by this consumer, to the group's retry
  consumer (``XCLAIM ... JUSTID``, which resets its idle time without counting a
  delivery); the reclaimer claims it back once its backoff has elapsed;
* **dead-letter**: the record is written to the dead-letter stream and the entry acked
  in one atomic step (:func:`streamflow.deadletter.move_to_dead_letter`);
* **trimmed**: an entry that was deleted from its stream while pending is acked and
  counted, never retried.

A Redis error on this path is logged and swallowed: the entry stays pending under this
consumer and comes back after the visibility timeout (or at this consumer's restart).
"""

from __future__ import annotations

import enum
import traceback
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from .. import scripts
from ..deadletter import move_to_dead_letter
from ..errors import HandlerTimeout, PayloadError, Reject
from ..keys import RETRY_CONSUMER
from ..message import Message
from ..policies import Retry
from ..spec import HandlerSpec
from ..stats import Counters

__all__ = ["Action", "Decision", "Failures", "decide"]


class Action(enum.Enum):
    """What happens to a failed entry."""

    RETRY = "retry"  # park it until its backoff elapsed, then run it again
    DEAD_LETTER = "dead_letter"  # out of attempts: move it to the dead-letter stream
    REJECT = "reject"  # bad payload or Reject: dead-letter at once, no retry


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide` for one failure."""

    action: Action
    error_type: str  # the exception's class name ("HandlerTimeout" for timeouts)
    error: str  # one line saying what went wrong
    retry_in: float = 0.0  # seconds of backoff before the retry (RETRY only), jitter included


def decide(
    exc: BaseException, attempt: int, retry: Retry, timeout: float | None, key: bytes | None = None
) -> Decision:
    """What to do with an entry on its ``attempt``-th delivery whose handler raised ``exc``.

    ``key`` (the entry id) makes the retry's jitter the one the reclaimer computes for it.
    """
    if isinstance(exc, HandlerTimeout):
        error = str(exc) or (
            f"handler timed out after {timeout:g}s" if timeout is not None else "timed out")
        error_type = "HandlerTimeout"
    else:
        error = str(exc) or type(exc).__name__
        error_type = type(exc).__name__
    if isinstance(exc, PayloadError | Reject):
        return Decision(Action.REJECT, error_type, error)
    if attempt >= retry.max_attempts:
        return Decision(Action.DEAD_LETTER, error_type, error)
    return Decision(Action.RETRY, error_type, error, retry.delay(attempt, key))


class Failures:
    """Carries out :func:`decide` 's decisions for one consumer (see the module docstring)."""

    def __init__(
        self, client: Any, spec: HandlerSpec, *, group: str, consumer: str,
        counters: Counters, log: Any, reclaim_interval: float = 0.0,
    ) -> None:
        self.client = client  # shared redis.asyncio client
        self.spec = spec  # retry policy, timeout, dead-letter naming
        self.group = group
        self.consumer = consumer  # this process's consumer name (owner of failed entries)
        self.counters = counters  # failed / retried / dead_lettered / trimmed
        self.log = log  # bound with group, consumer, handler
        self.reclaim_interval = reclaim_interval  # a due retry waits up to this for a pass

    async def handle(self, msg: Message, exc: BaseException) -> None:
        """The slot pool's failure hook: count, log, and retry or dead-letter ``msg``."""
        self.counters.failed += 1
        retry = self.spec.retry_for(msg.raw_fields)
        d = decide(exc, msg.attempt, retry, self.spec.timeout_for(msg.raw_fields), msg.raw_id)
        fields = {"stream": msg.stream, "message_id": msg.id, "attempt": msg.attempt,
                  "error_type": d.error_type, "error": d.error}
        try:
            if d.action is Action.REJECT:
                self.log.warning("message_rejected", **fields)
                await self.dead_letter(msg, d.error_type, d.error, exc)
            elif d.action is Action.DEAD_LETTER:
                self.log.error("handler_failed_final", **fields, exc_info=exc)
                await self.dead_letter(msg, d.error_type, d.error, exc)
            else:
                # When the retry runs: the reclaimer claims it once its backoff (with this
                # entry's jitter, as the reclaimer computes it) elapsed, at its next pass.
                self.log.warning("handler_failed", **fields, retry_in=round(d.retry_in, 3),
                                 retry_by=round(d.retry_in + self.reclaim_interval, 3),
                                 exc_info=exc)
                await self.park(msg)
        except (RedisError, OSError) as err:
            # The entry stays pending under this consumer: it is retried after the
            # visibility timeout (or when this consumer restarts) - never lost.
            self.log.error("failure_handling_failed", stream=msg.stream, message_id=msg.id,
                           attempt=msg.attempt, error=str(err))

    async def park(self, msg: Message) -> None:
        """Move ``msg`` to the retry consumer until its backoff elapsed (if still ours)."""
        moved = await self.client.eval(
            scripts.CLAIM_IF_OWNED, 1, msg.key, self.group, self.consumer,
            RETRY_CONSUMER, msg.raw_id,
        )
        if moved:
            self.counters.retried += 1
        else:
            await self.count_deleted(msg.key, [msg.raw_id])

    async def dead_letter(
        self, msg: Message, error_type: str, error: str, exc: BaseException | None = None
    ) -> None:
        """Move ``msg`` to its dead-letter stream and ack it, in one atomic step."""
        dlq = self.spec.dead_letter_stream(msg.stream)
        tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
        record_id = await move_to_dead_letter(
            self.client, stream=msg.stream, dlq=dlq, group=self.group, consumer=self.consumer,
            handler=self.spec.name, msg_raw_id=msg.raw_id, key=msg.key, raw_fields=msg.raw_fields,
            attempts=msg.attempt, error_type=error_type, error=error, traceback=tb,
        )
        if record_id:
            self.counters.dead_lettered += 1
            self.log.error("dead_lettered", stream=msg.stream, message_id=msg.id,
                           attempt=msg.attempt, dead_letter_stream=dlq, error_type=error_type,
                           error=error)
            completion = self.spec.completion
            if completion is not None:
                await completion.dead_lettered(
                    self.client, msg, consumer=self.consumer, error_type=error_type,
                    error=error, traceback=tb, dead_letter=dlq,
                    record_id=record_id.decode() if isinstance(record_id, bytes)
                    else str(record_id))
        else:
            self.log.warning("dead_letter_skipped", stream=msg.stream, message_id=msg.id,
                             reason="entry was no longer pending")

    async def count_deleted(self, stream: str, raw_ids: list[bytes]) -> None:
        """Of ``raw_ids`` (pending ids a claim did not return), ack and count the deleted ones.

        ``stream`` here and in :meth:`ack_trimmed` is the key the entries are pending in.
        """
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
        self.counters.trimmed += len(raw_ids)
        self.log.warning("pending_entries_trimmed", stream=stream, count=len(raw_ids),
                         ids=[i.decode() for i in raw_ids[:10]])
        await self.client.execute_command("XACK", stream, self.group, *raw_ids)
