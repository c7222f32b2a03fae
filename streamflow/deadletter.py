"""Dead-letter streams: the record layout, moving an entry there atomically, reading.

A dead-letter record holds metadata under ``dlq:`` keys and the original fields
under ``f:<name>`` keys, byte for byte::

    dlq:stream orders  dlq:id 1700000000000-0  dlq:group billing  dlq:consumer host-1-ab12
    dlq:attempts 5  dlq:error_type ValueError  dlq:error "bad order"  dlq:failed_at 1700000000123
    dlq:handler myservice.app.bill  dlq:traceback "..."  f:sf:json '{"order_id": 7}'

* :func:`build_record` / :func:`parse_record`: that layout, both ways.
* :func:`move_to_dead_letter`: add the record and ack the entry in one atomic step
  (the runtime's failure path calls it).
* :class:`Selection`: which records a command means (a dead-letter stream may be shared
  by several streams: a record belongs to the stream it names; and by group, by error type).
* :func:`read_records` / :func:`pages` / :func:`read_record`: the records of one stream,
  oldest first; every record a page at a time; one record by id.

Choosing records by id, replaying and deleting them (``streamflow dlq replay|purge``) is
:mod:`streamflow.admin.records`'s.

Every function takes the redis-py asyncio client and lets its errors propagate: the
callers decide what a lost connection means (the runtime retries, the operator
commands translate them in :mod:`streamflow.admin.runner`). The naming of dead-letter
streams is :func:`streamflow.keys.dead_letter_stream`'s.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import scripts
from .codec import decode_fields
from .connection import redact_url
from .errors import AdminError, UnknownStream
from .keys import id_successor

__all__ = [
    "PAGE",
    "DeadLetter",
    "OnProgress",
    "Selection",
    "build_record",
    "check_ids",
    "dlq_exists",
    "move_to_dead_letter",
    "pages",
    "parse_record",
    "read_record",
    "read_records",
]

META = "dlq:"
ORIGINAL = "f:"
PAGE = 100  # entries per XRANGE page / replay pipeline / XDEL
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

#: ``progress(done, total)``: records looked at so far, out of ``total`` (None: unknown).
OnProgress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Selection:
    """Which records of a dead-letter stream a command means: those of ``stream`` (a
    dead-letter stream may be shared by several streams: a record belongs to the stream it
    names), and if given, of one consumer ``group`` and of these ``error_types``."""

    stream: str
    group: str | None = None
    error_types: frozenset[str] | None = None

    def mismatch(self, rec: DeadLetter) -> str | None:
        """Why ``rec`` is not selected (``record of group 'email', not 'billing'``), or None."""
        if rec.stream not in ("", self.stream):
            return f"record of stream {rec.stream!r}"
        if self.group is not None and rec.group != self.group:
            return f"record of group {rec.group!r}, not {self.group!r}"
        if self.error_types is not None and rec.error_type not in self.error_types:
            wanted = ", ".join(repr(t) for t in sorted(self.error_types))
            return f"record of error type {rec.error_type!r}, not {wanted}"
        return None


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


async def pages(client: Any, dlq: str, end: str) -> AsyncIterator[tuple[int, list[DeadLetter]]]:
    """The records of ``dlq`` up to ``end``, a page (XRANGE COUNT PAGE) at a time, each
    with the number of entries it read."""
    start = "-"
    while True:
        rows = await client.execute_command("XRANGE", dlq, start, end, "COUNT", PAGE) or []
        yield len(rows), [parse_record(r[0], r[1]) for r in rows if r[1] is not None]
        if len(rows) < PAGE:
            return
        start = id_successor(rows[-1][0])


async def read_records(
    client: Any, stream: str, dlq: str, *, limit: int | None = None, end: str = "+",
    group: str | None = None, error_types: frozenset[str] | None = None,
) -> tuple[list[DeadLetter], bool]:
    """Records of ``stream`` (and ``group`` / ``error_types``, if given) in ``dlq`` up to
    ``end``, oldest first; ``(records, more_left)``."""
    selection = Selection(stream, group, error_types)
    out: list[DeadLetter] = []
    async for _, records in pages(client, dlq, end):
        for rec in records:
            if selection.mismatch(rec) is None:
                if limit is not None and len(out) >= limit:
                    return out, True
                out.append(rec)
    return out, False


async def read_record(client: Any, dlq: str, dlq_id: str) -> DeadLetter | None:
    """The record ``dlq_id`` of ``dlq``, or None when there is none."""
    check_ids([dlq_id])
    rows = await client.execute_command("XRANGE", dlq, dlq_id, dlq_id)
    return parse_record(rows[0][0], rows[0][1]) if rows and rows[0][1] is not None else None


def check_ids(ids: Sequence[str]) -> None:
    """Raise :class:`~streamflow.errors.AdminError` naming the first malformed record id."""
    bad = [i for i in ids if not _ID_RE.match(i)]
    if bad:
        raise AdminError(f"invalid id {bad[0]!r}: give a full dead-letter record id like "
                         "1700000000000-0 (see streamflow dlq list)")
