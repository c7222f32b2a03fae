"""``streamflow info``'s reading of consumer-name leases: live or stopped, and retry due times.

A consumer is *live* while a process holds an unexpired lease on its name
(:mod:`streamflow.name_lease`), *stopped* otherwise; the retry pseudo-consumer is no
process and has no state. Workers of versions without leases show as stopped.

When is a parked retry due? A failed entry is parked on ``streamflow:retry`` with its
idle time reset; any live worker of the group claims it once that idle time reaches
``Retry.delay(attempt, id)`` of *its* handler, at its next reclaim pass - so between
``delay`` and ``delay + reclaim_interval`` after parking, if a slot is free. The
policy is the handler's code, not anything in Redis, so ``info`` reads it from the
leases of the live workers, which publish it (and their ``reclaim_interval``); with
several live workers the earliest wins. With no live worker nobody will claim the entry
until one starts, and ``info`` cannot know that worker's policy: it says "after
backoff" and shows the idle time rather than guess from the default policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoPermissionError

from ..keys import RETRY_CONSUMER, consumer_leases_key
from ..name_lease import Holder, holders_at
from ..policies import Retry

__all__ = ["RETRY_LIMIT", "Leases", "RetryInfo", "leases_of", "parked_retries", "read_leases"]

#: Parked retries read per group (the count of all is the retry consumer's pending).
RETRY_LIMIT = 1000


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


@dataclass
class Leases:
    """The leases of one group as ``info`` sees them."""

    readable: bool  # False when the Redis user may not read the lease hash
    live: set[str] = field(default_factory=set)  # names held by an unexpired lease
    policies: list[tuple[Retry, float]] = field(default_factory=list)  # of live holders

    def state(self, consumer: str) -> str | None:
        """``live``, ``stopped``, ``unknown`` (leases unreadable), None for the retry consumer."""
        if consumer == RETRY_CONSUMER:
            return None
        if not self.readable:
            return "unknown"
        return "live" if consumer in self.live else "stopped"


async def read_leases(client: Any, stream: bytes, group: bytes, now_ms: int) -> Leases:
    """The leases of ``group`` on ``stream``; unreadable ones (NOPERM) are reported as such."""
    key = consumer_leases_key(_text(stream), _text(group)).encode("utf-8", "surrogateescape")
    try:
        holders = await holders_at(client, key)
    except NoPermissionError:
        return Leases(readable=False)
    return leases_of(holders, now_ms)


def leases_of(holders: dict[str, Holder], now_ms: int) -> Leases:
    """The :class:`Leases` of a group's stored leases (:func:`~streamflow.name_lease.holders_of`)
    at server time ``now_ms``: the unexpired ones are live."""
    leases = Leases(readable=True)
    for name, holder in holders.items():
        if holder.expires_ms <= now_ms:
            continue
        leases.live.add(name)
        retry, interval = holder.retry, holder.reclaim_interval
        if retry is not None and interval is not None:
            leases.policies.append((retry, interval))
    return leases


@dataclass
class RetryInfo:
    """One entry parked on the retry consumer."""

    id: str
    attempt: int  # the attempt that failed (its delivery count)
    idle_ms: int  # time since it was parked
    due_in_ms: int | None  # until the earliest live worker may claim it; None: unknown
    window_ms: int | None  # ... and it is claimed within this much more (a reclaim pass)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        known = self.due_in_ms is not None
        return {
            "id": self.id, "attempt": self.attempt, "idle_ms": self.idle_ms,
            "due_in_ms": self.due_in_ms,
            "due_by_ms": self.due_in_ms + (self.window_ms or 0) if self.due_in_ms is not None
            else None,
            "policy_known": known,
        }


async def parked_retries(client: Any, stream: bytes, group: Any, leases: Leases) -> list[RetryInfo]:
    """The first :data:`RETRY_LIMIT` parked retries of ``group``, soonest due first."""
    rows = await client.execute_command(
        "XPENDING", stream, group, "-", "+", RETRY_LIMIT, RETRY_CONSUMER)
    out: list[RetryInfo] = []
    for raw_id, _, idle, deliveries in rows or []:
        attempt, idle_ms = int(deliveries), int(idle)
        due: int | None = None
        window: int | None = None
        for retry, interval in leases.policies:
            d = int(retry.delay(attempt, bytes(raw_id)) * 1000) - idle_ms
            if due is None or d < due:
                due, window = d, int(interval * 1000)
        out.append(RetryInfo(_text(bytes(raw_id)), attempt, idle_ms, due, window))
    out.sort(key=lambda r: (r.due_in_ms is None, r.due_in_ms or 0, r.id))
    return out
