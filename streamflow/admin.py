"""Operator commands: ``streamflow info`` and ``streamflow dlq list|replay``.

``streamflow info [STREAM ...]``
    Streams (all keys of type stream when none are named, dead-letter streams
    ``<stream>:dlq`` folded into their stream), their consumer groups (pending, lag,
    oldest pending entry, entries parked on ``streamflow:retry`` waiting for their
    backoff) and each group's consumers with their pending count and idle time.

``streamflow dlq list STREAM``
    The records of the dead-letter stream of ``STREAM`` (default ``STREAM:dlq``).

``streamflow dlq replay STREAM (--id ID ... | --all)``
    Re-publish records' original fields, byte for byte, to ``STREAM`` and delete them
    from the dead-letter stream: one atomic script call (``scripts.REPLAY``) per record,
    so a record is never both replayed and kept, nor replayed twice.

Every command takes ``--redis-url`` (default ``STREAMFLOW_REDIS_URL`` or
``redis://localhost:6379/0``) and ``--json`` (one JSON document on stdout). Passwords
in URLs are never printed. The commands run synchronously: each call of a handler is
one :func:`anyio.run` around a :class:`~streamflow.connection.Connection`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import scripts
from .cli_types import positive_int as _positive_int
from .config import DEFAULT_REDIS_URL
from .connection import Connection, redact_url
from .consumer import RETRY_CONSUMER
from .deadletter import DeadLetter, parse_record
from .errors import ConfigError, ServerUnavailable, StreamflowError
from .reclaimer import id_successor, parse_id

__all__ = [
    "AdminError",
    "UnknownStream",
    "add_admin_commands",
    "cmd_dlq_list",
    "cmd_dlq_replay",
    "cmd_info",
]

T = TypeVar("T")

DLQ_SUFFIX = ":dlq"
PAGE = 100  # entries per XRANGE page / replay pipeline
ERROR_WIDTH = 60  # characters of the error shown in the ``dlq list`` table
_ID_RE = re.compile(r"^\d+-\d+$")


class AdminError(StreamflowError):
    """An admin command cannot do what was asked (the message says why)."""


class UnknownStream(AdminError):
    """The named stream (and its dead-letter stream) do not exist, or the key is no stream."""


# -- parser ---------------------------------------------------------------------------------


def add_admin_commands(sub: Any) -> None:
    """Add ``info`` and ``dlq list|replay`` to the sub-command action of the ``streamflow`` parser."""
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

    dlq = sub.add_parser(
        "dlq", help="list or replay dead-letter records",
        description="List or replay the records of a stream's dead-letter stream.",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    dlq_opt = argparse.ArgumentParser(add_help=False)
    dlq_opt.add_argument("stream", metavar="STREAM", help="the original stream")
    dlq_opt.add_argument(
        "--dlq", metavar="NAME",
        help="dead-letter stream (default STREAM:dlq; {stream} is replaced by STREAM)",
    )

    lst = dlq_sub.add_parser(
        "list", parents=[dlq_opt, common], help="list dead-letter records (oldest first)",
        description="List the dead-letter records of STREAM, oldest first.",
    )
    lst.add_argument("--limit", type=_positive_int, default=100, metavar="N",
                     help="show at most N records (default 100)")
    lst.set_defaults(handler=cmd_dlq_list)

    rep = dlq_sub.add_parser(
        "replay", parents=[dlq_opt, common],
        help="re-publish dead-letter records to their stream and remove them from the DLQ",
        description="Re-publish the original fields of dead-letter records (byte for byte) "
        "to STREAM and delete the records from the dead-letter stream, atomically per "
        "record. Exit status 0 when every requested record was replayed, 1 when some "
        "were not found or skipped.",
    )
    which = rep.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", action="append", metavar="ID",
                       help="dead-letter record id (as shown by dlq list); repeatable")
    which.add_argument("--all", action="store_true",
                       help="every record of STREAM present when the command starts")
    rep.set_defaults(handler=cmd_dlq_replay)


# -- running ------------------------------------------------------------------------------


def _url(args: argparse.Namespace) -> str:
    url: str | None = getattr(args, "redis_url", None)
    url = url or os.environ.get("STREAMFLOW_REDIS_URL") or DEFAULT_REDIS_URL
    if url.lower().startswith("embedded://"):
        raise ConfigError(
            "redis_url", "embedded:// would start an empty private server; "
            "give the URL of the server to inspect",
        )
    return url


def _run(url: str, work: Callable[[Any, Connection], Awaitable[T]]) -> T:
    """Connect to ``url``, run ``work(client, connection)``, close; map Redis errors."""

    async def main() -> T:
        conn = Connection(url)
        try:
            await conn.check()
            client = await conn.client()
            return await work(client, conn)
        except UnknownStream as exc:
            raise UnknownStream(f"{exc} at {conn.safe_url}") from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            reason = redact_url(str(exc)) or type(exc).__name__
            raise ServerUnavailable(f"lost Redis at {conn.safe_url}: {reason}") from None
        except ResponseError as exc:
            raise AdminError(
                f"Redis at {conn.safe_url} refused a command: {redact_url(str(exc))}"
            ) from None
        except RedisError as exc:
            raise AdminError(f"Redis error at {conn.safe_url}: {redact_url(str(exc))}") from None
        finally:
            await conn.aclose()

    return anyio.run(main)


def _emit_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


# -- small helpers ------------------------------------------------------------------------


def _s(value: Any) -> str:
    """Decode a reply value to str (invalid UTF-8 replaced)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _pairs(row: Sequence[Any] | None) -> dict[str, Any]:
    """A flat ``[key, value, ...]`` reply as a dict with str keys."""
    if not row:
        return {}
    return {_s(row[i]): row[i + 1] for i in range(0, len(row) - 1, 2)}


