"""Dead-letter streams: the record layout, moving an entry there atomically, reading, replay.

A dead-letter record holds metadata under ``dlq:`` keys and the original fields
under ``f:<name>`` keys, byte for byte::

    dlq:stream orders  dlq:id 1700000000000-0  dlq:group billing  dlq:consumer host-1-ab12
    dlq:attempts 5  dlq:error_type ValueError  dlq:error "bad order"  dlq:failed_at 1700000000123
    dlq:handler myservice.app.bill  dlq:traceback "..."  f:sf:json '{"order_id": 7}'

* :func:`build_record` / :func:`parse_record`: that layout, both ways.
* :func:`move_to_dead_letter`: add the record and ack the entry in one atomic step
  (the runtime's failure path calls it).
* :func:`read_records`: the records of one stream, oldest first (a dead-letter stream
  may be shared by several streams: a record belongs to the stream it names).
* :func:`replay`: re-publish records' original fields to their stream and delete them,
  atomically per record (``streamflow dlq replay``).

Every function takes the redis-py asyncio client and lets its errors propagate: the
callers decide what a lost connection means (the runtime retries, the operator
commands translate them in :mod:`streamflow.admin.runner`). The naming of dead-letter
streams is :func:`streamflow.keys.dead_letter_stream`'s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import scripts
from .codec import decode_fields
from .connection import redact_url
from .errors import AdminError, UnknownStream
from .keys import id_successor, replay_stream

__all__ = [
    "PAGE",
    "DeadLetter",
    "ReplayResult",
    "build_record",
    "dlq_exists",
    "move_to_dead_letter",
    "parse_record",
    "read_records",
    "replay",
]

META = "dlq:"
ORIGINAL = "f:"
PAGE = 100  # entries per XRANGE page / replay pipeline
_MAX_TEXT = 2000
_ID_RE = re.compile(r"^\d+-\d+$")


def build_record(
    *,
    stream: str,
    raw_id: bytes,
    group: str,
    consumer: str,
    attempts: int,
    error_type: str,
    error: str,
    handler: str,
    raw_fields: list[bytes] | None,
    traceback: str = "",
) -> list[Any]:
    """Flat field/value list for the dead-letter entry of one failed message."""
    error = redact_url(error)
    traceback = redact_url(traceback)
    out: list[Any] = [
        "dlq:stream", stream,
        "dlq:id", raw_id,
        "dlq:group", group,
        "dlq:consumer", consumer,
        "dlq:attempts", attempts,
        "dlq:error_type", error_type,
        "dlq:error", error[:_MAX_TEXT],
        "dlq:failed_at", int(time.time() * 1000),
        "dlq:handler", handler,
    ]
    if traceback:
        out += ["dlq:traceback", traceback[-_MAX_TEXT:]]
    raw = raw_fields or []
    for i in range(0, len(raw) - 1, 2):
        out += [ORIGINAL.encode() + raw[i], raw[i + 1]]
    return out


@dataclass
class DeadLetter:
    """One record of a dead-letter stream, decoded."""

    dlq_id: str
    stream: str
    id: str
    group: str
    consumer: str
    attempts: int
    error_type: str
    error: str
    failed_at_ms: int
    handler: str
    traceback: str
    original: list[bytes]  # flat [field, value, ...] exactly as first written

    @property
    def fields(self) -> dict[str, str]:
        """The original entry's fields decoded to str."""
        return decode_fields(self.original)


def parse_record(dlq_id: bytes, raw: list[bytes]) -> DeadLetter:
    """Decode a dead-letter entry read with XRANGE."""
    meta: dict[str, str] = {}
    original: list[bytes] = []
    for i in range(0, len(raw) - 1, 2):
        key, value = raw[i], raw[i + 1]
        if key.startswith(b"f:"):
            original += [key[2:], value]
        elif key.startswith(b"dlq:"):
            meta[key[4:].decode()] = value.decode("utf-8", "replace")
    return DeadLetter(
        dlq_id=dlq_id.decode(),
        stream=meta.get("stream", ""),
        id=meta.get("id", ""),
        group=meta.get("group", ""),
        consumer=meta.get("consumer", ""),
        attempts=int(meta.get("attempts", "0") or 0),
        error_type=meta.get("error_type", ""),
        error=meta.get("error", ""),
        failed_at_ms=int(meta.get("failed_at", "0") or 0),
        handler=meta.get("handler", ""),
        traceback=meta.get("traceback", ""),
        original=original,
    )


