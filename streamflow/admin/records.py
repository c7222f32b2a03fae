"""Acting on dead-letter records: choosing them, replaying them, deleting them.

The commands ``streamflow dlq replay`` and ``dlq purge`` (:mod:`streamflow.admin.dlq`)
mean the same records the same way: the ids given (``--id``), or every record present
when the command starts (``--all``), narrowed by a :class:`~streamflow.deadletter.Selection`
(the stream, ``--group``, ``--error-type``).

* :func:`select`: those records (and the ids not found, the records left out and why).
* :func:`replay`: re-publish records' original fields to the group that failed them and
  delete them, atomically per record (``scripts.REPLAY``).
* :func:`delete_records`: ``XDEL`` records by id, many per command and round trip.

Every function takes the redis-py asyncio client and lets its errors propagate
(:mod:`streamflow.admin.runner` translates them); the record layout and reading are
:mod:`streamflow.deadletter`'s. Long walks report ``progress(done, total)`` after each
page, for :mod:`streamflow.admin.progress`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import scripts
from ..deadletter import (
    PAGE,
    DeadLetter,
    OnProgress,
    Selection,
    check_ids,
    dlq_exists,
    pages,
    parse_record,
)
from ..errors import UnknownStream
from ..keys import replay_stream

__all__ = ["ReplayResult", "Selected", "delete_records", "replay", "replay_target", "select"]


def _text(value: Any) -> str:
    """A reply value as str (invalid UTF-8 replaced)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def replay_target(rec: DeadLetter, stream: str) -> str:
    """Where replaying ``rec`` writes its entry: the replay stream of the group that
    dead-lettered it (read by that group only), or ``stream`` for a record that names no
    group (written by something other than a streamflow worker)."""
    return replay_stream(stream, rec.group) if rec.group else stream


@dataclass
class Selected:
    """What :func:`select` found: the records selected, ids not in the DLQ, records left out."""

    records: list[DeadLetter] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # dlq_id, reason


async def _select_pages(
    client: Any, dlq: str, ids: Sequence[str] | None, selection: Selection,
    progress: OnProgress | None,
) -> AsyncIterator[Selected]:
    """The records ``ids`` of ``dlq`` (or every record present now, when None) that
    ``selection`` means, a page at a time."""
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        for i in range(0, len(wanted), PAGE):
            chunk, page = wanted[i:i + PAGE], Selected()
            pipe = client.pipeline(transaction=False)
            for dlq_id in chunk:
                pipe.execute_command("XRANGE", dlq, dlq_id, dlq_id)
            for dlq_id, rows in zip(chunk, await pipe.execute(), strict=True):
                if not rows or rows[0][1] is None:
                    page.not_found.append(dlq_id)
                    continue
                rec = parse_record(rows[0][0], rows[0][1])
                why = selection.mismatch(rec)
                if why:
                    page.skipped.append({"dlq_id": rec.dlq_id, "reason": why})
                else:
                    page.records.append(rec)
            yield page
            if progress is not None:
                progress(i + len(chunk), len(wanted))
        return
    # Only what is there now: records dead-lettered again meanwhile are left alone.
    last = await client.execute_command("XREVRANGE", dlq, "+", "-", "COUNT", 1)
    if not last:
        return
    total = int(await client.execute_command("XLEN", dlq))
    done = 0
    async for read, records in pages(client, dlq, _text(last[0][0])):
        yield Selected([r for r in records if selection.mismatch(r) is None])
        done += read
        if progress is not None:
            progress(done, max(total, done))


async def _start(
    client: Any, stream: str, dlq: str, ids: Sequence[str] | None, *, check_stream: bool
) -> bool:
    """Checks before :func:`replay` / :func:`select`; whether ``dlq`` exists."""
    if ids is not None:
        check_ids(ids)
    exists = await dlq_exists(client, stream, dlq)
    if check_stream:
        kind = _text(await client.execute_command("TYPE", stream))
        if kind not in ("stream", "none"):
            raise UnknownStream(f"key {stream!r} is a {kind}, not a stream; nothing replayed")
    return exists


async def select(
    client: Any, dlq: str, ids: Sequence[str] | None, selection: Selection,
    progress: OnProgress | None = None,
) -> Selected:
    """The records ``ids`` of ``dlq`` (every record present now when None) that
    ``selection`` means; raises like :func:`replay`."""
    out = Selected()
    exists = await _start(client, selection.stream, dlq, ids, check_stream=False)
    if not exists:
        out.not_found = list(dict.fromkeys(ids or []))
        return out
    async for page in _select_pages(client, dlq, ids, selection, progress):
        out.records += page.records
        out.not_found += page.not_found
        out.skipped += page.skipped
    return out


async def delete_records(
    client: Any, dlq: str, dlq_ids: Sequence[str], progress: OnProgress | None = None
) -> int:
    """XDEL the records ``dlq_ids`` of ``dlq``, ``PAGE`` ids per command and ten commands a
    round trip; how many there were (a record deleted or replayed meanwhile is not)."""
    deleted = 0
    step = PAGE * 10
    for i in range(0, len(dlq_ids), step):
        pipe = client.pipeline(transaction=False)
        for j in range(i, min(i + step, len(dlq_ids)), PAGE):
            pipe.execute_command("XDEL", dlq, *dlq_ids[j:min(j + PAGE, i + step)])
        deleted += sum(int(n) for n in await pipe.execute())
        if progress is not None:
            progress(min(i + step, len(dlq_ids)), len(dlq_ids))
    return deleted


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
    client: Any, stream: str, dlq: str, todo: list[DeadLetter], result: ReplayResult
) -> None:
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


async def replay(
    client: Any, stream: str, dlq: str, ids: Sequence[str] | None, *, group: str | None = None,
    error_types: frozenset[str] | None = None, progress: OnProgress | None = None,
) -> ReplayResult:
    """Replay the records ``ids`` of ``dlq`` (all of ``stream``'s when None).

    A record goes back to the group that dead-lettered it, and only to that group: its
    entry is written to the group's replay stream (:func:`streamflow.keys.replay_stream`),
    which that group's consumers read alongside ``stream``; the other groups of
    ``stream`` never see it. ``group`` replays only that group's records, ``error_types``
    only records of those exception types (records named by ``ids`` that do not match
    are skipped). Each record is re-published and deleted by one script call
    (``scripts.REPLAY``), so a record is never both replayed and kept, nor replayed
    twice. ``progress(done, total)`` is called after each page. Raises
    :class:`~streamflow.errors.AdminError` for a malformed id and
    :class:`~streamflow.errors.UnknownStream` when there is nothing to replay from or to.
    """
    result = ReplayResult()
    if not await _start(client, stream, dlq, ids, check_stream=True):
        result.not_found += list(dict.fromkeys(ids or []))
        return result
    async for page in _select_pages(client, dlq, ids, Selection(stream, group, error_types),
                                    progress):
        result.not_found += page.not_found
        result.skipped += page.skipped
        result.skipped += [{"dlq_id": r.dlq_id, "reason": "record has no original fields"}
                           for r in page.records if not r.original]
        await _replay_batch(client, stream, dlq, [r for r in page.records if r.original], result)
    return result
