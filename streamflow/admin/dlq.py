"""``streamflow dlq list|show|replay|purge``: the command layer over the dead-letter records.

The record layout and reading are :mod:`streamflow.deadletter`'s; choosing records,
replaying and deleting them :mod:`streamflow.admin.records`'. This module resolves the
dead-letter stream's name (:func:`streamflow.keys.dead_letter_stream`, with ``--dlq`` as
the template), runs the work through :func:`streamflow.admin.runner.run`, asks before
deleting, shows progress on a terminal (:mod:`streamflow.admin.progress`) and prints
the result.

Every command that works on several records means them the same way: ``--id ID ...``
or ``--all`` (the records present when the command starts), narrowed by ``--group``
(the consumer group that dead-lettered them) and ``--error-type`` (the recorded
exception type, e.g. ``ValueError``; repeatable).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from redis.exceptions import NoPermissionError

from ..codec import JSON_FIELD, loads
from ..connection import Connection
from ..deadletter import (
    DeadLetter,
    Selection,
    check_ids,
    dlq_exists,
    parse_record,
    read_record,
    read_records,
)
from ..errors import AdminError
from ..keys import DLQ_SUFFIX, dead_letter_stream
from .progress import progress
from .records import ReplayResult, Selected, delete_records, replay, select
from .render import clean, emit_json, iso, record_json, render_records, render_replay
from .runner import redis_url, run

__all__ = ["cmd_dlq_list", "cmd_dlq_purge", "cmd_dlq_replay", "cmd_dlq_show"]


def _error_types(args: argparse.Namespace) -> frozenset[str] | None:
    names: list[str] | None = getattr(args, "error_types", None)
    return frozenset(names) if names else None


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """``--group`` / ``--error-type`` as they appear in the JSON documents."""
    types = _error_types(args)
    return {"group": args.group, "error_types": sorted(types) if types else None}


def _describe(args: argparse.Namespace) -> str:
    """`` (group billing, error type ValueError)``, or ``""`` without filters."""
    parts = [f"group {args.group}"] if args.group else []
    types = _error_types(args)
    if types:
        parts.append(f"error type {' or '.join(sorted(types))}")
    return f" ({', '.join(parts)})" if parts else ""


def cmd_dlq_list(args: argparse.Namespace) -> int:
    """``streamflow dlq list STREAM``: print the dead-letter records of STREAM."""
    url = redis_url(args)
    stream: str = args.stream
    dlq = dead_letter_stream(stream, args.dlq)

    async def work(client: Any, conn: Connection) -> tuple[int, list[DeadLetter], bool]:
        if not await dlq_exists(client, stream, dlq):
            return 0, [], False
        length = int(await client.execute_command("XLEN", dlq))
        records, more = await read_records(client, stream, dlq, limit=args.limit,
                                           group=args.group, error_types=_error_types(args))
        return length, records, more

    length, records, more = run(url, work)
    if args.json:
        emit_json({
            "stream": stream, "dlq": dlq, **_filters(args), "dlq_length": length, "more": more,
            "records": [record_json(r) for r in records],
        })
    else:
        print(render_records(stream, dlq, length, records, more, args.limit))
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    """``streamflow dlq replay STREAM (--id ID ... | --all)``; exit 1 if some were not replayed."""
    url = redis_url(args)
    stream: str = args.stream
    dlq = dead_letter_stream(stream, args.dlq)
    ids: list[str] | None = None if args.all else list(args.ids or [])

    with progress(f"replaying {dlq}") as bar:
        async def work(client: Any, conn: Connection) -> ReplayResult:
            return await replay(client, stream, dlq, ids, group=args.group,
                                error_types=_error_types(args), progress=bar.update)

        result = run(url, work)
    if args.json:
        emit_json({"stream": stream, "dlq": dlq, **_filters(args), **result.to_json()})
    else:
        print(render_replay(stream, dlq, result))
    return 1 if result.not_found or result.skipped else 0


# -- show -----------------------------------------------------------------------------------


async def _find_record(client: Any, dlq_id: str) -> tuple[str, DeadLetter]:
    """The one dead-letter stream (``*:dlq``) holding record ``dlq_id``, and the record."""
    try:
        keys = [k async for k in client.scan_iter(match="*" + DLQ_SUFFIX, _type="stream",
                                                  count=1000)]
    except NoPermissionError:
        raise AdminError("this Redis user may not list keys (SCAN): name the stream, "
                         f"streamflow dlq show STREAM {dlq_id}") from None
    keys = sorted(set(keys))
    found: list[tuple[str, DeadLetter]] = []
    hidden = 0  # dead-letter streams this Redis user may not read
    for i in range(0, len(keys), 100):
        pipe = client.pipeline(transaction=False)
        for key in keys[i:i + 100]:
            pipe.execute_command("XRANGE", key, dlq_id, dlq_id)
        for key, rows in zip(keys[i:i + 100], await pipe.execute(raise_on_error=False),
                             strict=True):
            if isinstance(rows, NoPermissionError):
                hidden += 1
            elif isinstance(rows, Exception):
                raise rows
            elif rows and rows[0][1] is not None:
                found.append((clean(key.decode("utf-8", "replace")),
                              parse_record(rows[0][0], rows[0][1])))
    if not found:
        unread = f", {hidden} of which this Redis user may not read" if hidden else ""
        raise AdminError(f"no dead-letter record {dlq_id} in any dead-letter stream "
                         f"(*{DLQ_SUFFIX}{unread}); name the stream: streamflow dlq show STREAM "
                         f"{dlq_id} [--dlq NAME]")
    if len(found) > 1:
        raise AdminError(f"record id {dlq_id} is in several dead-letter streams ("
                         + ", ".join(n for n, _ in found) + "): name the stream, "
                         f"streamflow dlq show STREAM {dlq_id}")
    return found[0]


def _payload(rec: DeadLetter) -> tuple[bool, Any, str]:
    """``(has_payload, payload, error)``: the decoded ``sf:json`` field of the original."""
    for i in range(0, len(rec.original) - 1, 2):
        if rec.original[i] == JSON_FIELD.encode():
            try:
                return True, loads(rec.original[i + 1]), ""
            except ValueError as exc:
                return True, None, f"not valid JSON: {exc}"
    return False, None, ""


def render_record(dlq: str, rec: DeadLetter) -> str:
    """The text of ``streamflow dlq show``: every field of the record, then its entry."""
    rows = [("stream", rec.stream or "-"), ("entry id", rec.id or "-"),
            ("group", rec.group or "-"), ("consumer", rec.consumer or "-"),
            ("handler", rec.handler or "-"), ("attempts", str(rec.attempts)),
            ("failed at", iso(rec.failed_at_ms)), ("error type", rec.error_type or "-"),
            ("error", rec.error or "-")]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"dead-letter record {rec.dlq_id} in {clean(dlq)}", ""]
    lines += [f"{name.ljust(width)}{clean(value)}" for name, value in rows]
    if rec.traceback:
        lines += ["", "traceback:"] + ["  " + clean(t) for t in rec.traceback.splitlines()]
    fields = rec.fields
    lines += ["", f"fields ({len(fields)}):"]
    name_width = max((len(clean(k)) for k in fields), default=0) + 2
    lines += [f"  {clean(k).ljust(name_width)}{clean(v)}" for k, v in fields.items()]
    has, payload, error = _payload(rec)
    if has:
        lines += ["", "payload:"]
        text = error or json.dumps(payload, indent=2, ensure_ascii=False, default=repr)
        lines += ["  " + clean(t) for t in text.splitlines()]
    return "\n".join(lines)


def cmd_dlq_show(args: argparse.Namespace) -> int:
    """``streamflow dlq show [STREAM] ID``: one dead-letter record in full."""
    url = redis_url(args)
    dlq_id: str = args.id
    check_ids([dlq_id])

    async def work(client: Any, conn: Connection) -> tuple[str, DeadLetter]:
        if args.stream is None:
            if args.dlq and "{stream}" in args.dlq:
                raise AdminError(f"--dlq {args.dlq!r} needs a STREAM to fill in {{stream}}: "
                                 f"streamflow dlq show STREAM {dlq_id} --dlq {args.dlq}")
            if args.dlq:
                rec = await read_record(client, args.dlq, dlq_id)
                if rec is None:
                    raise AdminError(f"no dead-letter record {dlq_id} in {args.dlq}")
                return args.dlq, rec
            return await _find_record(client, dlq_id)
        dlq = dead_letter_stream(args.stream, args.dlq)
        rec = await read_record(client, dlq, dlq_id) if await dlq_exists(
            client, args.stream, dlq) else None
        if rec is None:
            raise AdminError(f"no dead-letter record {dlq_id} in {dlq} (see streamflow dlq "
                             f"list {args.stream})")
        return dlq, rec

    dlq, rec = run(url, work)
    if args.json:
        has, payload, error = _payload(rec)
        doc = {"dlq": dlq, **record_json(rec)}
        if has:
            doc.update({"payload": payload, "payload_error": error or None})
        emit_json(doc)
    else:
        print(render_record(dlq, rec))
    return 0


# -- purge ----------------------------------------------------------------------------------


def _confirm(question: str) -> bool:
    """Ask ``question`` on stderr, read the answer from the terminal: y or yes is yes."""
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        sys.stderr.write("\n")  # end of input (Ctrl-D): the prompt's line ends here
    return answer.strip().lower() in ("y", "yes")


def render_purge(stream: str, dlq: str, chosen: Selected, deleted: int) -> str:
    """The text of ``streamflow dlq purge``: what was deleted, not found and skipped."""
    gone = len(chosen.records) - deleted
    lines = [f"deleted {deleted} record{'s' if deleted != 1 else ''} of {stream} from {dlq}"]
    if gone:
        lines.append(f"{gone} record(s) were gone already (replayed or deleted meanwhile)")
    if chosen.not_found:
        lines.append(f"not found in {dlq}: {len(chosen.not_found)} "
                     f"({', '.join(chosen.not_found)})")
    lines += [f"skipped {s['dlq_id']}: {clean(s['reason'])}" for s in chosen.skipped]
    return "\n".join(lines)


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    """``streamflow dlq purge STREAM (--id ID ... | --all)``: delete dead-letter records,
    after a confirmation on a terminal (``--yes`` skips it; without a terminal it is
    required). Exit 1 when some records were not found, skipped, or the answer was no."""
    url = redis_url(args)
    stream: str = args.stream
    dlq = dead_letter_stream(stream, args.dlq)
    ids: list[str] | None = None if args.all else list(args.ids or [])
    selection = Selection(stream, args.group, _error_types(args))

    with progress(f"reading {dlq}") as bar:
        async def choose(client: Any, conn: Connection) -> Selected:
            return await select(client, dlq, ids, selection, progress=bar.update)

        chosen = run(url, choose)
    n = len(chosen.records)
    what = f"{n} record{'s' if n != 1 else ''}{_describe(args)}"
    if n and not args.yes:
        if not sys.stdin.isatty():
            raise AdminError(f"not deleting {what} from {dlq} without confirmation: stdin "
                             "is not a terminal; pass --yes")
        if not _confirm(f"Delete {what} from {dlq}? [y/N] "):
            print(f"nothing deleted from {dlq}", file=sys.stderr)
            return 1
    deleted = 0
    if n:
        record_ids = [r.dlq_id for r in chosen.records]
        with progress(f"deleting from {dlq}") as bar:
            async def purge(client: Any, conn: Connection) -> int:
                return await delete_records(client, dlq, record_ids, progress=bar.update)

            deleted = run(url, purge)
    if args.json:
        emit_json({"stream": stream, "dlq": dlq, **_filters(args), "matched": n,
                   "deleted": deleted, "ids": [r.dlq_id for r in chosen.records],
                   "not_found": chosen.not_found, "skipped": chosen.skipped})
    else:
        print(render_purge(stream, dlq, chosen, deleted))
    return 1 if chosen.not_found or chosen.skipped or deleted < n else 0