def _int(value: Any) -> int | None:
    if value is None:
        return None
    return int(value)


def _id_tuple(raw: Any) -> tuple[int, int]:
    return parse_id(_s(raw))


def _id_ms(raw: Any) -> int:
    return _id_tuple(raw)[0]


async def _server_ms(client: Any) -> int:
    sec, usec = await client.execute_command("TIME")
    return int(sec) * 1000 + int(usec) // 1000


async def _server_version(client: Any) -> str:
    try:
        info = await client.info("server")
    except ResponseError:
        return ""
    if info.get("valkey_version"):
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '?')}" if info.get("redis_version") else ""


async def _key_type(client: Any, key: bytes) -> str:
    return _s(await client.execute_command("TYPE", key))


def _dlq_key(stream: str, dlq: str | None) -> str:
    if dlq is None:
        return stream + DLQ_SUFFIX
    return dlq.replace("{stream}", stream)


def _clean(text: str) -> str:
    """Make text safe for one table cell: control characters escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _truncate(text: str, width: int) -> str:
    text = _clean(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _duration(ms: int | None) -> str:
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


def _iso(ms: int) -> str:
    if ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """Aligned plain-text table; columns whose index is in ``right`` are right-aligned."""
    cells = [[_clean(str(c)) for c in row] for row in rows]
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


@dataclass
class ConsumerInfo:
    """One consumer of a group (``streamflow:retry`` holds entries waiting for retry)."""

    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None  # Redis 7.2+/Valkey: time since the last successful read

    @property
    def is_retry(self) -> bool:
        """True for the pseudo-consumer that parks failed entries until their backoff elapses."""
        return self.name == RETRY_CONSUMER

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name, "pending": self.pending, "idle_ms": self.idle_ms,
            "inactive_ms": self.inactive_ms, "waiting_for_retry": self.is_retry,
        }


@dataclass
class GroupInfo:
    """One consumer group of a stream."""

    name: str
    consumer_count: int
    pending: int
    last_delivered_id: str
    entries_read: int | None
    lag: int | None  # None when the server cannot tell (pre-7 servers, after deletions)
    waiting_for_retry: int
    oldest_pending: dict[str, Any] | None
    consumers: list[ConsumerInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name, "consumer_count": self.consumer_count, "pending": self.pending,
            "waiting_for_retry": self.waiting_for_retry,
            "in_progress": self.pending - self.waiting_for_retry,
            "lag": self.lag, "entries_read": self.entries_read,
            "last_delivered_id": self.last_delivered_id, "oldest_pending": self.oldest_pending,
            "consumers": [c.to_json() for c in self.consumers],
        }


@dataclass
class StreamInfo:
    """One stream, its groups and its dead-letter stream."""

    name: str
    exists: bool
    kind: str = "none"  # the key's type: "stream", or "none" when only its DLQ exists
    length: int = 0
    first_id: str | None = None
    last_id: str | None = None
    last_generated_id: str | None = None
    entries_added: int | None = None
    dlq_name: str = ""
    dlq_length: int = 0
    groups: list[GroupInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name, "exists": self.exists, "length": self.length,
            "first_id": self.first_id, "last_id": self.last_id,
            "last_generated_id": self.last_generated_id, "entries_added": self.entries_added,
            "dlq": {"name": self.dlq_name, "length": self.dlq_length},
            "groups": [g.to_json() for g in self.groups],
        }


async def _list_streams(client: Any) -> list[bytes]:
    """Names of the streams to show: every stream key, DLQs replaced by their stream."""
    keys: set[bytes] = set()
    async for key in client.scan_iter(_type="stream", count=1000):
        keys.add(bytes(key))
    suffix = DLQ_SUFFIX.encode()
    names = {k for k in keys if not k.endswith(suffix)}
    # A dead-letter stream whose stream is gone is still reported (under its stream's name).
    names |= {k[: -len(suffix)] for k in keys if k.endswith(suffix) and len(k) > len(suffix)}
    return sorted(names)


async def _group_info(client: Any, key: bytes, row: Any, last_generated: Any, now_ms: int) -> GroupInfo:
    g = _pairs(row)
    name = _s(g["name"])
    pending = int(g.get("pending") or 0)
    last_delivered = _s(g.get("last-delivered-id") or b"0-0")
    lag = _int(g.get("lag"))
    if lag is None and last_generated is not None and (
        _id_tuple(last_delivered) >= _id_tuple(last_generated)
    ):
        lag = 0  # caught up (servers without the lag field, or lag unknown after XDEL)
    consumers: list[ConsumerInfo] = []
    for c_row in await client.execute_command("XINFO", "CONSUMERS", key, g["name"]) or []:
        c = _pairs(c_row)
        consumers.append(ConsumerInfo(
            name=_s(c["name"]), pending=int(c.get("pending") or 0),
            idle_ms=int(c.get("idle") or 0), inactive_ms=_int(c.get("inactive")),
        ))
    consumers.sort(key=lambda c: (c.is_retry, c.name))
    oldest: dict[str, Any] | None = None
    if pending:
        summary = await client.execute_command("XPENDING", key, g["name"])
        if summary and summary[1] is not None:
            min_id = summary[1]
            oldest = {"id": _s(min_id), "age_ms": max(0, now_ms - _id_ms(min_id)),
                      "consumer": None, "idle_ms": None, "deliveries": None}
            rows = await client.execute_command("XPENDING", key, g["name"], min_id, min_id, 1)
            if rows:
                _, owner, idle, deliveries = rows[0]
                oldest.update(consumer=_s(owner), idle_ms=int(idle), deliveries=int(deliveries))
    return GroupInfo(
        name=name, consumer_count=int(g.get("consumers") or 0), pending=pending,
        last_delivered_id=last_delivered, entries_read=_int(g.get("entries-read")), lag=lag,
        waiting_for_retry=sum(c.pending for c in consumers if c.is_retry),
        oldest_pending=oldest, consumers=consumers,
    )


async def _stream_info(client: Any, key: bytes, now_ms: int) -> StreamInfo:
    dlq_key = key + DLQ_SUFFIX.encode()
    info = StreamInfo(name=_s(key), exists=False, dlq_name=_s(dlq_key))
    if await _key_type(client, dlq_key) == "stream":
        info.dlq_length = int(await client.execute_command("XLEN", dlq_key))
    info.kind = await _key_type(client, key)
    if info.kind != "stream":
        return info
    info.exists = True
    s = _pairs(await client.execute_command("XINFO", "STREAM", key))
    info.length = int(s.get("length") or 0)
    first, last = s.get("first-entry"), s.get("last-entry")
    info.first_id = _s(first[0]) if first else None
    info.last_id = _s(last[0]) if last else None
    last_generated = s.get("last-generated-id")
    info.last_generated_id = _s(last_generated) if last_generated is not None else None
    info.entries_added = _int(s.get("entries-added"))
    for row in await client.execute_command("XINFO", "GROUPS", key) or []:
        info.groups.append(await _group_info(client, key, row, last_generated, now_ms))
    info.groups.sort(key=lambda g: g.name)
    return info


async def collect_info(client: Any, streams: Sequence[str]) -> list[StreamInfo]:
    """Info on ``streams`` (all streams when empty); unknown named streams raise UnknownStream."""
    now_ms = await _server_ms(client)
    keys = [s.encode() for s in streams] if streams else await _list_streams(client)
    out: list[StreamInfo] = []
    for key in keys:
        info = await _stream_info(client, key, now_ms)
        if info.kind not in ("stream", "none"):
            if streams:
                raise UnknownStream(f"key {info.name!r} is a {info.kind}, not a stream")
            info.kind = "none"  # listed only for its dead-letter stream
        if streams and not info.exists and not info.dlq_length:
            raise UnknownStream(f"stream {info.name!r} does not exist (nor {info.dlq_name!r})")
        out.append(info)
    return out


def _render_info(url: str, version: str, streams: list[StreamInfo]) -> str:
    head = f"{version} at {url}" if version else url
    if not streams:
        return f"{head}: no streams"
    blocks = [head, ""]
    blocks.append(_table(
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
    for s in streams:
        for g in s.groups:
            oldest = g.oldest_pending
            group_rows.append([
                s.name, g.name, g.consumer_count, g.pending, g.waiting_for_retry,
                "?" if g.lag is None else g.lag, g.last_delivered_id,
                f"{_duration(oldest['age_ms'])} ({oldest['id']})" if oldest else "-",
            ])
            for c in g.consumers:
                consumer_rows.append([
                    s.name, g.name, c.name, c.pending, _duration(c.idle_ms),
                    "waiting for retry" if c.is_retry else "",
                ])
    if group_rows:
        blocks += ["", _table(
            ["STREAM", "GROUP", "CONSUMERS", "PENDING", "RETRY WAIT", "LAG", "LAST DELIVERED",
             "OLDEST PENDING"],
            group_rows, right=(2, 3, 4, 5),
        )]
    if consumer_rows:
        blocks += ["", _table(
            ["STREAM", "GROUP", "CONSUMER", "PENDING", "IDLE", "NOTE"],
            consumer_rows, right=(3, 4),
        )]
    return "\n".join(blocks)


def cmd_info(args: argparse.Namespace) -> int:
    """``streamflow info [STREAM ...]``: print streams, groups, consumers and DLQ lengths."""
    url = _url(args)
    streams: list[str] = list(args.streams or [])

    async def work(client: Any, conn: Connection) -> tuple[str, list[StreamInfo]]:
        return await _server_version(client), await collect_info(client, streams)

    version, infos = _run(url, work)
    safe = redact_url(url)
    if args.json:
        _emit_json({
            "server": {"url": safe, "version": version},
            "streams": [s.to_json() for s in infos],
        })
    else:
        print(_render_info(safe, version, infos))
    return 0


# -- dlq list -------------------------------------------------------------------------------


def _record_json(rec: DeadLetter) -> dict[str, Any]:
    return {
        "dlq_id": rec.dlq_id, "stream": rec.stream, "id": rec.id, "group": rec.group,
        "consumer": rec.consumer, "attempts": rec.attempts, "error_type": rec.error_type,
        "error": rec.error, "failed_at_ms": rec.failed_at_ms, "failed_at": _iso(rec.failed_at_ms),
        "handler": rec.handler, "traceback": rec.traceback, "fields": rec.fields,
    }


def _belongs(rec: DeadLetter, stream: str) -> bool:
    """True when the record came from ``stream`` (a shared DLQ holds several streams' records)."""
    return rec.stream in ("", stream)


async def _check_dlq(client: Any, stream: str, dlq: str) -> bool:
    """True when ``dlq`` is a stream; False when it is absent but ``stream`` exists."""
    kind = await _key_type(client, dlq.encode())
    if kind == "stream":
        return True
    if kind != "none":
        raise UnknownStream(f"key {dlq!r} is a {kind}, not a dead-letter stream")
    if await _key_type(client, stream.encode()) == "none":
        raise UnknownStream(
            f"stream {stream!r} does not exist and has no dead-letter stream {dlq!r}"
        )
    return False


async def read_records(
    client: Any, stream: str, dlq: str, *, limit: int | None = None, end: str = "+"
) -> tuple[list[DeadLetter], bool]:
    """Records of ``stream`` in ``dlq`` up to ``end``, oldest first; ``(records, more_left)``."""
    out: list[DeadLetter] = []
    start = "-"
    while True:
        rows = await client.execute_command("XRANGE", dlq, start, end, "COUNT", PAGE)
        for raw_id, raw in rows or []:
            if raw is None:
                continue
            rec = parse_record(raw_id, raw)
            if _belongs(rec, stream):
                if limit is not None and len(out) >= limit:
                    return out, True
                out.append(rec)
        if not rows or len(rows) < PAGE:
            return out, False
        start = id_successor(rows[-1][0])


def cmd_dlq_list(args: argparse.Namespace) -> int:
    """``streamflow dlq list STREAM``: print the dead-letter records of STREAM."""
    url = _url(args)
    stream: str = args.stream
    dlq = _dlq_key(stream, args.dlq)

    async def work(client: Any, conn: Connection) -> tuple[int, list[DeadLetter], bool]:
        if not await _check_dlq(client, stream, dlq):
            return 0, [], False
        length = int(await client.execute_command("XLEN", dlq))
        records, more = await read_records(client, stream, dlq, limit=args.limit)
        return length, records, more

    length, records, more = _run(url, work)
    if args.json:
        _emit_json({
            "stream": stream, "dlq": dlq, "dlq_length": length, "more": more,
            "records": [_record_json(r) for r in records],
        })
        return 0
    if not records:
        print(f"{dlq}: no dead-letter records of stream {stream}")
        return 0
    print(f"{dlq}: {length} record{'s' if length != 1 else ''}")
    print()
    print(_table(
        ["DLQ ID", "ORIGINAL ID", "GROUP", "ATTEMPTS", "ERROR TYPE", "ERROR", "FAILED AT"],
        [
            [r.dlq_id, r.id, r.group, r.attempts, r.error_type,
             _truncate(r.error, ERROR_WIDTH), _iso(r.failed_at_ms)]
            for r in records
        ],
        right=(3,),
    ))
    if more:
        print(f"\n(more records not shown; use --limit N above {args.limit})")
    return 0


# -- dlq replay -----------------------------------------------------------------------------


@dataclass
class ReplayResult:
    """What ``dlq replay`` did."""

    replayed: list[dict[str, str]] = field(default_factory=list)  # dlq_id, id, new_id
    not_found: list[str] = field(default_factory=list)  # dlq ids not in the DLQ (any more)
    skipped: list[dict[str, str]] = field(default_factory=list)  # dlq_id, reason

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"replayed": self.replayed, "not_found": self.not_found, "skipped": self.skipped}