def _text(value: Any) -> str:
    """A reply value as str (invalid UTF-8 replaced)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


async def _key_type(client: Any, key: str) -> str:
    return _text(await client.execute_command("TYPE", key))


# -- the atomic move ----------------------------------------------------------------------


async def move_to_dead_letter(
    client: Any,
    *,
    stream: str,
    dlq: str,
    group: str,
    consumer: str,
    handler: str,
    msg_raw_id: bytes,
    key: str | None = None,
    raw_fields: list[bytes] | None,
    attempts: int,
    error_type: str,
    error: str,
    traceback: str = "",
) -> bytes | None:
    """Add the dead-letter record of entry ``msg_raw_id`` of ``stream`` to ``dlq`` and ack it
    for ``group``, in one atomic step.

    ``key`` is where the entry is pending when that is not ``stream`` itself (a replayed
    entry read from its group's replay stream); the record names ``stream``, so a replay
    of the record goes the same way again.

    Returns the new record's id, or None when the entry was no longer pending (another
    worker acked or dead-lettered it meanwhile: nothing was written). Redis errors
    propagate; if one does, the entry may still be pending, never acked without a record.
    """
    record = build_record(
        stream=stream, raw_id=msg_raw_id, group=group, consumer=consumer, attempts=attempts,
        error_type=error_type, error=error, handler=handler, raw_fields=raw_fields,
        traceback=traceback,
    )
    key = key or stream
    if len(record) <= scripts.MAX_SCRIPT_ARGS:
        result = await client.eval(scripts.DEAD_LETTER, 2, key, dlq, group, msg_raw_id, *record)
    else:
        # Too wide for a script: MULTI/EXEC is atomic too, but cannot first check that
        # the entry is still pending (a record may then exist for an entry another
        # worker acked meanwhile: a duplicate, never a loss).
        pipe = client.pipeline(transaction=True)
        pipe.execute_command("XADD", dlq, "*", *record)
        pipe.execute_command("XACK", key, group, msg_raw_id)
        result = (await pipe.execute())[0]
    if not result:
        return None
    return result if isinstance(result, bytes) else _text(result).encode()


# -- reading ------------------------------------------------------------------------------


def _belongs(rec: DeadLetter, stream: str, group: str | None = None) -> bool:
    """True when the record came from ``stream`` (a shared DLQ holds several streams' records)
    and, if ``group`` is given, was dead-lettered by that group."""
    return rec.stream in ("", stream) and (group is None or rec.group == group)


def replay_target(rec: DeadLetter, stream: str) -> str:
    """Where replaying ``rec`` writes its entry: the replay stream of the group that
    dead-lettered it (read by that group only), or ``stream`` for a record that names no
    group (written by something other than a streamflow worker)."""
    return replay_stream(stream, rec.group) if rec.group else stream


async def dlq_exists(client: Any, stream: str, dlq: str) -> bool:
    """True when ``dlq`` is a stream; False when it is absent but ``stream`` exists.

    Raises :class:`~streamflow.errors.UnknownStream` when ``dlq`` is some other type of
    key, or when neither ``dlq`` nor ``stream`` exists.
    """
    kind = await _key_type(client, dlq)
    if kind == "stream":
        return True
    if kind != "none":
        raise UnknownStream(f"key {dlq!r} is a {kind}, not a dead-letter stream")
    if await _key_type(client, stream) == "none":
        raise UnknownStream(
            f"stream {stream!r} does not exist and has no dead-letter stream {dlq!r}"
        )
    return False


async def read_records(
    client: Any, stream: str, dlq: str, *, limit: int | None = None, end: str = "+",
    group: str | None = None,
) -> tuple[list[DeadLetter], bool]:
    """Records of ``stream`` (and ``group``, if given) in ``dlq`` up to ``end``, oldest first;
    ``(records, more_left)``."""
    out: list[DeadLetter] = []
    start = "-"
    while True:
        rows = await client.execute_command("XRANGE", dlq, start, end, "COUNT", PAGE)
        for raw_id, raw in rows or []:
            if raw is None:
                continue
            rec = parse_record(raw_id, raw)
            if _belongs(rec, stream, group):
                if limit is not None and len(out) >= limit:
                    return out, True
                out.append(rec)
        if not rows or len(rows) < PAGE:
            return out, False
        start = id_successor(rows[-1][0])


# -- replay -------------------------------------------------------------------------------


@dataclass
class ReplayResult:
    """What :func:`replay` did."""

    replayed: list[dict[str, str]] = field(default_factory=list)  # dlq_id, id, group, to, new_id
    not_found: list[str] = field(default_factory=list)  # dlq ids not in the DLQ (any more)
    skipped: list[dict[str, str]] = field(default_factory=list)  # dlq_id, reason

    def by_group(self) -> dict[str, tuple[str, int]]:
        """Per group that dead-lettered them: (the stream replayed to, records replayed)."""
        out: dict[str, tuple[str, int]] = {}
        for r in self.replayed:
            to, n = out.get(r["group"], (r["to"], 0))
            out[r["group"]] = (to, n + 1)
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "replayed": self.replayed, "not_found": self.not_found, "skipped": self.skipped,
            "groups": {g or "": {"to": to, "replayed": n} for g, (to, n) in self.by_group().items()},
        }


async def _replay_batch(
    client: Any, stream: str, dlq: str, records: list[DeadLetter], result: ReplayResult,
    group: str | None,
) -> None:
    todo: list[DeadLetter] = []
    for rec in records:
        if not _belongs(rec, stream):
            result.skipped.append({"dlq_id": rec.dlq_id,
                                   "reason": f"record of stream {rec.stream!r}"})
        elif not _belongs(rec, stream, group):
            result.skipped.append({"dlq_id": rec.dlq_id,
                                   "reason": f"record of group {rec.group!r}, not {group!r}"})
        elif not rec.original:
            result.skipped.append({"dlq_id": rec.dlq_id, "reason": "record has no original fields"})
        else:
            todo.append(rec)
    if not todo:
        return
    pipe = client.pipeline(transaction=False)
    for rec in todo:
        pipe.eval(scripts.REPLAY, 2, dlq, replay_target(rec, stream), rec.dlq_id, *rec.original)
    replies = await pipe.execute()
    for rec, new_id in zip(todo, replies, strict=True):
        if new_id:
            result.replayed.append({"dlq_id": rec.dlq_id, "id": rec.id, "group": rec.group,
                                    "to": replay_target(rec, stream), "new_id": _text(new_id)})
        else:
            result.not_found.append(rec.dlq_id)  # replayed or deleted by someone else meanwhile


async def _replay_ids(
    client: Any, stream: str, dlq: str, wanted: list[str], result: ReplayResult,
    group: str | None,
) -> None:
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
        await _replay_batch(client, stream, dlq, found, result, group)


async def _replay_all(
    client: Any, stream: str, dlq: str, result: ReplayResult, group: str | None
) -> None:
    # Only what is there now: records dead-lettered again while we replay are left alone.
    last = await client.execute_command("XREVRANGE", dlq, "+", "-", "COUNT", 1)
    if not last:
        return
    end = _text(last[0][0])
    start = "-"
    while True:
        rows = await client.execute_command("XRANGE", dlq, start, end, "COUNT", PAGE)
        records = [parse_record(r[0], r[1]) for r in rows or [] if r[1] is not None]
        mine = [r for r in records if _belongs(r, stream, group)]
        await _replay_batch(client, stream, dlq, mine, result, group)
        if not rows or len(rows) < PAGE:
            return
        start = id_successor(rows[-1][0])


async def replay(
    client: Any, stream: str, dlq: str, ids: Sequence[str] | None, *, group: str | None = None
) -> ReplayResult:
    """Replay the records ``ids`` of ``dlq`` (all of ``stream``'s when None).

    A record goes back to the group that dead-lettered it, and only to that group: its
    entry is written to the group's replay stream (:func:`streamflow.keys.replay_stream`),
    which that group's consumers read alongside ``stream``; the other groups of
    ``stream`` never see it. ``group`` replays only that group's records (records of
    other groups named by ``ids`` are skipped). Each record is re-published and deleted by
    one script call (``scripts.REPLAY``), so a record is never both replayed and kept, nor
    replayed twice. Raises
    :class:`~streamflow.errors.AdminError` for a malformed id and
    :class:`~streamflow.errors.UnknownStream` when there is nothing to replay from or to.
    """
    if ids is not None:
        bad = [i for i in ids if not _ID_RE.match(i)]
        if bad:
            raise AdminError(f"invalid id {bad[0]!r}: give a full dead-letter record id like "
                             "1700000000000-0 (see streamflow dlq list)")
    result = ReplayResult()
    exists = await dlq_exists(client, stream, dlq)
    kind = await _key_type(client, stream)
    if kind not in ("stream", "none"):
        raise UnknownStream(f"key {stream!r} is a {kind}, not a stream; nothing replayed")
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        if not exists:
            result.not_found += wanted
        else:
            await _replay_ids(client, stream, dlq, wanted, result, group)
    elif exists:
        await _replay_all(client, stream, dlq, result, group)
    return result
