"""The start-up report of work left by stopped consumers, and when it will be reclaimed.

A consumer that holds pending entries and no live lease (:mod:`streamflow.name_lease`)
is *stopped*: its process crashed, or stopped with handlers cut off by the grace
period, and nobody restarted it under its name. Its entries wait until they have been
idle ``visibility_timeout``, then any worker's reclaimer takes them. At start-up the
worker logs one ``stopped_consumers_pending`` event per stream and group where that is
the case, so the wait is visible instead of silent::

    stopped_consumers_pending stream=orders group=billing consumers=['web-1-3f2a9c']
        entries=12 idle_s=8.2 visibility_timeout=60.0 reclaim_in_s=51.8

``reclaim_in_s`` is when the first of them (the longest idle) become due; the rest
follow as their idle time reaches ``visibility_timeout`` (plus up to one
``reclaim_interval`` for the next reclaim pass). Idle times come from the oldest
:data:`SAMPLE` pending entries of each stopped consumer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from ..connection import server_time_ms
from ..keys import RETRY_CONSUMER
from ..name_lease import judge, read_holders
from .identity import pending_by_consumer

__all__ = ["SAMPLE", "report_stopped_consumers"]

#: Pending entries per stopped consumer whose idle time is looked at.
SAMPLE = 100


async def report_stopped_consumers(
    client: Any, pairs: Sequence[tuple[str, str]], *, me: str, visibility_timeout: float,
    log: Any,
) -> list[dict[str, Any]]:
    """Log (and return) one ``stopped_consumers_pending`` record per (stream, group) concerned.

    Errors are logged as ``stopped_consumers_check_failed`` and never stop the start.
    """
    out: list[dict[str, Any]] = []
    for stream, group in pairs:
        try:
            record = await _stopped(client, stream, group, me, visibility_timeout)
        except (RedisError, OSError) as exc:
            log.warning("stopped_consumers_check_failed", stream=stream, group=group,
                        error=str(exc) or type(exc).__name__)
            continue
        if record is None:
            continue
        log.warning(
            "stopped_consumers_pending", **record,
            hint="entries of consumers that are not running any more; they are reclaimed once "
                 "idle for visibility_timeout (restart a stopped worker under its name to "
                 "take them back at once)",
        )
        out.append(record)
    return out


async def _stopped(
    client: Any, stream: str, group: str, me: str, visibility_timeout: float
) -> dict[str, Any] | None:
    pending = await pending_by_consumer(client, stream, group)
    candidates = {c: n for c, n in pending.items() if n and c not in (me, RETRY_CONSUMER)}
    if not candidates:
        return None
    now_ms = await server_time_ms(client)
    holders = await read_holders(client, stream, group)
    live = {name for name, h in holders.items() if h.expires_ms > now_ms and judge(h) != "dead"}
    stopped = sorted(c for c in candidates if c not in live)
    if not stopped:
        return None
    pipe = client.pipeline(transaction=False)
    for consumer in stopped:
        pipe.execute_command("XPENDING", stream, group, "-", "+", SAMPLE, consumer)
    idles = [int(row[2]) for rows in await pipe.execute() for row in rows or []]
    max_idle_s = max(idles, default=0) / 1000
    return {
        "stream": stream, "group": group, "consumers": stopped,
        "entries": sum(candidates[c] for c in stopped), "idle_s": round(max_idle_s, 1),
        "visibility_timeout": visibility_timeout,
        "reclaim_in_s": round(max(0.0, visibility_timeout - max_idle_s), 1),
    }
