"""GroupPoller: the state of the worker's groups, streams and job queues, read every few seconds.

One pipelined round trip per poll (every ``metrics_interval`` seconds, never per message):
``TIME``; per stream ``XINFO GROUPS`` and ``XLEN`` (and ``XLEN`` of its dead-letter
stream); per (stream, group) the ``XPENDING`` summary and ``HGETALL`` of its
consumer-name leases; per job queue ``ZCARD`` of its scheduled set. A second, only while
a group has entries it has not read yet: ``XRANGE ... COUNT 1`` after its last-delivered
id, for the age of the oldest of them. What each value means:

* ``lag``: entries of the stream not yet delivered to the group (``XINFO GROUPS``; Redis
  cannot tell for a while after an ``XDEL`` ahead of the group: then there is none, and
  Redis 6.2 never reports one);
* ``pending``: delivered and not acked (running, parked for a retry, held by a dead
  consumer); ``retrying``: the part parked on the retry consumer;
* ``oldest_pending_age``: now minus the id timestamp of the group's smallest pending id
  (0 when none is pending): how long the oldest unfinished entry has existed. It grows
  while an entry is stuck (a hung handler, a long backoff, a dead consumer's entry
  waiting for ``visibility_timeout``);
* ``oldest_undelivered_age``: now minus the id timestamp of the first entry the group
  has not read (0 when there is none): how long the backlog's head has waited (asynq's
  "latency"). Both in the server's clock (``TIME``), so the worker's clock does not matter;
* ``consumers``: consumers holding a live lease on their name (processes running now;
  stopped ones stay in ``XINFO`` until pruned);
* per stream its length and its dead-letter stream's length; per job queue its jobs
  queued (the group's lag), scheduled, running, retrying and failed (dead-lettered).

A command the Redis user may not run (``NOPERM``, e.g. ``XLEN`` for a least-privilege
worker without retention) is logged once and its values are left out. A failed round
trip marks Redis unreachable (:attr:`GroupPoller.error`) until the next one succeeds;
``/readyz`` reads :meth:`GroupPoller.problem`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from redis.exceptions import RedisError

from ..connection import redact_url
from ..keys import (
    JOBS_GROUP,
    RETRY_CONSUMER,
    consumer_leases_key,
    id_ms,
    id_successor,
    queue_stats_key,
    scheduled_key,
)
from ..name_lease import parse_holder
from ..redis_errors import Kind, classify
from ..spec import HandlerSpec

__all__ = ["GroupPoller", "GroupState", "Poll", "QueueState", "Target", "targets_of"]


@dataclass(frozen=True)
class Target:
    """One (stream, group) a worker consumes, with its dead-letter stream and job queue."""

    stream: str
    group: str
    dead_letter: str
    queue: str | None = None  # the job queue's name when the group is streamflow:jobs


def targets_of(specs: Iterable[HandlerSpec]) -> list[Target]:
    """The (stream, group) pairs of ``specs``, each once."""
    out: dict[tuple[str, str], Target] = {}
    for spec in specs:
        queue = spec.name.removeprefix("queue:") if spec.group == JOBS_GROUP else None
        for stream in spec.streams:
            out.setdefault((stream, spec.group), Target(stream, spec.group,
                                                        spec.dead_letter_stream(stream), queue))
    return list(out.values())


@dataclass
class GroupState:
    """What one poll saw of a group (None: not known, e.g. the command was denied)."""

    exists: bool = False
    lag: int | None = None
    pending: int | None = None
    retrying: int | None = None
    oldest_pending_age: float | None = None  # seconds
    oldest_undelivered_age: float | None = None  # seconds
    consumers: int | None = None  # with a live lease
    last_delivered: bytes | None = None




@dataclass
class QueueState:
    """A job queue's jobs per status (None: not known)."""

    queue: str
    stream: str
    queued: int | None = None
    scheduled: int | None = None
    running: int | None = None
    retrying: int | None = None
    failed: int | None = None
    succeeded: int | None = None  # total since the queue began (its ~stats hash)


@dataclass
class Poll:
    """The result of one successful poll."""

    at: float  # monotonic time it completed
    groups: dict[tuple[str, str], GroupState] = field(default_factory=dict)
    lengths: dict[str, int | None] = field(default_factory=dict)  # stream -> XLEN
    dead_letters: dict[tuple[str, str], int | None] = field(default_factory=dict)  # (stream, dlq)
    queues: list[QueueState] = field(default_factory=list)