async def _replay_batch(
    client: Any, stream: str, dlq: str, records: list[DeadLetter], result: ReplayResult
) -> None:
    todo: list[DeadLetter] = []
    for rec in records:
        if not _belongs(rec, stream):
            result.skipped.append({"dlq_id": rec.dlq_id,
                                   "reason": f"record of stream {rec.stream!r}"})
        elif not rec.original:
            result.skipped.append({"dlq_id": rec.dlq_id, "reason": "record has no original fields"})
        else:
            todo.append(rec)
    if not todo:
        return
    pipe = client.pipeline(transaction=False)
    for rec in todo:
        pipe.eval(scripts.REPLAY, 2, dlq, stream, rec.dlq_id, *rec.original)
    replies = await pipe.execute()
    for rec, new_id in zip(todo, replies, strict=True):
        if new_id:
            result.replayed.append({"dlq_id": rec.dlq_id, "id": rec.id, "new_id": _s(new_id)})
        else:
            result.not_found.append(rec.dlq_id)  # replayed or deleted by someone else meanwhile


async def replay(
    client: Any, stream: str, dlq: str, ids: Sequence[str] | None
) -> ReplayResult:
    """Replay the records ``ids`` of ``dlq`` (all of ``stream``'s when None) to ``stream``."""
    if ids is not None:
        bad = [i for i in ids if not _ID_RE.match(i)]
        if bad:
            raise AdminError(f"invalid id {bad[0]!r}: give a full dead-letter record id like "
                             "1700000000000-0 (see streamflow dlq list)")
    result = ReplayResult()
    exists = await _check_dlq(client, stream, dlq)
    kind = await _key_type(client, stream.encode())
    if kind not in ("stream", "none"):
        raise UnknownStream(f"key {stream!r} is a {kind}, not a stream; nothing replayed")
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        if not exists:
            result.not_found += wanted
            return result
        for i in range(0, len(wanted), PAGE):
            chunk = wanted[i:i + PAGE]
            pipe = client.pipeline(transaction=False)
            for dlq_id in chunk:
                pipe.execute_command("XRANGE", dlq, dlq_id, dlq_id)
            found: list[DeadLetter] = []
            for dlq_id, rows in zip(chunk, await pipe.execute(), strict=True):
                if rows and rows[0][1] is not None:
                    found.append(parse_record(rows[0][0], rows[0][1]))
                else:
                    result.not_found.append(dlq_id)
            await _replay_batch(client, stream, dlq, found, result)
        return result
    if not exists:
        return result
    # Only what is there now: records dead-lettered again while we replay are left alone.
    last = await client.execute_command("XREVRANGE", dlq, "+", "-", "COUNT", 1)
    if not last:
        return result
    end = _s(last[0][0])
    start = "-"
    while True:
        rows = await client.execute_command("XRANGE", dlq, start, end, "COUNT", PAGE)
        records = [parse_record(r[0], r[1]) for r in rows or [] if r[1] is not None]
        mine = [r for r in records if _belongs(r, stream)]
        await _replay_batch(client, stream, dlq, mine, result)
        if not rows or len(rows) < PAGE:
            return result
        start = id_successor(rows[-1][0])


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    """``streamflow dlq replay STREAM (--id ID ... | --all)``; exit 1 if some were not replayed."""
    url = _url(args)
    stream: str = args.stream
    dlq = _dlq_key(stream, args.dlq)
    ids: list[str] | None = None if args.all else list(args.ids or [])

    async def work(client: Any, conn: Connection) -> ReplayResult:
        return await replay(client, stream, dlq, ids)

    result = _run(url, work)
    if args.json:
        _emit_json({"stream": stream, "dlq": dlq, **result.to_json()})
    else:
        n = len(result.replayed)
        print(f"replayed {n} record{'s' if n != 1 else ''} from {dlq} to {stream}")
        for r in result.replayed:
            print(f"  {r['dlq_id']} -> {stream} {r['new_id']} (originally {r['id'] or '?'})")
        if result.not_found:
            print(f"not found in {dlq}: {len(result.not_found)} ({', '.join(result.not_found)})")
        for s in result.skipped:
            print(f"skipped {s['dlq_id']}: {_clean(s['reason'])}")
    return 1 if result.not_found or result.skipped else 0
