"""The job queues as the operator commands see them: registry, counts, lists of jobs.

Everything is read where it lives, nothing is scanned (:func:`queue_counts`,
:func:`list_jobs`):

* queued: the entries after the group's last-delivered id (all of the stream while no
  worker created the group); counted by the group's lag, or the stream's length (after
  an XDEL ahead of the group, e.g. a cancelled job, the lag is unknown: the entries are
  counted, up to :data:`QUEUED_COUNT_CAP`);
* scheduled: the scheduled set, soonest first, with due times; counted by ZCARD;
* running (``started`` is the same: what ``job ID`` says): entries pending in
  ``streamflow:jobs`` under a worker (XPENDING per consumer); retrying: pending under
  ``streamflow:retry``; both counted by the group's XPENDING summary;
* failed: the dead-letter stream's records, newest first, with their jobs' state;
  counted by its length. A requeued job's record stays there: it is not listed (nor
  the older records of a job that failed again after a requeue);
* succeeded, cancelled: among the last ``limit`` entries the group delivered, by their
  jobs' state (a job cancelled before any worker read it has no entry left); no count.

No list reads more than ``limit`` entries, members or records. Job hashes are read with
one pipelined HMGET each. :func:`collect_queues` gives ``streamflow info`` the counts of
every registered queue (``streamflow:queues``). Redis errors propagate (to
:mod:`~streamflow.admin.runner`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoPermissionError

from ..deadletter import parse_record
from ..errors import AdminError
from ..jobs.state import text
from ..jobs.wire import JOB, TASK
from ..keys import (
    JOBS_GROUP,
    QUEUES_KEY,
    RETRY_CONSUMER,
    dead_letter_stream,
    id_successor,
    job_key,
    scheduled_key,
)
from .render import iso

if TYPE_CHECKING:
    from .info import StreamInfo

__all__ = [
    "COUNTED", "QUEUED_COUNT_CAP", "JobList", "QueueCounts", "QueuesReport", "collect_queues",
    "list_jobs", "queue_counts", "queues_named", "registered_queues",
]

#: The statuses with a count (and shown, a few jobs each, by ``jobs QUEUE``).
COUNTED = ("queued", "scheduled", "running", "retrying", "failed")
QUEUED_COUNT_CAP = 1000  # entries counted one by one when the group's lag is unknown
_FIELDS = ("status", "task", "enqueued_at", "scheduled_for", "ended_at", "attempt", "worker",
           "error_type", "error", "reason")


def _pairs(row: Any) -> dict[str, Any]:
    if isinstance(row, dict):
        return {text(k) or "": v for k, v in row.items()}
    return {text(row[i]) or "": row[i + 1] for i in range(0, len(row) - 1, 2)}


async def registered_queues(client: Any) -> dict[str, str]:
    """The queue registry ``streamflow:queues``: queue name -> stream, by name."""
    raw = await client.execute_command("HGETALL", QUEUES_KEY)
    return {k: text(v) or "" for k, v in sorted(_pairs(raw or []).items())}


async def queues_named(client: Any, queue: str | None) -> dict[str, str]:
    """``{queue: stream}`` of registered queue ``queue`` (every registered queue when None);
    an AdminError naming the registered queues when ``queue`` is not one of them."""
    queues = await registered_queues(client)
    if queue is None:
        return queues
    if queue not in queues:
        known = ", ".join(queues) or "none"
        raise AdminError(f"queue {queue!r} is not registered in {QUEUES_KEY} "
                         f"(registered: {known})")
    return {queue: queues[queue]}


# -- counting -------------------------------------------------------------------------------


@dataclass
class QueueCounts:
    """How many jobs of a queue are where (see the module docstring)."""

    queue: str
    stream: str
    queued: int
    queued_exact: bool  # False: at least ``queued`` (the lag is unknown after deletions)
    scheduled: int
    running: int
    retrying: int
    failed: int  # records in the dead-letter stream (a requeued job's record stays)
    last_delivered_id: str | None  # None: no worker created the group yet

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


async def queue_counts(client: Any, queue: str, stream: str) -> QueueCounts:
    """Count the jobs of ``queue`` per status, from the stream, its group, sets and DLQ."""
    kind = text(await client.execute_command("TYPE", stream))
    if kind not in ("stream", "none"):
        raise AdminError(f"the stream of queue {queue!r}, {stream!r}, is a {kind}")
    group = None
    if kind == "stream":
        rows = await client.execute_command("XINFO", "GROUPS", stream) or []
        group = next((g for g in map(_pairs, rows) if text(g.get("name")) == JOBS_GROUP), None)
    counts = QueueCounts(
        queue, stream, queued=0, queued_exact=True,
        scheduled=int(await client.execute_command("ZCARD", scheduled_key(stream))),
        running=0, retrying=0,
        failed=int(await client.execute_command("XLEN", dead_letter_stream(stream))),
        last_delivered_id=None)
    if group is None:
        counts.queued = int(await client.execute_command("XLEN", stream))
        return counts
    counts.last_delivered_id = text(group.get("last-delivered-id")) or "0-0"
    if group.get("lag") is not None:
        counts.queued = int(group["lag"])
    else:  # unknown after an XDEL (a cancelled job) ahead of the group: count, up to a cap
        rows = await client.execute_command("XRANGE", stream, id_successor(
            counts.last_delivered_id), "+", "COUNT", QUEUED_COUNT_CAP)
        counts.queued, counts.queued_exact = len(rows or []), len(rows or []) < QUEUED_COUNT_CAP
    if int(group.get("pending") or 0):
        summary = await client.execute_command("XPENDING", stream, JOBS_GROUP)
        for name, n in summary[3] or []:
            if text(name) == RETRY_CONSUMER:
                counts.retrying += int(n)
            else:
                counts.running += int(n)
    return counts


# -- listing --------------------------------------------------------------------------------


@dataclass
class JobList:
    """Jobs of one status, as far as ``--limit`` reads."""

    status: str
    jobs: list[dict[str, Any]]
    total: int | None  # the status's count (None: not counted)
    read: int  # entries, members or records read
    skipped: int = 0  # failed: records of jobs requeued since (not failed now, or newer record)

    @property
    def more(self) -> bool:
        """True when jobs of this status were left unread."""
        return self.total is not None and self.total > self.read

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"status": self.status, "total": self.total, "more": self.more,
                "skipped": self.skipped, "jobs": self.jobs}


def _ms(value: Any) -> int | None:
    return int(value) if value not in (None, b"", "") else None


def _iso(ms: Any) -> str | None:
    value = _ms(ms)
    return iso(value) if value else None


async def _states(client: Any, stream: str, ids: Sequence[str]) -> list[dict[str, str | None]]:
    """The hash fields :data:`_FIELDS` of each job (all None when its state is gone)."""
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for jid in ids:
        pipe.execute_command("HMGET", job_key(stream, jid), *_FIELDS)
    return [dict(zip(_FIELDS, map(text, row), strict=True)) for row in await pipe.execute()]


def _row(jid: str, state: dict[str, str | None], **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": jid, "task": state["task"], "status": state["status"],
        "attempt": _ms(state["attempt"]), "worker": state["worker"],
        "enqueued_at": _iso(state["enqueued_at"]), "ended_at": _iso(state["ended_at"]),
        "error_type": state["error_type"], "error": state["error"], "reason": state["reason"],
    }
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


async def _from_entries(client: Any, stream: str, entries: list[Any], status: str | None,
                        pending: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """Rows of the jobs of stream entries ``[id, fields]`` (of ``status`` only, if given)."""
    found = []
    for eid, raw in entries:
        f = {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)} if raw else {}
        found.append((text(eid) or "", text(f.get(JOB)) or text(eid) or "", text(f.get(TASK))))
    rows = []
    for (eid, jid, task), st in zip(found, await _states(client, stream, [j for _, j, _ in found]),
                                    strict=True):
        if status is not None and st["status"] != status:
            continue
        row = _row(jid, st, entry=eid)
        row["task"] = row["task"] or task
        if pending is not None:  # running or retrying: the group's view wins
            _, owner, idle, deliveries = pending[eid]
            row.update(status="retrying" if text(owner) == RETRY_CONSUMER else "started",
                       worker=None if text(owner) == RETRY_CONSUMER else text(owner),
                       attempt=int(deliveries), idle_ms=int(idle))
        rows.append(row)
    return rows


async def _pending(client: Any, counts: QueueCounts, status: str, limit: int) -> JobList:
    stream = counts.stream
    total = counts.running if status == "running" else counts.retrying
    rows: list[Any] = []
    if total and status == "retrying":
        rows = await client.execute_command(
            "XPENDING", stream, JOBS_GROUP, "-", "+", limit, RETRY_CONSUMER)
    elif total:
        for c in map(_pairs, await client.execute_command("XINFO", "CONSUMERS", stream,
                                                          JOBS_GROUP) or []):
            name = text(c.get("name")) or ""
            if name != RETRY_CONSUMER and int(c.get("pending") or 0) and len(rows) < limit:
                rows += await client.execute_command(
                    "XPENDING", stream, JOBS_GROUP, "-", "+", limit - len(rows), name)
    pending = {text(r[0]) or "": r for r in rows}
    pipe = client.pipeline(transaction=False)
    for eid in pending:
        pipe.execute_command("XRANGE", stream, eid, eid)
    entries = [got[0] if got else [eid, None]
               for eid, got in zip(pending, await pipe.execute() if pending else [], strict=True)]
    jobs = await _from_entries(client, stream, entries, None, pending)
    return JobList(status, jobs, total, len(rows))


async def _failed(client: Any, counts: QueueCounts, limit: int) -> JobList:
    stream = counts.stream
    raw = await client.execute_command("XREVRANGE", dead_letter_stream(stream), "+", "-",
                                       "COUNT", limit)
    records = [parse_record(i, f) for i, f in raw or [] if f is not None]
    mine = [r for r in records if r.stream in ("", stream)]
    ids = [r.fields.get(JOB.decode()) or r.id for r in mine]
    out = JobList("failed", [], counts.failed, len(raw or []))
    seen: set[str] = set()
    for rec, jid, st in zip(mine, ids, await _states(client, stream, ids), strict=True):
        if st["status"] not in (None, "failed") or jid in seen:
            out.skipped += 1  # requeued since: not failed now, or failed again (newer record)
            continue
        seen.add(jid)
        out.jobs.append({
            "id": jid, "task": rec.fields.get(TASK.decode()) or st["task"], "status": "failed",
            "attempt": rec.attempts, "worker": rec.consumer, "error_type": rec.error_type,
            "error": rec.error, "ended_at": iso(rec.failed_at_ms), "entry": rec.id,
            "dlq_id": rec.dlq_id, "state_kept": st["status"] is not None})
    return out


async def list_jobs(client: Any, counts: QueueCounts, status: str, limit: int,
                    now_ms: int) -> JobList:
    """At most ``limit`` jobs of ``status`` in the queue of ``counts``."""
    stream, last = counts.stream, counts.last_delivered_id
    if status == "scheduled":
        members = await client.zrange(scheduled_key(stream), 0, limit - 1, withscores=True)
        ids = [text(m) or "" for m, _ in members]
        jobs = [_row(jid, st, due_at=iso(int(due)), due_in_ms=int(due) - now_ms)
                for jid, (_, due), st in zip(ids, members, await _states(client, stream, ids),
                                             strict=True)]
        return JobList(status, jobs, counts.scheduled, len(members))
    if status in ("running", "started", "retrying"):
        return await _pending(client, counts, "retrying" if status == "retrying" else "running",
                              limit)
    if status == "failed":
        return await _failed(client, counts, limit)
    if status == "queued":
        start = "-" if last is None else id_successor(last)
        entries = await client.execute_command("XRANGE", stream, start, "+", "COUNT", limit)
        jobs = await _from_entries(client, stream, list(entries or []), None)
        for job in jobs:
            job["status"] = "queued"
        return JobList(status, jobs, counts.queued, len(entries or []))
    if last is None:  # succeeded, cancelled: no worker read the queue yet
        return JobList(status, [], None, 0)
    entries = await client.execute_command("XREVRANGE", stream, last, "-", "COUNT", limit)
    return JobList(status, await _from_entries(client, stream, list(entries or []), status),
                   None, len(entries or []))


# -- info -----------------------------------------------------------------------------------


@dataclass
class QueuesReport:
    """The queues ``streamflow info`` shows, and those it could not read."""

    queues: list[QueueCounts] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # queues whose keys the user may not read
    note: str | None = None  # why no queue is shown, when the registry cannot be read


async def collect_queues(client: Any, streams: Sequence[StreamInfo] | None) -> QueuesReport:
    """Counts of every registered queue, or (``streams`` given) of those among ``streams``.

    Of named streams, the registry is read only when one of them has the workers' group
    ``streamflow:jobs``: a user allowed only some streams asks for nothing else.
    """
    out = QueuesReport()
    names = None if streams is None else {s.name for s in streams
                                          if any(g.name == JOBS_GROUP for g in s.groups)}
    if names is not None and not names:
        return out
    try:
        queues = await registered_queues(client)
    except NoPermissionError:
        out.note = f"job queues not shown: this Redis user may not read {QUEUES_KEY}"
        return out
    for queue, stream in queues.items():
        if names is None or stream in names:
            try:
                out.queues.append(await queue_counts(client, queue, stream))
            except NoPermissionError:
                out.hidden.append(queue)
    return out
