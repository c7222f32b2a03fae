"""How the operator commands print: aligned tables, durations, timestamps, JSON documents.

Nothing here talks to Redis. Text that came from Redis (stream names, error messages)
goes through :func:`clean` before it reaches a terminal, so control characters in a
key or an exception message cannot move the cursor or hide output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..deadletter import DeadLetter
from .records import ReplayResult

if TYPE_CHECKING:  # only annotations: info.py and queues.py import this module to print
    from ..jobs.state import JobInfo
    from .info import StreamInfo
    from .liveness import RetryInfo
    from .queues import JobList, QueueCounts, QueuesReport

__all__ = [
    "clean",
    "duration",
    "emit_json",
    "iso",
    "record_json",
    "render_info",
    "render_job",
    "render_jobs",
    "render_queues",
    "render_records",
    "render_replay",
    "table",
    "truncate",
]

ERROR_WIDTH = 60  # characters of the error shown in the ``dlq list`` table
RETRIES_SHOWN = 10  # parked retries listed per group in the ``info`` text


def emit_json(doc: Any) -> None:
    """Print ``doc`` as one indented JSON document on stdout."""
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def clean(text: str) -> str:
    """Make text safe for one table cell: control characters escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def truncate(text: str, width: int) -> str:
    """``clean(text)``, cut to ``width`` characters with ``...`` when longer."""
    text = clean(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def duration(ms: int | None) -> str:
    """Human duration: ``850ms``, ``12.3s``, ``5m12s``, ``3h04m``, ``2d03h``."""
    if ms is None:
        return "-"
    ms = max(ms, 0)
    if ms < 1000:
        return f"{ms}ms"
    sec = ms / 1000
    if sec < 60:
        return f"{sec:.1f}s"
    whole = int(sec)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def iso(ms: int) -> str:
    """A millisecond Unix time as ISO 8601 UTC (``...T12:00:00.123Z``); ``-`` for none."""
    if ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """Aligned plain-text table; columns whose index is in ``right`` are right-aligned."""
    cells = [[clean(str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    right_set = set(right)

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right_set else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


# -- info -----------------------------------------------------------------------------------


_STATE = {"live": "live", "stopped": "stopped", "unknown": "?", None: "-"}  # None: retry


def retry_due(r: RetryInfo) -> str:
    """When a parked retry runs: ``in 1.2s to 2.2s``, ``now``, or ``after backoff`` if unknown."""
    if r.due_in_ms is None:
        return "after backoff (no live worker: policy unknown)"
    window = r.window_ms or 0
    if r.due_in_ms <= 0:
        late = -r.due_in_ms
        if late <= window:
            return "now (at the next reclaim pass)"
        return f"now, {duration(late)} past due (waiting for a free slot or a reclaim pass)"
    return f"in {duration(r.due_in_ms)} to {duration(r.due_in_ms + window)}"


def render_info(
    url: str, version: str, streams: list[StreamInfo], hidden: Sequence[str] = (),
    hint: str | None = None,
) -> str:
    """The text of ``streamflow info``: streams, groups, consumers, parked retries."""
    head = f"{version} at {url}" if version else url
    note = ""
    if hidden:
        names = ", ".join(clean(h) for h in hidden[:5]) + (", ..." if len(hidden) > 5 else "")
        note = (f"\n\n{len(hidden)} stream(s) not shown: this Redis user may not read them "
                f"({names}); {hint or ''}").rstrip("; ")
    if not streams:
        return f"{head}: no streams{note}"
    blocks = [head, ""]
    blocks.append(table(
        ["STREAM", "LENGTH", "FIRST ID", "LAST ID", "GROUPS", "DLQ", "DLQ LENGTH"],
        [
            [s.name, s.length if s.exists else "(missing)", s.first_id or "-", s.last_id or "-",
             len(s.groups), s.dlq_name if s.dlq_length else "-", s.dlq_length]
            for s in streams
        ],
        right=(1, 4, 6),
    ))
    group_rows: list[list[Any]] = []
    consumer_rows: list[list[Any]] = []
    retry_rows: list[list[Any]] = []
    replay_rows: list[list[Any]] = []
    unreadable = False
    for s in streams:
        for g in s.groups:
            oldest = g.oldest_pending
            unreadable = unreadable or g.live_consumers is None
            group_rows.append([
                s.name, g.name, g.consumer_count,
                "?" if g.live_consumers is None else g.live_consumers,
                g.pending, g.waiting_for_retry,
                "?" if g.lag is None else g.lag, g.last_delivered_id,
                f"{duration(oldest['age_ms'])} ({oldest['id']})" if oldest else "-",
            ])
            for c in g.consumers:
                consumer_rows.append([
                    s.name, g.name, c.name, _STATE.get(c.state, "?"), c.pending,
                    duration(c.idle_ms), "waiting for retry" if c.is_retry
                    else "nothing delivered yet" if c.idle_ms is None else "",
                ])
            for r in g.retries[:RETRIES_SHOWN]:
                retry_rows.append([s.name, g.name, r.id, r.attempt, duration(r.idle_ms),
                                   retry_due(r)])
            if g.replay is not None:
                rp = g.replay
                replay_rows.append([s.name, g.name, rp["name"], rp["length"],
                                    "?" if rp["pending"] is None else rp["pending"],
                                    "?" if rp["lag"] is None else rp["lag"]])
            if g.waiting_for_retry > RETRIES_SHOWN:
                retry_rows.append([s.name, g.name, f"... {g.waiting_for_retry - RETRIES_SHOWN}"
                                   " more (--json lists up to 1000)", "", "", ""])
    if group_rows:
        blocks += ["", table(
            ["STREAM", "GROUP", "CONSUMERS", "LIVE", "PENDING", "RETRY WAIT", "LAG",
             "LAST DELIVERED", "OLDEST PENDING"],
            group_rows, right=(2, 3, 4, 5, 6),
        )]
    if consumer_rows:
        blocks += ["", table(
            ["STREAM", "GROUP", "CONSUMER", "STATE", "PENDING", "IDLE", "NOTE"],
            consumer_rows, right=(4, 5),
        )]
        if unreadable:
            blocks.append("(STATE ?: this Redis user may not read the consumer leases, "
                          "HGETALL streamflow:consumers:<stream>:<group>)")
    if retry_rows:
        blocks += ["", table(
            ["STREAM", "GROUP", "PARKED RETRY", "ATTEMPT", "IDLE", "RUNS AGAIN"],
            retry_rows, right=(3, 4),
        )]
    if replay_rows:
        blocks += ["", table(
            ["STREAM", "GROUP", "REPLAY STREAM", "LENGTH", "PENDING", "LAG"],
            replay_rows, right=(3, 4, 5),
        )]
    return "\n".join(blocks) + note


# -- dlq ------------------------------------------------------------------------------------


def record_json(rec: DeadLetter) -> dict[str, Any]:
    """One dead-letter record as ``dlq list --json`` shows it."""
    return {
        "dlq_id": rec.dlq_id, "stream": rec.stream, "id": rec.id, "group": rec.group,
        "consumer": rec.consumer, "attempts": rec.attempts, "error_type": rec.error_type,
        "error": rec.error, "failed_at_ms": rec.failed_at_ms, "failed_at": iso(rec.failed_at_ms),
        "handler": rec.handler, "traceback": rec.traceback, "fields": rec.fields,
    }


def render_records(
    stream: str, dlq: str, length: int, records: list[DeadLetter], more: bool, limit: int
) -> str:
    """The text of ``streamflow dlq list``: a count and a table of the records."""
    if not records:
        return f"{dlq}: no dead-letter records of stream {stream}"
    lines = [f"{dlq}: {length} record{'s' if length != 1 else ''}", ""]
    lines.append(table(
        ["DLQ ID", "ORIGINAL ID", "GROUP", "ATTEMPTS", "ERROR TYPE", "ERROR", "FAILED AT"],
        [
            [r.dlq_id, r.id, r.group, r.attempts, r.error_type,
             truncate(r.error, ERROR_WIDTH), iso(r.failed_at_ms)]
            for r in records
        ],
        right=(3,),
    ))
    if more:
        lines.append(f"\n(more records not shown; use --limit N above {limit})")
    return "\n".join(lines)


def render_replay(stream: str, dlq: str, result: ReplayResult) -> str:
    """The text of ``streamflow dlq replay``: what was replayed, not found and skipped."""
    n = len(result.replayed)
    lines = [f"replayed {n} record{'s' if n != 1 else ''} of {stream} from {dlq}"]
    for group, (to, count) in sorted(result.by_group().items()):
        who = f"group {group}" if group else "records naming no group"
        lines.append(f"  {who}: {count} record{'s' if count != 1 else ''} -> {to}"
                     + ("" if group else " (every group of the stream will see them)"))
    for r in result.replayed:
        lines.append(f"  {r['dlq_id']} -> {r['to']} {r['new_id']} (originally {r['id'] or '?'})")
    if result.not_found:
        lines.append(
            f"not found in {dlq}: {len(result.not_found)} ({', '.join(result.not_found)})"
        )
    for s in result.skipped:
        lines.append(f"skipped {s['dlq_id']}: {clean(s['reason'])}")
    return "\n".join(lines)


# -- jobs -----------------------------------------------------------------------------------


def _value(value: Any) -> str:
    """A job's argument or result as one line of JSON."""
    return clean(json.dumps(value, ensure_ascii=False, default=repr))


def render_job(info: JobInfo, stream: str) -> str:
    """The text of ``streamflow job ID``: one field a line, then the result or the error."""
    def at(value: datetime | None) -> str:
        return iso(int(value.timestamp() * 1000)) if value is not None else "-"

    lines = [f"job {clean(info.id)} in queue {clean(info.queue)} (stream {clean(stream)})", ""]
    fields = [
        ("status", info.status.value), ("task", info.task or "-"),
        ("args", _value(info.args)), ("kwargs", _value(info.kwargs)),
        ("attempts", "-" if info.attempt is None else info.attempt),
        ("worker", info.worker or "-"), ("enqueued", at(info.enqueued_at)),
        ("scheduled for", at(info.scheduled_for)),
        ("started", at(info.started_at) + ("  (its entry's last delivery or lease renewal)"
                                            if info.status.value == "started" else "")),
        ("ended", at(info.ended_at)), ("entry", info.entry or "-"),
    ]
    if info.status.value == "succeeded":
        fields.append(("result", _value(info.result)))
    elif info.error_type or info.error:
        fields.append(("error", f"{info.error_type or 'Error'}: {info.error or ''}"))
    if info.reason:
        fields.append(("reason", info.reason))
    width = max(len(name) for name, _ in fields) + 2
    lines += [f"{name.ljust(width)}{clean(str(value))}" for name, value in fields]
    if info.traceback:
        lines += ["", "traceback:"] + ["  " + clean(line) for line in info.traceback.splitlines()]
    return "\n".join(lines)


_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "queued": [("ENTRY", "entry"), ("ENQUEUED", "enqueued_at")],
    "scheduled": [("DUE", "due_at"), ("IN", "due_in_ms"), ("ENQUEUED", "enqueued_at")],
    "running": [("WORKER", "worker"), ("ATTEMPT", "attempt"), ("IDLE", "idle_ms")],
    "retrying": [("ATTEMPTS", "attempt"), ("PARKED FOR", "idle_ms")],
    "failed": [("ATTEMPTS", "attempt"), ("ERROR", "error"), ("FAILED AT", "ended_at")],
    "succeeded": [("ATTEMPTS", "attempt"), ("WORKER", "worker"), ("ENDED", "ended_at")],
    "cancelled": [("REASON", "reason"), ("ENDED", "ended_at")],
}


def _cell(job: dict[str, Any], key: str) -> str:
    value = job.get(key)
    if key.endswith("_ms"):
        return duration(value) if value is not None else "-"
    if key == "error":
        return truncate(f"{job.get('error_type') or 'Error'}: {value or ''}", ERROR_WIDTH)
    return "-" if value is None else str(value)


def _job_table(jl: JobList) -> str:
    cols = [("JOB ID", "id"), ("TASK", "task"), *_COLUMNS.get(jl.status, _COLUMNS["running"])]
    return table([h for h, _ in cols], [[_cell(j, k) for _, k in cols] for j in jl.jobs])


def render_jobs(counts: QueueCounts, lists: Sequence[JobList], limit: int, one: bool) -> str:
    """The text of ``streamflow jobs QUEUE``: the counts, then a table per status."""
    lines = [f"queue {clean(counts.queue)} (stream {clean(counts.stream)})", "",
             _counts_table([counts], with_names=False)]
    if counts.last_delivered_id is None:
        lines.append("(no worker has read this queue yet)")
    for jl in lists:
        if not one and not jl.jobs and not jl.skipped:
            continue
        shown = f"{len(jl.jobs)} of {jl.total}" if jl.total is not None else str(len(jl.jobs))
        lines += ["", f"{jl.status} ({shown}):"]
        if jl.status in ("succeeded", "cancelled"):
            lines[-1] = (f"{jl.status} among the last {jl.read} entries workers took "
                         f"({len(jl.jobs)}):")
        if jl.jobs:
            lines.append(_job_table(jl))
        if jl.skipped:
            lines.append(f"({jl.skipped} dead-letter record(s) of jobs requeued since "
                         "not shown)")
        if jl.more and one:
            lines.append(f"(more not shown; use --limit N above {limit})")
    return "\n".join(lines)


def _counts_table(queues: Sequence[QueueCounts], *, with_names: bool = True) -> str:
    heads = ["QUEUED", "SCHEDULED", "RUNNING", "RETRYING", "FAILED"]
    rows = [[c.queued if c.queued_exact else f"{c.queued}+", c.scheduled, c.running,
             c.retrying, c.failed] for c in queues]
    if with_names:
        return table(["QUEUE", "STREAM", *heads],
                     [[c.queue, c.stream, *r] for c, r in zip(queues, rows, strict=True)],
                     right=range(2, 7))
    return table(heads, rows, right=range(5))


def render_queues(report: QueuesReport) -> str:
    """The jobs part of ``streamflow info``: one line of counts per queue ('' if none)."""
    lines = [_counts_table(report.queues)] if report.queues else []
    if report.hidden:
        lines.append(f"queues not shown: this Redis user may not read their keys "
                     f"({', '.join(clean(q) for q in report.hidden)})")
    if report.note:
        lines.append(f"({report.note})")
    return "\n".join(lines)
