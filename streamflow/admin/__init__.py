"""Operator commands: ``streamflow info``, ``top``, ``dlq``, ``publish``, ``job`` and ``jobs``.

``streamflow info [STREAM ...]``
    Streams (all keys of type stream when none are named, dead-letter streams
    ``<stream>:dlq`` folded into their stream), their consumer groups (pending, lag,
    oldest pending entry, entries parked on ``streamflow:retry`` waiting for their
    backoff) and each group's consumers with their pending count, idle time and state
    (live: a process holds the name's lease; stopped), and when each parked retry runs.

``streamflow top [STREAM ...]``
    A live view refreshed every ``--interval`` seconds: per stream and group the rates
    (added/s, handled/s), lag, pending, oldest pending age, live/stopped consumers, DLQ
    length, and the job queues' counts; ``q`` quits. See :mod:`streamflow.admin.top_live`
    (the command, keys, signals), :mod:`~streamflow.admin.top` (what a refresh reads, the
    rates), :mod:`~streamflow.admin.top_model` (its data), :mod:`~streamflow.admin.top_screen`
    (the layout) and :mod:`~streamflow.admin.top_views` (rich, plain ANSI, pipe).

``streamflow dlq list STREAM`` / ``dlq show [STREAM] ID``
    The records of the dead-letter stream of ``STREAM`` (default ``STREAM:dlq``); one
    record in full (without STREAM: looked up in every ``*:dlq`` stream).

``streamflow dlq replay STREAM (--id ID ... | --all)``
    Re-publish records' original fields, byte for byte, to ``STREAM`` and delete them
    from the dead-letter stream: one atomic script call (``scripts.REPLAY``) per record,
    so a record is never both replayed and kept, nor replayed twice.

``streamflow dlq purge STREAM (--id ID ... | --all) [--yes]``
    Delete records, after a confirmation on a terminal. ``list``, ``replay`` and
    ``purge`` narrow the records with ``--group`` and ``--error-type``.

``streamflow publish STREAM (KEY=VALUE ... | --json PAYLOAD | --file FILE)``
    Add entries: plain fields, or streamflow's JSON layout (one entry, or one per line of
    a JSON Lines file or stdin, pipelined): :mod:`streamflow.admin.publish`.

``streamflow job ID`` / ``streamflow jobs [list] QUEUE`` / ``jobs cancel|requeue ID``
    One job, the jobs of a queue by status, cancelling and requeueing: see
    :mod:`streamflow.admin.jobs` (``jobs QUEUE`` is short for ``jobs list QUEUE``; a
    queue named ``cancel`` is ``jobs list cancel`` or ``jobs --queue cancel``).

Every command takes ``--redis-url`` (default ``STREAMFLOW_REDIS_URL`` or
``redis://localhost:6379/0``) and ``--json`` (one JSON document on stdout). Passwords
in URLs are never printed. The commands run synchronously: each call of a handler is
one :func:`anyio.run` around a :class:`~streamflow.connection.Connection`.

The package:

* ``admin`` (this module): the argument parsers of the commands.
* :mod:`~streamflow.admin.runner`: which server, one connection per command, and the
  translation of redis-py errors into ``ServerUnavailable`` / ``AdminError``.
* :mod:`~streamflow.admin.info`: ``info``'s data (``StreamInfo``...) and command.
* :mod:`~streamflow.admin.liveness`: live or stopped consumers and retry due times,
  from the consumer-name leases.
* :mod:`~streamflow.admin.dlq`: the ``dlq`` commands; reading records is
  :mod:`streamflow.deadletter`'s, choosing, replaying and deleting them
  :mod:`~streamflow.admin.records`'.
* :mod:`~streamflow.admin.publish`: the ``publish`` command.
* :mod:`~streamflow.admin.progress`: the progress indicator of long commands (on a
  terminal only).
* :mod:`~streamflow.admin.jobs`: the ``job`` and ``jobs`` commands;
  :mod:`~streamflow.admin.queues`: what they (and ``info``) read of the job queues.
* :mod:`~streamflow.admin.render`: tables, durations, timestamps, JSON output.

``AdminError`` and ``UnknownStream`` are defined in :mod:`streamflow.errors` and
re-exported here.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..cli_types import positive_float as _positive_float
from ..cli_types import positive_int as _positive_int
from ..errors import AdminError, UnknownStream
from .dlq import cmd_dlq_list, cmd_dlq_purge, cmd_dlq_replay, cmd_dlq_show
from .info import cmd_info
from .jobs import (
    CANCEL_REASON,
    STATUSES,
    cmd_job,
    cmd_jobs_cancel,
    cmd_jobs_list,
    cmd_jobs_requeue,
    expand_shorthand,
)
from .publish import cmd_publish

__all__ = [
    "AdminError",
    "UnknownStream",
    "add_admin_commands",
    "cmd_dlq_list",
    "cmd_dlq_purge",
    "cmd_dlq_replay",
    "cmd_dlq_show",
    "cmd_info",
    "cmd_job",
    "cmd_jobs_cancel",
    "cmd_jobs_list",
    "cmd_jobs_requeue",
    "cmd_publish",
    "expand_shorthand",
]


def add_admin_commands(sub: Any) -> None:
    """Add ``info``, ``dlq list|show|replay|purge``, ``publish``, ``job`` and
    ``jobs list|cancel|requeue`` to the sub-command action of the ``streamflow`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    opts = common.add_argument_group("connection and output")
    opts.add_argument(
        "--redis-url", metavar="URL",
        help="server URL (default: STREAMFLOW_REDIS_URL or redis://localhost:6379/0)",
    )
    opts.add_argument("--json", action="store_true", help="print one JSON document")

    info = sub.add_parser(
        "info", parents=[common], help="show streams, consumer groups, consumers and DLQs",
        description="Show streams (all streams when none are named), their consumer groups "
        "(pending, lag, oldest pending entry, entries waiting for retry), consumers and "
        "dead-letter stream lengths.",
    )
    info.add_argument("streams", nargs="*", metavar="STREAM", help="streams to show (default all)")
    info.set_defaults(handler=cmd_info)

    _add_dlq_commands(sub, common)
    _add_publish_command(sub)
    _add_job_commands(sub, common)
    _add_top_command(sub)


def _add_dlq_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``dlq list|show|replay|purge`` (see :mod:`streamflow.admin.dlq`)."""
    dlq = sub.add_parser(
        "dlq", help="list, show, replay or purge dead-letter records",
        description="List, show, replay or delete the records of a stream's dead-letter stream.",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    name = argparse.ArgumentParser(add_help=False)
    name.add_argument(
        "--dlq", metavar="NAME",
        help="dead-letter stream (default STREAM:dlq; {stream} is replaced by STREAM)",
    )
    dlq_opt = argparse.ArgumentParser(add_help=False, parents=[name])
    dlq_opt.add_argument("stream", metavar="STREAM", help="the original stream")
    dlq_opt.add_argument(
        "--group", metavar="GROUP",
        help="only records of this consumer group (default: every group's)",
    )
    dlq_opt.add_argument(
        "--error-type", dest="error_types", action="append", metavar="NAME",
        help="only records of this exception type, as dlq list shows it (e.g. ValueError); "
        "repeatable",
    )

    lst = dlq_sub.add_parser(
        "list", parents=[dlq_opt, common], help="list dead-letter records (oldest first)",
        description="List the dead-letter records of STREAM, oldest first.",
    )
    lst.add_argument("--limit", type=_positive_int, default=100, metavar="N",
                     help="show at most N records (default 100)")
    lst.set_defaults(handler=cmd_dlq_list)

    show = dlq_sub.add_parser(
        "show", parents=[name, common], help="show one dead-letter record in full",
        description="Show one dead-letter record in full: original stream, group, entry id, "
        "consumer, handler, attempts, time, error type, message and traceback, the original "
        "fields and the decoded payload. Without STREAM the record is looked up in every "
        "dead-letter stream named *:dlq. Exit status 2 when there is no such record.",
    )
    show.add_argument("stream", nargs="?", metavar="STREAM", help="the original stream")
    show.add_argument("id", metavar="ID", help="the dead-letter record id (as dlq list shows)")
    show.set_defaults(handler=cmd_dlq_show)

    rep = dlq_sub.add_parser(
        "replay", parents=[dlq_opt, common],
        help="re-publish dead-letter records to their stream and remove them from the DLQ",
        description="Re-publish the original fields of dead-letter records (byte for byte) "
        "and delete the records from the dead-letter stream, atomically per record. Each "
        "record goes back only to the group that dead-lettered it: to the replay stream "
        "STREAM:replay:GROUP, which that group's workers read alongside STREAM (the other "
        "groups of STREAM never see it). Exit status 0 when every requested record was "
        "replayed, 1 when some were not found or skipped.",
    )
    _which(rep, "replay")
    rep.set_defaults(handler=cmd_dlq_replay)

    purge = dlq_sub.add_parser(
        "purge", parents=[dlq_opt, common], help="delete dead-letter records",
        description="Delete dead-letter records of STREAM (the ones given, or every one "
        "present now, narrowed by --group and --error-type). On a terminal it asks first; "
        "otherwise it refuses without --yes. Exit status 0 when every selected record was "
        "deleted, 1 when some were not found or skipped or the answer was no.",
    )
    _which(purge, "delete")
    purge.add_argument("--yes", "-y", action="store_true",
                       help="do not ask for confirmation (needed when stdin is no terminal)")
    purge.set_defaults(handler=cmd_dlq_purge)


def _which(parser: argparse.ArgumentParser, verb: str) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", action="append", metavar="ID",
                       help=f"dead-letter record id to {verb} (as shown by dlq list); repeatable")
    which.add_argument("--all", action="store_true",
                       help="every record of STREAM present when the command starts")


def _add_publish_command(sub: Any) -> None:
    """``publish STREAM`` (see :mod:`streamflow.admin.publish`)."""
    pub = sub.add_parser(
        "publish", help="add entries to a stream: fields, a JSON payload or a JSON Lines file",
        description="Add entries to STREAM. KEY=VALUE fields make one entry with plain fields, "
        "as a producer that is not streamflow would write them (handlers see msg.fields). "
        "--json makes one entry in streamflow's layout (the field sf:json), as App.publish "
        "does (handlers see msg.payload); --file does that for every line of a JSON Lines "
        "file (- for stdin; blank lines are skipped), pipelined. A file is checked whole "
        "first: a bad line publishes nothing. From stdin a bad line stops the command; "
        "every line before it was published. Prints the new id (for a file: the count and "
        "the first and last id). Payloads are limited to STREAMFLOW_MAX_PAYLOAD_BYTES "
        "(default 1 MiB). Exit status 2 on errors.",
    )
    pub.add_argument("stream", metavar="STREAM", help="the stream")
    pub.add_argument("fields", nargs="*", metavar="KEY=VALUE", help="fields of one entry")
    pub.add_argument("--json", dest="json_payload", metavar="PAYLOAD",
                     help="one JSON payload, e.g. '{\"order_id\": 7}'")
    pub.add_argument("--file", metavar="FILE",
                     help="JSON Lines: one entry per line, like --json (- for stdin)")
    pub.add_argument("--maxlen", type=_positive_int, metavar="N",
                     help="cap the stream at about N entries (XADD MAXLEN ~ N)")
    pub.add_argument("--quiet", "-q", action="store_true",
                     help="print nothing (no ids, no progress)")
    pub.add_argument(
        "--redis-url", metavar="URL",
        help="server URL (default: STREAMFLOW_REDIS_URL or redis://localhost:6379/0)",
    )
    pub.set_defaults(handler=cmd_publish)


def _interval(text: str) -> float:
    """``--interval``: seconds, at least 0.1."""
    value = _positive_float(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"must be >= 0.1 seconds, got {value:g}")
    return value


def _cmd_top(args: argparse.Namespace) -> int:
    from .top_live import cmd_top  # termios and the views: only for this command

    return cmd_top(args)


def _add_top_command(sub: Any) -> None:
    """``top [STREAM ...]`` (see :mod:`streamflow.admin.top_live`)."""
    top = sub.add_parser(
        "top", help="live view of streams, consumer groups and job queues (q quits)",
        description="A live view of streams (all streams when none are named), refreshed every "
        "--interval seconds: per stream entries added per second (IN/S) and DLQ length, per "
        "consumer group entries handled per second (OUT/S: deliveries minus the growth of the "
        "pending list), lag, pending entries, age of the oldest pending entry and live/stopped "
        "consumers; and the job queues' counts. On a terminal it is a full screen (rich when "
        "installed: pip install 'streamflow-redis[live]'); q or Ctrl-C quits. When stdout is not "
        "a terminal it prints one snapshot per refresh.",
    )
    top.add_argument("streams", nargs="*", metavar="STREAM", help="streams to show (default all)")
    top.add_argument("--redis-url", "--url", dest="redis_url", metavar="URL",
                     help="server URL (default: STREAMFLOW_REDIS_URL or redis://localhost:6379/0)")
    top.add_argument("--interval", type=_interval, default=1.0, metavar="SECONDS",
                     help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true",
                     help="print one snapshot (rates over one interval) and exit")
    top.add_argument("--json", action="store_true",
                     help="JSON: one document per refresh, one per line (with --once: one)")
    top.add_argument("--plain", action="store_true",
                     help="draw the screen with plain ANSI sequences even when rich is installed")
    top.set_defaults(handler=_cmd_top)


def _add_job_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``job ID`` and ``jobs list|cancel|requeue`` (see :mod:`streamflow.admin.jobs`)."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--queue", metavar="QUEUE",
                       help="the job's queue (default: look in every registered queue)")
    job = sub.add_parser(
        "job", parents=[where, common], help="show one job: status, arguments, result or error",
        description="Show one job: status, task, arguments, attempts, worker, times, and its "
        "result (succeeded), error and traceback (failed) or reason (cancelled). Exit status 2 "
        "when no queue keeps a job with this id.",
    )
    job.add_argument("id", metavar="ID", help="the job id")
    job.set_defaults(handler=cmd_job)

    jobs = sub.add_parser(
        "jobs", help="list a queue's jobs by status; cancel or requeue a job",
        description="jobs QUEUE is short for jobs list QUEUE. A queue named list, cancel or "
        "requeue is given as: jobs list cancel, or jobs --queue cancel.",
    )
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True)
    lst = jobs_sub.add_parser(
        "list", parents=[common], allow_abbrev=False,
        help="counts per status and the jobs of a queue (default command)",
        description="Count the jobs of QUEUE per status (queued, scheduled, running, retrying, "
        "failed) and show the first few of each, or with --status up to --limit jobs of one "
        "status. Nothing is scanned: each status is read where it lives (stream, consumer "
        "group, scheduled set, dead-letter stream).",
    )
    lst.add_argument("queue_name", nargs="?", metavar="QUEUE", help="the queue")
    lst.add_argument("--queue", metavar="QUEUE",
                     help="the queue (for a queue named list, cancel or requeue)")
    lst.add_argument("--status", choices=STATUSES,
                     help="only jobs of this status (started is running; succeeded and "
                     "cancelled: among the last --limit entries workers took)")
    lst.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                     help="read at most N jobs per status (default 20; 5 without --status)")
    lst.set_defaults(handler=cmd_jobs_list)
    cancel = jobs_sub.add_parser(
        "cancel", parents=[where, common], allow_abbrev=False,
        help="cancel a job that has not finished",
        description="Cancel a queued, scheduled, running or retrying job: it never runs (again); "
        "a running async task is cancelled at once, a running plain function runs to its end "
        "and its result is discarded. Jobs that depend on it are cancelled too. Exit status "
        "1 when the job had finished already.",
    )
    cancel.add_argument("id", metavar="ID", help="the job id")
    cancel.add_argument("--reason", default=CANCEL_REASON, metavar="TEXT",
                        help=f"stored as the job's reason (default {CANCEL_REASON!r})")
    cancel.set_defaults(handler=cmd_jobs_cancel)
    requeue = jobs_sub.add_parser(
        "requeue", parents=[where, common], allow_abbrev=False,
        help="run a failed or cancelled job again",
        description="Run a failed or cancelled job again with the same arguments; its "
        "attempts count from 1. Exit status 1 when the job was neither failed nor cancelled.",
    )
    requeue.add_argument("id", metavar="ID", help="the job id")
    requeue.set_defaults(handler=cmd_jobs_requeue)
