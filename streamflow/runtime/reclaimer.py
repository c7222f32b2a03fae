"""Reclaimer: finds due retries and dead consumers' entries, and has them claimed.

Why XPENDING + XCLAIM and not XAUTOCLAIM: a retry must wait its own backoff, which
depends on the entry's delivery count, and XAUTOCLAIM neither filters by consumer nor
reports delivery counts. XPENDING's extended form gives owner, idle time and delivery
count per entry; XCLAIM with ``min-idle-time`` then claims an entry only if nobody else
claimed it since (claiming resets its idle time), so any number of workers can reclaim
at once without a lock and without running an entry twice at the same time.

Two scans per stream and pass:

* entries parked on the retry consumer (failed, waiting for their backoff) whose idle
  time reached ``Retry.delay(attempt)``;
* entries of any other consumer idle longer than ``visibility_timeout`` (their worker
  died: live workers renew the idle time of what they run).

The reclaimer gets the slot pool (to know what runs here) and a :class:`Claims` (to
take entries over), never the consumer that owns it.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from ..keys import RETRY_CONSUMER
from ..policies import Retry
from ..redis_errors import Kind, classify
from ..spec import HandlerSpec
from ..stats import Counters
from .claims import Claims
from .groups import Groups
from .slots import SlotPool
from .stop import StopSignal

__all__ = ["Reclaimer"]

#: Entries asked for per XPENDING page.
PAGE = 100
#: Most per-entry retry policies remembered (handlers with ``retry_of``: job queues).
POLICY_CACHE = 10_000
_RETRY = RETRY_CONSUMER.encode()


class Reclaimer:
    """Reclaims for one consumer every ``interval`` seconds; see the module docstring."""

    def __init__(
        self, client: Any, spec: HandlerSpec, *, pool: SlotPool, claims: Claims,
        groups: Groups, group: str, consumer: str, interval: float,
        visibility_timeout: float,
        counters: Counters, stop: StopSignal, log: Any,
    ) -> None:
        self.client = client  # shared redis.asyncio client
        self.spec = spec  # retry policy
        self.groups = groups  # .ready: the stream keys the group exists on (streams, replays)
        self.pool = pool  # running entries are skipped; crash suspects are tracked here
        self.claims = claims  # takes due entries over and hands them to the pool
        self.group = group
        self.consumer = consumer
        self.interval = interval  # seconds between passes
        self.visibility_ms = int(visibility_timeout * 1000)  # dead consumers' entries idle this long
        self.counters = counters  # reclaim_passes
        self.stop = stop
        self.log = log
        self._consumer_raw = consumer.encode()
        # entry id -> its retry policy, for specs whose entries carry their own (job queues)
        self._policies: dict[bytes, Retry] = {}

    async def run(self) -> None:
        """Reclaim every ``interval`` until the stop signal; errors are logged, never fatal."""
        failing = False
        while not self.stop.is_set:
            await self.stop.pause(self.interval)
            if self.stop.is_set:
                return
            try:
                await self.reclaim_once()
                if failing:
                    self.log.info("reclaim_recovered")
                    failing = False
            except (RedisError, OSError) as exc:
                kind = classify(exc)
                if kind is Kind.TRANSIENT:
                    if not failing:
                        self.log.warning("reclaim_failed", error=str(exc) or type(exc).__name__)
                        failing = True
                elif kind is not Kind.NOGROUP:  # the readers recreate lost groups
                    self.log.error("reclaim_failed", error=str(exc) or type(exc).__name__)
            self.counters.reclaim_passes += 1

    async def reclaim_once(self) -> int:
        """One pass over every stream; returns how many entries were claimed."""
        total = 0
        for stream in self.groups.ready:
            total += await self._scan(stream, retries=True)
            total += await self._scan(stream, retries=False)
        return total

    async def _scan(self, stream: str, *, retries: bool) -> int:
        retry = self.spec.retry
        pool = self.pool
        if retries:
            min_idle = int(retry.base_delay(1) * (1 - retry.jitter) * 1000)
            extra: list[Any] = [RETRY_CONSUMER]
        else:
            min_idle = self.visibility_ms
            extra = []
        start = "-"
        claimed = 0
        running = pool.running_ids() if not retries else set()
        suspect_taken: bytes | None = None
        while True:
            rows = await self.client.execute_command(
                "XPENDING", stream, self.group, "IDLE", min_idle, start, "+", PAGE, *extra
            )
            if not rows:
                return claimed
            due: list[tuple[bytes, int, int]] = []  # (id, min idle ms, deliveries)
            policies = (await self._policies_of(stream, [r[0] for r in rows])
                        if retries and self.spec.retry_of is not None else None)
            for raw_id, owner, idle, deliveries in rows:
                if retries:
                    policy = policies[raw_id] if policies is not None else retry
                    need = int(policy.delay(int(deliveries), raw_id) * 1000)
                else:
                    if owner == _RETRY:
                        continue  # waits for its own backoff, handled by the retry scan
                    if owner == self._consumer_raw and (stream, raw_id) in running:
                        continue  # running here right now (its lease is being renewed)
                    need = self.visibility_ms
                    if self._is_suspect(int(deliveries)):
                        if pool.suspects or suspect_taken:
                            continue  # one crash suspect at a time (see _is_suspect)
                        if int(idle) >= need:
                            suspect_taken = raw_id
                if int(idle) >= need:
                    due.append((raw_id, need, int(deliveries)))
            if due:
                if suspect_taken is not None:
                    pool.suspects.add(suspect_taken)
                try:
                    claimed += await self.claims.claim(stream, due)
                finally:
                    if suspect_taken is not None and not pool.holds(stream, suspect_taken):
                        pool.suspects.discard(suspect_taken)  # not ours, dead-lettered or gone
            if len(rows) < PAGE:
                return claimed
            start = "(" + rows[-1][0].decode()

    async def _policies_of(self, stream: str, raw_ids: list[bytes]) -> dict[bytes, Retry]:
        """The retry policy of each parked entry (read from the entry once, then remembered).

        Only for handlers whose entries carry their own policy (``spec.retry_of``: a job
        queue, where each task has its own ``Retry``). The XPENDING scan above used the
        spec's ``retry`` (the queue's shortest backoff) as its lower bound.
        """
        cache = self._policies
        unknown = [raw_id for raw_id in raw_ids if raw_id not in cache]
        if unknown:
            if len(cache) + len(unknown) > POLICY_CACHE:
                cache.clear()
            retry_for = self.spec.retry_for
            pipe = self.client.pipeline(transaction=False)
            for raw_id in unknown:
                pipe.execute_command("XRANGE", stream, raw_id, raw_id)
            for raw_id, rows in zip(unknown, await pipe.execute(), strict=True):
                cache[raw_id] = retry_for(rows[0][1] if rows else None)
        return {raw_id: cache[raw_id] for raw_id in raw_ids}

    def _is_suspect(self, deliveries: int) -> bool:
        """An entry of a dead consumer delivered twice already may be what kills workers.

        Poison that crashes the process (``os._exit``, a segfault) takes every entry in
        flight with it, so innocent entries gain a delivery each time. Entries reclaimed
        from dead consumers for the third time or more are therefore run one at a time
        per worker: a poison entry then dies alone until it runs out of attempts, and the
        entries that shared its crashes finish. (An entry out of attempts is not run at
        all: it goes straight to the dead-letter stream.)
        """
        return 2 <= deliveries < self.spec.retry.max_attempts
