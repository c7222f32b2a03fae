"""``streamflow info``: what is in the server - streams, groups, consumers, dead letters.

:func:`collect_info` reads it into :class:`StreamInfo` / :class:`GroupInfo` /
:class:`ConsumerInfo` (the JSON document of ``info --json`` is their ``to_json()``);
:func:`cmd_info` is the command. Dead-letter streams are found by
:func:`streamflow.keys.dead_letter_stream` (the default naming: ``<stream>:dlq``) and
shown with their stream, not as streams of their own. Whether a consumer is live or
stopped, and when parked retries are due, comes from :mod:`~streamflow.admin.liveness`;
the job counts of each registered queue from :func:`~streamflow.admin.queues.collect_queues`.

Without stream names, ``info`` lists the server's streams with ``SCAN``. A Redis user
restricted to some keys (see ``docs/security.md``) may not be allowed to: ``info`` then
says to name the streams; streams the user may not read are left out and named.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoPermissionError, ResponseError

from ..connection import Connection, redact_url, server_time_ms
from ..deadletter import OnProgress
from ..errors import AdminError, UnknownStream
from ..keys import (
    DLQ_SUFFIX,
    RETRY_CONSUMER,
    dead_letter_stream,
    id_ms,
    parse_id,
    replay_stream,
    replayed_from,
)
from .liveness import RetryInfo, parked_retries, read_leases
from .progress import progress
from .queues import QueuesReport, collect_queues
from .render import emit_json, render_info, render_queues
from .runner import redis_url, run

__all__ = ["ConsumerInfo", "GroupInfo", "InfoReport", "StreamInfo", "cmd_info", "collect_info"]

#: Streams from which on ``info`` shows its progress (on a terminal).
PROGRESS_MIN_STREAMS = 50

#: What ``info`` says when it may not list or read the server's streams.
NAME_STREAMS_HINT = "name the streams to show instead: streamflow info STREAM [STREAM ...]"


# -- reply decoding -------------------------------------------------------------------------


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


def _dlq_of(key: bytes) -> bytes:
    """The default dead-letter stream of stream key ``key`` (any bytes, kept exactly)."""
    name = key.decode("utf-8", "surrogateescape")
    return dead_letter_stream(name).encode("utf-8", "surrogateescape")


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


# -- the data -------------------------------------------------------------------------------


@dataclass
class ConsumerInfo:
    """One consumer of a group (``streamflow:retry`` holds entries waiting for retry).

    A live worker that has not been delivered anything yet holds a lease but is no
    consumer of the group in Redis yet: it is listed from its lease, ``idle_ms`` None.
    """

    name: str
    pending: int
    idle_ms: int | None
    inactive_ms: int | None  # Redis 7.2+/Valkey: time since the last successful read
    state: str | None = None  # live / stopped / unknown (leases unreadable); None: retry

    @property
    def is_retry(self) -> bool:
        """True for the pseudo-consumer that parks failed entries until their backoff elapses."""
        return self.name == RETRY_CONSUMER

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name, "pending": self.pending, "idle_ms": self.idle_ms,
            "inactive_ms": self.inactive_ms, "waiting_for_retry": self.is_retry,
            "state": self.state,
        }


@dataclass
class GroupInfo:
    """One consumer group of a stream."""

    name: str
    consumer_count: int  # real consumers: the retry pseudo-consumer is not counted
    pending: int
    last_delivered_id: str
    entries_read: int | None
    lag: int | None  # None when the server cannot tell (pre-7 servers, after deletions)
    waiting_for_retry: int
    oldest_pending: dict[str, Any] | None
    consumers: list[ConsumerInfo] = field(default_factory=list)
    live_consumers: int | None = None  # None when the leases cannot be read
    retries: list[RetryInfo] = field(default_factory=list)  # parked, soonest due first
    replay: dict[str, Any] | None = None  # the group's replay stream, when it holds entries

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name, "consumer_count": self.consumer_count,
            "live_consumers": self.live_consumers, "pending": self.pending,
            "waiting_for_retry": self.waiting_for_retry,
            "retries": [r.to_json() for r in self.retries],
            "in_progress": self.pending - self.waiting_for_retry,
            "lag": self.lag, "entries_read": self.entries_read,
            "last_delivered_id": self.last_delivered_id, "oldest_pending": self.oldest_pending,
            "consumers": [c.to_json() for c in self.consumers], "replay": self.replay,
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


# -- collecting -----------------------------------------------------------------------------


async def _list_streams(client: Any) -> list[bytes]:
    """Names of the streams to show: every stream key, DLQs replaced by their stream."""
    keys: set[bytes] = set()
    try:
        async for key in client.scan_iter(_type="stream", count=1000):
            keys.add(bytes(key))
    except NoPermissionError:
        raise AdminError(
            f"this Redis user may not list the server's keys (SCAN is not allowed); "
            f"{NAME_STREAMS_HINT}") from None
    # Recognising a default-named DLQ is the inverse of keys.dead_letter_stream.
    suffix = DLQ_SUFFIX.encode()
    names = {k for k in keys if not k.endswith(suffix)}
    # A dead-letter stream whose stream is gone is still reported (under its stream's name).
    names |= {k[: -len(suffix)] for k in keys if k.endswith(suffix) and len(k) > len(suffix)}
    # Replay streams (keys.replay_stream) are shown with their stream's groups, not apart.
    replays = {k: replayed_from(_s(k)) for k in names}
    names = {k for k, origin in replays.items() if origin is None}
    names |= {origin[0].encode() for origin in replays.values() if origin is not None}
    return sorted(names)


async def _oldest_pending(client: Any, key: bytes, group: Any, now_ms: int) -> dict[str, Any] | None:
    summary = await client.execute_command("XPENDING", key, group)
    if not summary or summary[1] is None:
        return None
    min_id = summary[1]
    oldest: dict[str, Any] = {"id": _s(min_id), "age_ms": max(0, now_ms - id_ms(_s(min_id))),
                              "consumer": None, "idle_ms": None, "deliveries": None}
    rows = await client.execute_command("XPENDING", key, group, min_id, min_id, 1)
    if rows:
        _, owner, idle, deliveries = rows[0]
        oldest.update(consumer=_s(owner), idle_ms=int(idle), deliveries=int(deliveries))
    return oldest


async def _group_info(client: Any, key: bytes, row: Any, last_generated: Any, now_ms: int) -> GroupInfo:
    g = _pairs(row)
    name = _s(g["name"])
    pending = int(g.get("pending") or 0)
    last_delivered = _s(g.get("last-delivered-id") or b"0-0")
    lag = _int(g.get("lag"))
    if lag is None and last_generated is not None and (
        parse_id(last_delivered) >= parse_id(_s(last_generated))
    ):
        lag = 0  # caught up (servers without the lag field, or lag unknown after XDEL)
    consumers: list[ConsumerInfo] = []
    for c_row in await client.execute_command("XINFO", "CONSUMERS", key, g["name"]) or []:
        c = _pairs(c_row)
        consumers.append(ConsumerInfo(
            name=_s(c["name"]), pending=int(c.get("pending") or 0),
            idle_ms=int(c.get("idle") or 0), inactive_ms=_int(c.get("inactive")),
        ))
    leases = await read_leases(client, key, bytes(g["name"]), now_ms)
    known = {c.name for c in consumers}
    consumers += [ConsumerInfo(name=n, pending=0, idle_ms=None, inactive_ms=None)
                  for n in sorted(leases.live - known)]
    consumers.sort(key=lambda c: (c.is_retry, c.name))
    for consumer in consumers:
        consumer.state = leases.state(consumer.name)
    waiting = sum(c.pending for c in consumers if c.is_retry)
    oldest = await _oldest_pending(client, key, g["name"], now_ms) if pending else None
    return GroupInfo(
        # XINFO GROUPS counts the retry pseudo-consumer too: count real consumers only.
        name=name, consumer_count=sum(1 for c in consumers if not c.is_retry), pending=pending,
        last_delivered_id=last_delivered, entries_read=_int(g.get("entries-read")), lag=lag,
        waiting_for_retry=waiting, oldest_pending=oldest, consumers=consumers,
        live_consumers=sum(1 for c in consumers if c.state == "live")
        if leases.readable else None,
        retries=await parked_retries(client, key, g["name"], leases) if waiting else [],
        replay=await _replay(client, key, g["name"]),
    )


async def _replay(client: Any, key: bytes, group: Any) -> dict[str, Any] | None:
    """The replay stream of ``group`` on ``key`` (``dlq replay`` writes there), if not empty:
    its name, length, and what the group has yet to handle of it (pending, lag)."""
    name = replay_stream(_s(key), _s(group))
    try:
        length = int(await client.execute_command("XLEN", name))
        if not length:
            return None
        rows = await client.execute_command("XINFO", "GROUPS", name)
    except NoPermissionError:
        return None  # a user restricted to some keys: the stream's own figures still show
    out: dict[str, Any] = {"name": name, "length": length, "pending": None, "lag": None}
    for row in rows or []:
        g = _pairs(row)
        if _s(g.get("name")) == _s(group):
            out.update(pending=int(g.get("pending") or 0), lag=_int(g.get("lag")))
    return out


async def _stream_info(client: Any, key: bytes, now_ms: int) -> StreamInfo:
    dlq_key = _dlq_of(key)
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


@dataclass
class InfoReport:
    """What ``info`` found: the streams, and those left out because the user may not read them."""

    streams: list[StreamInfo]
    hidden: list[str] = field(default_factory=list)


async def collect_info(
    client: Any, streams: Sequence[str], progress: OnProgress | None = None
) -> InfoReport:
    """Info on ``streams`` (all streams when empty); unknown named streams raise UnknownStream.

    ``progress(done, total)`` is called after each stream (for a progress indicator).

    Listed (not named) streams the Redis user may not read are left out and named in
    :attr:`InfoReport.hidden`; a user who may not list keys gets an AdminError saying to
    name the streams.
    """
    now_ms = await server_time_ms(client)
    keys = [s.encode() for s in streams] if streams else await _list_streams(client)
    out = InfoReport([])
    for done, key in enumerate(keys, 1):
        if progress is not None:
            progress(done - 1, len(keys))
        try:
            info = await _stream_info(client, key, now_ms)
        except NoPermissionError:
            if streams:
                raise
            out.hidden.append(_s(key))
            continue
        if info.kind not in ("stream", "none"):
            if streams:
                raise UnknownStream(f"key {info.name!r} is a {info.kind}, not a stream")
            info.kind = "none"  # listed only for its dead-letter stream
        if streams and not info.exists and not info.dlq_length:
            raise UnknownStream(f"stream {info.name!r} does not exist (nor {info.dlq_name!r})")
        out.streams.append(info)
    return out


# -- the command ----------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    """``streamflow info [STREAM ...]``: print streams, groups, consumers and DLQ lengths."""
    url = redis_url(args)
    streams: list[str] = list(args.streams or [])

    async def work(client: Any, conn: Connection) -> tuple[str, InfoReport, QueuesReport]:
        with progress("reading streams", min_total=PROGRESS_MIN_STREAMS) as bar:
            report = await collect_info(client, streams, bar.update)
        queues = await collect_queues(client, report.streams if streams else None)
        return await _server_version(client), report, queues

    version, report, queues = run(url, work)
    safe = redact_url(url)
    hint = NAME_STREAMS_HINT if report.hidden else None
    if args.json:
        emit_json({
            "server": {"url": safe, "version": version},
            "streams": [s.to_json() for s in report.streams],
            "hidden_streams": report.hidden, "hint": hint,
            "queues": [q.to_json() for q in queues.queues], "hidden_queues": queues.hidden,
            "queues_note": queues.note,
        })
    else:
        jobs = render_queues(queues)
        print(render_info(safe, version, report.streams, report.hidden, hint)
              + (f"\n\n{jobs}" if jobs else ""))
    return 0
