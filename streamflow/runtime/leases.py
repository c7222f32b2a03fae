"""Leases and the watchdog: two loops that look at the running slots every so often.

* **Leases.** Entries whose handler runs longer than ``visibility_timeout / 4`` get their
  idle time reset by ``CLAIM_IF_OWNED`` (``XCLAIM JUSTID`` only if still owned by this
  consumer), so a live worker's entries never look dead to other workers. A lease that
  was lost (another worker reclaimed the entry) is logged.
* **Watchdog.** Handler timeouts without a timer per message: every
  ``min(1 s, timeout / 10)`` the busy slots are scanned and the overdue ones cancelled
  (a handler is cancelled between ``timeout`` and ``timeout`` plus two ticks after it
  started).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from redis.exceptions import RedisError

from .. import scripts
from ..spec import TimeoutOf
from .slots import SlotPool, SlotState

__all__ = ["renew_leases", "watchdog"]


async def watchdog(pool: SlotPool, limit: float | None, limit_of: TimeoutOf | None = None) -> None:
    """Cancel handlers of ``pool`` that run longer than ``limit`` seconds (or, with
    ``limit_of``, than each entry's own limit; ``limit`` is then the shortest); runs until
    cancelled."""
    tick = min(1.0, limit / 10) if limit is not None else 1.0
    while True:
        await anyio.sleep(tick)
        now = time.monotonic()
        pool.observe(now)
        if limit is None:
            continue
        for state in list(pool.states):
            msg = state.msg
            if msg is None:
                continue
            own = limit_of(msg.raw_fields) if limit_of is not None else limit
            overdue = own is not None and now - state.started >= own
            if overdue and not state.timed_out and state.task is not None:
                state.timed_out = True
                state.task.cancel()


async def renew_leases(
    pool: SlotPool, client: Any, *, group: str, consumer: str, every: float, log: Any
) -> None:
    """Every ``every`` seconds, renew the idle time of entries running longer than that."""
    while True:
        await anyio.sleep(every)
        now = time.monotonic()
        pool.observe(now)
        due: dict[str, list[SlotState]] = {}
        for state in list(pool.states):
            msg = state.msg
            if msg is not None and now - state.leased >= every:
                due.setdefault(msg.key, []).append(state)
        for stream, states in due.items():
            raw_ids = [st.msg.raw_id for st in states if st.msg is not None]
            try:
                renewed = await client.eval(
                    scripts.CLAIM_IF_OWNED, 1, stream, group, consumer, consumer, *raw_ids,
                )
            except (RedisError, OSError) as exc:
                log.warning("lease_renewal_failed", stream=stream, entries=len(raw_ids),
                            error=str(exc))
                continue
            renewed_set = set(renewed or [])
            for st in states:
                st.leased = now
            for raw_id in raw_ids:
                if raw_id not in renewed_set:
                    log.warning("lease_lost", stream=stream, message_id=raw_id.decode(),
                                hint="another worker reclaimed this entry")