def _pairs(row: Any) -> dict[bytes, Any]:
    if isinstance(row, dict):
        return {bytes(k): v for k, v in row.items()}
    return {bytes(row[i]): row[i + 1] for i in range(0, len(row) - 1, 2)}


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class GroupPoller:
    """Polls the state of ``targets`` every ``interval`` seconds (see the module docstring)."""

    def __init__(self, client: Any, targets: Sequence[Target], *, interval: float, log: Any) -> None:
        self.client = client
        self.targets = list(targets)
        self.streams = list(dict.fromkeys(t.stream for t in self.targets))
        self.interval = interval
        self.log = log
        self.last: Poll | None = None  # the last successful poll
        self.error: str | None = None  # why the last poll failed, as /readyz says it (None: it did not)
        self.reachable = False  # the last poll's round trip came back
        self.failed_since: float | None = None  # monotonic time polls began to fail
        self.polls = 0  # successful polls
        self._denied: set[tuple[str, str]] = set()  # (command, key) logged as denied
        self._failing: set[tuple[str, str]] = set()  # (command, key) logged as failing

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                self.last = await self.poll()
                self.polls += 1
                if self.error is not None:
                    self.log.info("metrics_redis_reachable",
                                  after_s=round(time.monotonic() - (self.failed_since or 0), 3))
                self.error, self.failed_since, self.reachable = None, None, True
            except (RedisError, OSError) as exc:
                self.reachable = False
                if self.error is None:
                    self.failed_since = time.monotonic()
                    self.log.warning("metrics_redis_unreachable", error=_describe(exc),
                                     hint="/readyz answers 503 until a poll succeeds")
                self.error = f"redis unreachable: {_describe(exc)}"
            except Exception as exc:  # a reply this code cannot read: a bug, never the worker's end
                self.reachable = True
                if self.error is None:
                    self.failed_since = time.monotonic()
                    self.log.exception("metrics_poll_failed",
                                       hint="please report it; /readyz answers 503 meanwhile")
                self.error = f"metrics poll failed: {_describe(exc)}"
            await anyio.sleep(self.interval)

    def problem(self, now: float) -> str | None:
        """Why the worker is not ready as far as Redis and its groups go, or None."""
        if self.error is not None:
            return self.error
        last = self.last
        if last is None:
            return "starting: the first poll of the groups has not finished"
        stale = 3 * self.interval + 1.0
        if now - last.at > stale:
            return f"redis: no successful round trip for {now - last.at:.1f} s"
        missing = [f"{g} on {s}" for (s, g), state in last.groups.items() if not state.exists]
        if missing:
            return "group missing: " + ", ".join(missing)
        return None

    # -- one poll -------------------------------------------------------------------------

    async def poll(self) -> Poll:
        """One poll; raises when the round trip fails."""
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("TIME")
        for stream in self.streams:
            pipe.execute_command("XINFO", "GROUPS", stream)
            pipe.execute_command("XLEN", stream)
        dead_letters = list(dict.fromkeys(t.dead_letter for t in self.targets))
        for key in dead_letters:
            pipe.execute_command("XLEN", key)
        for t in self.targets:
            pipe.execute_command("XPENDING", t.stream, t.group)
            pipe.execute_command("HGETALL", consumer_leases_key(t.stream, t.group))
        queues = [t for t in self.targets if t.queue is not None]
        for t in queues:
            pipe.execute_command("ZCARD", scheduled_key(t.stream))
            pipe.execute_command("HGET", queue_stats_key(t.stream), "succeeded")
        replies = iter(await pipe.execute(raise_on_error=False))

        time_reply = self._ok(next(replies), "TIME", "")
        if time_reply is None:
            raise RedisError("TIME failed")
        now_ms = int(time_reply[0]) * 1000 + int(time_reply[1]) // 1000
        out = Poll(at=0.0)
        infos: dict[str, dict[bytes, dict[bytes, Any]] | None] = {}
        for stream in self.streams:
            rows = self._ok(next(replies), "XINFO GROUPS", stream, missing_ok=True)
            infos[stream] = None if rows is None else {
                bytes(g[b"name"]): g for g in map(_pairs, rows)}
            out.lengths[stream] = _int(self._ok(next(replies), "XLEN", stream))
        dlq_lengths = {key: _int(self._ok(next(replies), "XLEN", key)) for key in dead_letters}
        for t in self.targets:
            out.dead_letters[(t.stream, t.dead_letter)] = dlq_lengths[t.dead_letter]
        for t in self.targets:
            out.groups[(t.stream, t.group)] = self._group(
                t, infos[t.stream], next(replies), next(replies), now_ms)
        scheduled: dict[str, Any] = {}
        succeeded: dict[str, Any] = {}
        for t in queues:
            scheduled[t.stream] = self._ok(next(replies), "ZCARD", scheduled_key(t.stream))
            reply = next(replies)  # nil: nothing succeeded yet; an error: not known
            succeeded[t.stream] = 0 if reply is None else self._ok(
                reply, "HGET", queue_stats_key(t.stream))
        await self._undelivered(out, now_ms)
        for t in queues:
            g = out.groups[(t.stream, t.group)]
            running = None if g.pending is None or g.retrying is None else g.pending - g.retrying
            queued = g.lag if g.exists else out.lengths[t.stream]  # no group: every entry waits
            out.queues.append(QueueState(
                t.queue or "", t.stream, queued=queued, scheduled=_int(scheduled[t.stream]),
                running=running, retrying=g.retrying,
                failed=out.dead_letters[(t.stream, t.dead_letter)],
                succeeded=_int(succeeded[t.stream])))
        out.at = time.monotonic()
        return out

    def _group(self, t: Target, info: dict[bytes, dict[bytes, Any]] | None, pending: Any,
               leases: Any, now_ms: int) -> GroupState:
        row = (info or {}).get(t.group.encode())
        state = GroupState(exists=row is not None)
        if row is not None:
            lag = row.get(b"lag")
            state.lag = None if lag is None else int(lag)
            state.pending = int(row.get(b"pending") or 0)
            state.last_delivered = bytes(row.get(b"last-delivered-id") or b"0-0")
        summary = self._ok(pending, "XPENDING", t.stream, missing_ok=True)
        if summary is not None and row is not None:
            count, smallest, _, consumers = summary
            state.pending = int(count)
            state.retrying = sum(int(n) for name, n in consumers or [] if _text(name) == RETRY_CONSUMER)
            state.oldest_pending_age = (
                max(0, now_ms - id_ms(bytes(smallest))) / 1000 if int(count) and smallest else 0.0)
        raw = self._ok(leases, "HGETALL", consumer_leases_key(t.stream, t.group))
        if raw is not None:
            values = raw.values() if isinstance(raw, dict) else raw[1::2]
            holders = [parse_holder(v) for v in values]
            state.consumers = sum(1 for h in holders if h is not None and h.expires_ms > now_ms)
        return state

    async def _undelivered(self, out: Poll, now_ms: int) -> None:
        """The age of each group's first unread entry (one more round trip, when any has one)."""
        todo = [(key, g) for key, g in out.groups.items()
                if g.exists and g.last_delivered is not None and g.lag != 0]
        for g in out.groups.values():
            if g.exists and g.lag == 0:
                g.oldest_undelivered_age = 0.0
        if not todo:
            return
        pipe = self.client.pipeline(transaction=False)
        for (stream, _), g in todo:
            pipe.execute_command("XRANGE", stream, id_successor(g.last_delivered or b"0-0"), "+",
                                 "COUNT", 1)
        for ((stream, _), g), reply in zip(todo, await pipe.execute(raise_on_error=False),
                                           strict=True):
            rows = self._ok(reply, "XRANGE", stream)
            if rows is None:
                continue
            g.oldest_undelivered_age = (
                max(0, now_ms - id_ms(bytes(rows[0][0]))) / 1000 if rows else 0.0)

    def _ok(self, reply: Any, command: str, key: str, *, missing_ok: bool = False) -> Any:
        """``reply``, or None (logged once per command and key) when it is an error."""
        if not isinstance(reply, Exception):
            return reply
        kind = classify(reply)
        if missing_ok and (kind is Kind.NOGROUP or "no such key" in str(reply).lower()):
            return None
        if kind is Kind.TRANSIENT or isinstance(reply, OSError):
            raise reply
        where = (command, key)
        if kind is Kind.NOPERM:
            if where not in self._denied:
                self._denied.add(where)
                self.log.warning("metrics_permission_denied", command=command, key=key or None,
                                 hint=f"grant +{command.lower().replace(' ', '|')} on this key to the "
                                      "worker's Redis user for these metrics (docs/operations.md)")
        elif where not in self._failing:
            self._failing.add(where)
            self.log.warning("metrics_poll_error", command=command, key=key or None,
                             error=_describe(reply))
        return None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _describe(exc: BaseException) -> str:
    text = redact_url(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
