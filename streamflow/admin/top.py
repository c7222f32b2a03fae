"""``streamflow top``'s model: what one refresh reads, and the rates between two refreshes.

:class:`Sampler` reads the figures of every watched stream in **one pipelined round trip**:
``TIME``, then per stream ``XINFO STREAM`` (length, ``entries-added``), ``XINFO GROUPS``
(lag, pending, ``entries-read``), ``XLEN`` of its dead-letter stream, and per group it knew
from the refresh before ``XPENDING`` (summary: the oldest pending id), ``XINFO CONSUMERS``
(entries parked on ``streamflow:retry``) and the group's consumer-name lease hash
(live or stopped consumers, judged by :func:`~streamflow.admin.liveness.leases_of`). A group
that appeared since the refresh before costs one more round trip, once. Job queues are counted
by :func:`~streamflow.admin.queues.queue_counts` (a few calls per queue, run concurrently).

Which streams: the named ones, or (none named) the streams ``streamflow info`` lists
(:func:`~streamflow.admin.info._list_streams`: a ``SCAN``), found at the first refresh and
again every :data:`DISCOVER_EVERY` seconds, never on every refresh; the queue registry
(``streamflow:queues``) is read on the same schedule.

Rates, per second of server time between two refreshes:

* ``in``: entries added to the stream (``entries-added`` of ``XINFO STREAM``);
* ``out`` (handled/s): entries of a group *settled* - acked, or dead-lettered (which acks) -
  which is the group's deliveries (the delta of ``entries-read``) minus the growth of its
  pending entries list. Deliveries alone would count entries still being handled, and
  redeliveries of reclaimed or retried entries do not move ``entries-read`` at all.

A rate is None (shown ``-``) on the first refresh, when the server cannot count a group's
reads (``entries-read`` is nil after deletions inside the stream) and when a counter went
backwards (server restarted, group recreated).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from redis.exceptions import NoPermissionError, ResponseError

from ..errors import AdminError
from ..keys import RETRY_CONSUMER, consumer_leases_key, dead_letter_stream, id_ms, parse_id
from ..name_lease import holders_of
from .info import _list_streams
from .liveness import Leases, leases_of
from .queues import QueueCounts, queue_counts, registered_queues
from .top_model import GroupSample, Snapshot, StreamSample

__all__ = ["DISCOVER_EVERY", "NAME_STREAMS_HINT", "Sampler"]

#: What ``top`` says when it may not list the server's streams.
NAME_STREAMS_HINT = "name the streams to watch instead: streamflow top STREAM [STREAM ...]"

#: Seconds between two look-ups of which streams and queues exist (SCAN, HGETALL).
DISCOVER_EVERY = 10.0


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _raw_key(name: str) -> bytes:
    """A key name built from decoded names, back as the exact bytes (any bytes survive)."""
    return name.encode("utf-8", "surrogateescape")


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _pairs(row: Any) -> dict[str, Any]:
    if isinstance(row, dict):
        return {_s(k): v for k, v in row.items()}
    return {_s(row[i]): row[i + 1] for i in range(0, len(row or []) - 1, 2)}


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _rate(count: int | None, ms: int) -> float | None:
    return None if count is None or ms <= 0 else count * 1000 / ms


@dataclass
class _Prev:
    ms: int
    value: int | None
    pending: int = 0


class Sampler:
    """Reads the figures of the watched streams and queues; keeps what rates need."""

    def __init__(self, streams: Sequence[str], *, discover_every: float = DISCOVER_EVERY) -> None:
        self.named = [_raw_key(s) for s in streams]
        self.discover_every = discover_every
        self._keys: list[bytes] = list(self.named)
        self._queues: dict[str, str] = {}
        self._queue_note: str | None = None
        self._found_at: float | None = None  # time.monotonic() of the last discovery
        self._groups: dict[bytes, list[bytes]] = {}  # per stream, the groups seen last
        self._prev: dict[tuple[bytes, bytes], _Prev] = {}  # per group, for out/s
        self._prev_in: dict[bytes, _Prev] = {}  # per stream, for in/s

    def forget(self) -> None:
        """Look for streams and queues again at the next refresh (after the server was lost:
        it may have restarted with other keys)."""
        self._found_at = None

    async def _discover(self, client: Any) -> None:
        if not self.named:
            try:
                self._keys = await _list_streams(client)
            except AdminError:  # SCAN is not allowed
                raise AdminError(f"this Redis user may not list the server's keys (SCAN is not "
                                 f"allowed); {NAME_STREAMS_HINT}") from None
        try:
            queues = await registered_queues(client)
        except NoPermissionError:
            self._queues, self._queue_note = {}, "job queues not shown: this Redis user may " \
                "not read streamflow:queues"
        else:
            names = {_name(k) for k in self.named}
            self._queues = {q: s for q, s in queues.items() if not names or s in names}
            self._queue_note = None
        self._found_at = time.monotonic()

    async def sample(self, client: Any, snapshot: Snapshot) -> None:
        """Refresh ``snapshot``'s figures (Redis errors propagate: the caller shows them)."""
        if self._found_at is None or time.monotonic() - self._found_at >= self.discover_every:
            await self._discover(client)
        streams: list[StreamSample] = []
        counts: list[QueueCounts] = []
        notes: list[str] = []
        now: list[int] = []

        failed: list[Exception] = []  # raised after the task group: no exception groups

        async def read_streams() -> None:
            try:
                now_ms, found = await self._read_streams(client)
            except Exception as exc:
                failed.append(exc)
                return
            now.append(now_ms)
            streams.extend(found)

        async def count_queue(queue: str, stream: str) -> None:
            try:
                counts.append(await queue_counts(client, queue, stream))
            except NoPermissionError:
                notes.append(f"queue {queue!r} not shown: this Redis user may not read its keys")
            except AdminError as exc:
                notes.append(str(exc))
            except Exception as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_streams)
            for queue, stream in self._queues.items():
                tg.start_soon(count_queue, queue, stream)
        if failed:
            raise failed[0]
        counts.sort(key=lambda q: q.queue)
        snapshot.streams, snapshot.queues = streams, counts
        snapshot.notes = ([self._queue_note] if self._queue_note else []) + sorted(notes)
        snapshot.server_ms, snapshot.taken_at, snapshot.error = now[0], time.time(), None

    async def _read_streams(self, client: Any) -> tuple[int, list[StreamSample]]:
        keys = list(self._keys)
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("TIME")
        for key in keys:
            pipe.execute_command("XINFO", "STREAM", key)
            pipe.execute_command("XINFO", "GROUPS", key)
            pipe.execute_command("XLEN", _raw_key(dead_letter_stream(_name(key))))
            for known_group in self._groups.get(key, []):
                _group_commands(pipe, key, known_group)
        replies = list(await pipe.execute(raise_on_error=False))
        clock = replies.pop(0)
        if isinstance(clock, Exception):
            raise clock
        sec, usec = clock
        now_ms = int(sec) * 1000 + int(usec) // 1000
        parsed: list[tuple[bytes, StreamSample, list[dict[str, Any]], dict[bytes, list[Any]]]] = []
        late: list[tuple[bytes, bytes]] = []  # groups new since the refresh before
        for key in keys:
            info, groups, dlq = replies[:3]
            del replies[:3]
            known = self._groups.get(key, [])
            details = {g: replies[i * 3:i * 3 + 3] for i, g in enumerate(known)}
            del replies[:3 * len(known)]
            sample = _stream(key, info, dlq)
            rows = [] if isinstance(groups, Exception) or sample.state != "stream" else \
                [_pairs(r) for r in groups or []]
            names = [bytes(r["name"]) for r in rows]
            late += [(key, g) for g in names if g not in details]
            self._groups[key] = names
            parsed.append((key, sample, rows, details))
        if late:  # a second round trip, once per new group
            pipe = client.pipeline(transaction=False)
            for key, name in late:
                _group_commands(pipe, key, name)
            more = list(await pipe.execute(raise_on_error=False))
            for i, (key, name) in enumerate(late):
                next(d for k, _, _, d in parsed if k == key)[name] = more[i * 3:i * 3 + 3]
        out = []
        for key, sample, rows, details in parsed:
            sample.added, sample.rate_in = self._delta_in(key, now_ms, sample.entries_added)
            for row in rows:
                group = self._group(key, row, details[bytes(row["name"])], now_ms,
                                    sample.entries_added)
                last = sample.last_generated_id
                if group.lag is None and last is not None and parse_id(
                        _s(row.get("last-delivered-id") or b"0-0")) >= parse_id(last):
                    group.lag = 0  # caught up (the server's lag is nil after deletions)
                sample.groups.append(group)
            sample.groups.sort(key=lambda g: g.name)
            out.append(sample)
        return now_ms, out

    def _delta_in(self, key: bytes, now_ms: int, added: int | None) -> tuple[int | None, float | None]:
        prev = self._prev_in.get(key)
        self._prev_in[key] = _Prev(now_ms, added)
        if prev is None or added is None or prev.value is None or added < prev.value:
            return None, None
        return added - prev.value, _rate(added - prev.value, now_ms - prev.ms)

    def _group(self, key: bytes, row: dict[str, Any], replies: list[Any], now_ms: int,
               entries_added: int | None) -> GroupSample:
        name = bytes(row["name"])
        g = GroupSample(name=_s(name), pending=int(row.get("pending") or 0), lag=_int(row.get("lag")),
                        entries_read=_int(row.get("entries-read")))
        if g.entries_read is None and entries_added == 0:
            g.entries_read = 0  # nothing was ever added: nothing was read (the server says nil)
        summary, consumers, leases_raw = replies
        if not isinstance(summary, Exception) and summary and summary[1] is not None:
            g.oldest_age_ms = max(0, now_ms - id_ms(_s(summary[1])))
        names: set[str] = set()
        if not isinstance(consumers, Exception):
            for c in map(_pairs, consumers or []):
                if _s(c["name"]) == RETRY_CONSUMER:
                    g.retrying = int(c.get("pending") or 0)
                else:
                    names.add(_s(c["name"]))
        leases = Leases(readable=False) if isinstance(leases_raw, Exception) \
            else leases_of(holders_of(leases_raw), now_ms)
        if leases.readable:
            names |= leases.live
            g.live = sum(1 for n in names if leases.state(n) == "live")
        g.stopped = len(names) - (g.live or 0)
        prev = self._prev.get((key, name))
        self._prev[(key, name)] = _Prev(now_ms, g.entries_read, g.pending)
        if prev is not None and prev.value is not None and g.entries_read is not None \
                and g.entries_read >= prev.value:
            delivered = g.entries_read - prev.value
            g.handled = max(0, delivered - (g.pending - prev.pending))
            g.rate = _rate(g.handled, now_ms - prev.ms)
        return g


def _group_commands(pipe: Any, key: bytes, group: bytes) -> None:
    pipe.execute_command("XPENDING", key, group)
    pipe.execute_command("XINFO", "CONSUMERS", key, group)
    pipe.execute_command("HGETALL", _raw_key(consumer_leases_key(_name(key), _name(group))))


def _stream(key: bytes, info: Any, dlq: Any) -> StreamSample:
    sample = StreamSample(_s(key), dlq_length=0 if isinstance(dlq, Exception) else int(dlq or 0))
    if isinstance(info, NoPermissionError):
        sample.state = "denied"
    elif isinstance(info, ResponseError):
        sample.state = "wrongtype" if str(info).startswith("WRONGTYPE") else "missing"
    elif isinstance(info, Exception):
        raise info
    else:
        s = _pairs(info)
        sample.length = int(s.get("length") or 0)
        sample.entries_added = _int(s.get("entries-added"))
        last = s.get("last-generated-id")
        sample.last_generated_id = None if last is None else _s(last)
    return sample
