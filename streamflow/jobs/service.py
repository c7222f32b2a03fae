"""JobService: what a worker runs beside its queues' consumers.

::

    JobService.run                     (owned by the worker's task group; cancelled last)
    └── task group
        ├── _promote      every 50 ms (sooner when a job is due): due delayed jobs -> streams
        ├── _cancels      pub/sub: cancel the running jobs ``Job.cancel`` names
        └── _tick x N     one per periodic task: enqueue its next tick ahead of time

Delayed jobs wait in a sorted set per queue (score: due time). Any worker may promote
them: the PROMOTE script removes each from the set before it adds the entry, in one
atomic step, so a job is promoted once whatever the number of workers. The set lives
in Redis, so jobs survive worker restarts, and server restarts with AOF on.

Periodic tasks: each worker enqueues the *next* tick of every schedule as a delayed job
whose id names the tick (``cron:<task>:<tick ms>``); dedup makes the workers' copies one
job. The tick is in Redis before it is due, so a worker restarting around it neither
runs it twice nor skips it. A tick that passed while no worker ran is promoted (late,
once) when one starts; the ticks before it were never enqueued, so missed ticks are
not replayed in a burst.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog
from redis.exceptions import RedisError

from ..keys import CANCEL_CHANNEL, QUEUES_KEY, job_key_prefix, scheduled_key
from ..redis_errors import Kind, classify
from . import scripts

if TYPE_CHECKING:
    from .registry import Jobs, Periodic

__all__ = ["JobService", "PROMOTE_BATCH", "PROMOTE_POLL"]

log = structlog.get_logger("streamflow.jobs")

#: Longest a due delayed job waits for a promotion pass (seconds).
PROMOTE_POLL = 0.05
#: Most jobs one PROMOTE call moves.
PROMOTE_BATCH = 500


class JobService:
    """Promotion of delayed jobs, cancels, periodic ticks; see the module docstring."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.promoted = 0  # delayed jobs this worker moved to their streams
        self.ticks = 0  # periodic ticks this worker enqueued (deduplicated by id)

    async def run(self, client: Any, consumer: str, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (see the module docstring); started once cancels are heard."""
        queues = self.jobs.queues
        try:
            await client.execute_command(
                "HSET", QUEUES_KEY, *[x for q in queues.values() for x in (q.name, q.stream)])
        except (RedisError, OSError) as exc:
            log.warning("queue_registry_write_failed", error=str(exc) or type(exc).__name__)
        async with anyio.create_task_group() as tg:
            await tg.start(self._cancels, client)
            tg.start_soon(self._promote, client)
            for p in self.jobs.periodic:
                tg.start_soon(self._tick, p)
            task_status.started()

    async def _promote(self, client: Any) -> None:
        sets = {scheduled_key(q.stream): job_key_prefix(q.stream)
                for q in self.jobs.queues.values()}
        failing = False
        while True:
            wait = PROMOTE_POLL
            try:
                for zset, prefix in sets.items():
                    while True:
                        n, nxt, now = await scripts.call(
                            client, scripts.PROMOTE, [zset], [prefix, PROMOTE_BATCH])
                        self.promoted += int(n)
                        if int(n) < PROMOTE_BATCH:
                            break
                    if nxt is not None:
                        wait = min(wait, max(0.0, (float(nxt) - int(now)) / 1000))
                if failing:
                    log.info("promote_recovered")
                    failing = False
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("promote_failed", error=str(exc) or type(exc).__name__,
                                transient=classify(exc) is Kind.TRANSIENT)
                    failing = True
                wait = 1.0
            await anyio.sleep(wait)

    async def _cancels(self, client: Any, *,
                       task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                       ) -> None:
        runners = self.jobs.runners()
        delay = 0.0
        started = False
        while True:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CANCEL_CHANNEL)
                if not started:
                    task_status.started()
                    started = True
                delay = 0.0
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    data = msg["data"]
                    job_id = data.decode() if isinstance(data, bytes) else str(data)
                    running = [r.cancel(job_id) for r in runners]
                    if any(running):
                        log.info("job_cancel_requested", job_id=job_id)
            except (RedisError, OSError) as exc:
                log.warning("cancel_listener_failed", error=str(exc) or type(exc).__name__,
                            hint="reconnecting; a job cancelled meanwhile runs to its end "
                                 "and its result is discarded")
                delay = min(max(delay * 2, 0.1), 5.0)
            finally:
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()
            await anyio.sleep(delay)

    async def _tick(self, periodic: Periodic) -> None:
        task, schedule = periodic.task, periodic.schedule
        delay = 0.0
        while True:
            now = datetime.now(UTC)
            tick = schedule.next_after(now)
            tick_ms = int(tick.timestamp() * 1000)
            try:
                job = await task.enqueue_call(job_id=f"cron:{task.name}:{tick_ms}", at=tick)
                delay = 0.0
            except (RedisError, OSError) as exc:
                delay = min(max(delay * 2, 0.5), 10.0)
                log.warning("periodic_enqueue_failed", task=task.name, tick=tick.isoformat(),
                            error=str(exc) or type(exc).__name__, retry_in=delay)
                await anyio.sleep(delay)
                continue
            if job.created:
                self.ticks += 1
                log.debug("periodic_scheduled", task=task.name, job_id=job.id,
                          tick=tick.isoformat())
            # Wake just after the tick, to schedule the one after it.
            await anyio.sleep(max(0.0, tick_ms / 1000 - time.time()) + 0.001)
