"""What a test waits for on a running worker: passes of its loops, finished entries, quiet.

All of them read the worker's public snapshot (:meth:`Worker.stats()
<streamflow.Worker.stats>`) and, for :func:`wait_idle`, the server's own view of each
group (XPENDING, XINFO GROUPS); none looks into the runtime's parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from ..keys import parse_id
from ..stats import WorkerStats
from ..worker import Worker
from .waiting import wait_until

__all__ = ["GroupState", "group_states", "is_idle", "passes", "wait_finished", "wait_idle"]

_PASSES = {"read": "read_passes", "reclaim": "reclaim_passes", "maintenance": "maintenance_passes"}


def _counts(stats: WorkerStats) -> str:
    return (
        f"handled={stats.handled} failed={stats.failed} retried={stats.retried} "
        f"dead_lettered={stats.dead_lettered} trimmed={stats.trimmed} "
        f"reclaimed={stats.reclaimed} in_flight={stats.in_flight} unacked={stats.unacked}"
    )


async def passes(
    worker: Worker, *, read: int = 0, reclaim: int = 0, maintenance: int = 0,
    timeout: float = 10.0,
) -> WorkerStats:
    """Wait until every handler of ``worker`` completed at least ``read`` more XREADGROUP
    calls (``read_passes``, all its read loops together), ``reclaim`` more reclaimer
    passes and ``maintenance`` more maintenance passes than when called; return the
    snapshot then.

    The first pass counted may have begun before the call: to be sure that one whole
    pass ran after it (it saw what the test did just before), ask for 2.
    """
    wanted = {_PASSES[k]: n for k, n in
              (("read", read), ("reclaim", reclaim), ("maintenance", maintenance)) if n}
    if not wanted:
        raise ValueError("passes() needs read=, reclaim= or maintenance= (how many passes)")
    before = worker.stats().handlers
    if not before:
        raise RuntimeError("the worker is not serving (no handler has started)")

    def done() -> WorkerStats | None:
        now = worker.stats()
        for b, h in zip(before, now.handlers, strict=True):
            if any(getattr(h, name) < getattr(b, name) + n for name, n in wanted.items()):
                return None
        return now

    def state() -> str:
        now = worker.stats().handlers
        return "; ".join(
            f"{h.handler}: " + ", ".join(f"{name} {getattr(b, name)} -> {getattr(h, name)}"
                                         for name in wanted)
            for b, h in zip(before, now, strict=True)
        )

    what = " and ".join(f"{n} more {name}" for name, n in wanted.items())
    result: WorkerStats = await wait_until(done, timeout=timeout, what=what, detail=state)
    return result


async def wait_finished(worker: Worker, n: int, *, timeout: float = 30.0) -> WorkerStats:
    """Wait until ``worker`` has finished ``n`` entries in all (handled, dead-lettered or
    found trimmed: :attr:`HandlerStats.finished <streamflow.stats.HandlerStats.finished>`)
    and return the snapshot then. An entry waiting for a retry is not finished yet.
    """
    def done() -> WorkerStats | None:
        stats = worker.stats()
        return stats if stats.finished >= n else None

    result: WorkerStats = await wait_until(
        done, timeout=timeout,
        what=f"{n} finished entries (handled + dead-lettered + trimmed)",
        detail=lambda: f"finished={worker.stats().finished}: {_counts(worker.stats())}",
    )
    return result


@dataclass(frozen=True)
class GroupState:
    """The server's view of one consumer group on one stream."""

    stream: str
    group: str
    pending: int  # delivered and not acked (including entries parked for a retry)
    lag: int | None  # entries not delivered yet (1: some, when the server cannot count them;
    # None: the group or the stream is missing)

    @property
    def idle(self) -> bool:
        """Nothing pending and nothing left to deliver."""
        return self.pending == 0 and self.lag == 0


async def _group_state(client: Any, stream: str, group: str) -> GroupState:
    try:
        rows = await client.execute_command("XINFO", "GROUPS", stream)
    except RedisError:  # no such stream (flushed): the worker will recreate it
        return GroupState(stream, group, 0, None)
    for row in rows or []:
        info = dict(zip(row[::2], row[1::2], strict=True))
        name = info[b"name"]
        if (name.decode() if isinstance(name, bytes) else str(name)) != group:
            continue
        pending = int(info[b"pending"])
        lag = info.get(b"lag")
        if lag is None:
            # The server cannot count the lag after deletions: compare ids instead.
            stream_info = await client.execute_command("XINFO", "STREAM", stream)
            last = dict(zip(stream_info[::2], stream_info[1::2], strict=True))
            newest = parse_id(last[b"last-generated-id"])
            return GroupState(stream, group, pending,
                              0 if parse_id(info[b"last-delivered-id"]) >= newest else 1)
        return GroupState(stream, group, pending, int(lag))
    return GroupState(stream, group, 0, None)


async def group_states(worker: Worker) -> list[GroupState]:
    """The server's view of every (stream, group) ``worker`` consumes, through its connection."""
    conn = worker.connection
    if conn is None or conn.closed:
        raise RuntimeError("the worker is not serving (it has no open connection)")
    client = await conn.client()
    return [await _group_state(client, stream, spec.group)
            for spec in worker.app.handlers for stream in spec.streams]


def _idle(stats: WorkerStats, groups: list[GroupState]) -> bool:
    return not stats.in_flight and not stats.unacked and all(g.idle for g in groups)


async def is_idle(worker: Worker) -> bool:
    """True when ``worker`` has nothing to do: no entry in flight or waiting to be acked
    here, and in every group it consumes nothing pending (a retry not yet due counts as
    pending) and nothing left to deliver (lag 0)."""
    return _idle(worker.stats(), await group_states(worker))


async def wait_idle(worker: Worker, *, timeout: float = 30.0) -> WorkerStats:
    """Wait until :func:`is_idle` holds and return the snapshot then.

    Publish first: a worker that was never given anything is idle at once.
    """
    groups: list[GroupState] = []  # the last look, for the error message

    async def done() -> WorkerStats | None:
        stats = worker.stats()
        groups[:] = await group_states(worker)
        return stats if _idle(stats, groups) else None

    result: WorkerStats = await wait_until(
        done, timeout=timeout,
        what="the worker to be idle (nothing in flight, pending or undelivered)",
        detail=lambda: "; ".join([_counts(worker.stats()), *(
            f"{g.stream}/{g.group}: pending={g.pending} lag={g.lag}" for g in groups)]),
    )
    return result
