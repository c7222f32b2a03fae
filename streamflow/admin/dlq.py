"""``streamflow dlq list|replay``: the command layer over :mod:`streamflow.deadletter`.

Reading and replaying records (and what "a record of this stream" means) live in
:mod:`streamflow.deadletter`; this module resolves the dead-letter stream's name
(:func:`streamflow.keys.dead_letter_stream`, with ``--dlq`` as the template), runs the
work through :func:`streamflow.admin.runner.run` and prints the result.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..connection import Connection
from ..deadletter import DeadLetter, ReplayResult, dlq_exists, read_records, replay
from ..keys import dead_letter_stream
from .render import emit_json, record_json, render_records, render_replay
from .runner import redis_url, run

__all__ = ["cmd_dlq_list", "cmd_dlq_replay"]


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
                                           group=args.group)
        return length, records, more

    length, records, more = run(url, work)
    if args.json:
        emit_json({
            "stream": stream, "dlq": dlq, "group": args.group, "dlq_length": length, "more": more,
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

    async def work(client: Any, conn: Connection) -> ReplayResult:
        return await replay(client, stream, dlq, ids, group=args.group)

    result = run(url, work)
    if args.json:
        emit_json({"stream": stream, "dlq": dlq, "group": args.group, **result.to_json()})
    else:
        print(render_replay(stream, dlq, result))
    return 1 if result.not_found or result.skipped else 0
