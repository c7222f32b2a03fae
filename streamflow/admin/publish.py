"""``streamflow publish STREAM``: add entries to a stream from the command line.

Three ways to give what to publish, one per call:

``streamflow publish orders order_id=7 status=new``
    One entry with these fields, as given: plain fields, as a producer that is not
    streamflow (``XADD orders * order_id 7 status new``) would write them; a handler
    sees them as ``msg.fields`` (and as ``msg.payload``, the field map).
``streamflow publish orders --json '{"order_id": 7}'``
    One entry in streamflow's own layout (one field ``sf:json``, see
    :mod:`streamflow.codec`), exactly what ``App.publish("orders", {"order_id": 7})``
    writes, under the same ``max_payload_bytes`` limit: a handler sees ``msg.payload``.
``streamflow publish orders --file lines.jsonl`` (``-`` for stdin)
    One entry like ``--json`` per line (a JSON value per line; blank lines are skipped),
    sent with pipelined XADDs on one connection (:class:`~streamflow.rawpipe.RawPipe`,
    :data:`BATCH` entries per round trip).

A regular file (also as stdin: ``< lines.jsonl``) is read and checked whole before
anything is sent: a line that is not valid JSON (or not UTF-8, or whose payload is over
``max_payload_bytes``) stops the command with the line's number and nothing published.
A pipe (``producer | streamflow publish orders --file -``), a FIFO or a terminal is
published as it arrives, so a bad line stops the command with its
number and how many entries of the lines before it were published; every line before
it was, nothing from it on (``tail -n +LINE`` resumes).

``--maxlen N`` caps the stream's length (``MAXLEN ~ N``, approximate, as ``App.publish``).
The new entry's id is printed (for a file: the count and the first and last id);
``--quiet`` prints nothing. A long publish shows progress on a terminal
(:mod:`streamflow.admin.progress`). Errors exit 2 (:func:`streamflow.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio

from ..codec import JSON_FIELD, encode_fields, encode_json
from ..config import Settings, validate_name
from ..connection import Connection
from ..errors import AdminError, PayloadError
from ..rawpipe import RawPipe
from .progress import Progress, progress
from .runner import redis_url, run

__all__ = ["BATCH", "Published", "cmd_publish", "parse_fields"]

#: Entries sent per round trip when publishing a file.
BATCH = 1000
_READ = 1 << 16  # bytes read from a stream at a time
_IDLE_POLL = 0.02  # seconds between looks at an idle input stream


def parse_fields(pairs: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; AdminError for a bad pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise AdminError(f"{pair!r} is not KEY=VALUE: a field needs a name, '=' and a "
                             "value (which may be empty: KEY=)")
        if name in out:
            raise AdminError(f"field {name!r} is given twice")
        out[name] = value
    return out


def _bytes(text: str) -> bytes:
    """A command-line argument as the bytes it was given as (non-UTF-8 kept)."""
    return text.encode("utf-8", "surrogateescape")


def encode_line(raw: bytes, limit: int) -> bytes | None:
    """The ``sf:json`` value for one line of a JSON Lines input (None: a blank line).

    Raises ``ValueError`` (the reason, without the line number) for a bad line.
    """
    text = raw.strip()
    if not text:
        return None
    try:
        payload = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    try:
        return encode_json(payload, limit)
    except PayloadError as exc:
        raise ValueError(str(exc)) from None


@dataclass
class Published:
    """What a bulk publish sent: entries, their first and last ids, the last line sent."""

    count: int = 0
    first_id: str = ""
    last_id: str = ""
    last_line: int = 0  # the number of the last input line whose entry was published

    def before(self, line: int) -> str:
        """``1200 entries from the lines before it were published (last id ...)``."""
        if not self.count:
            return "nothing was published"
        s = "entry" if self.count == 1 else "entries"
        return (f"{self.count} {s} from the lines before it were published (last id "
                f"{self.last_id}, line {self.last_line}); nothing from line {line} on")


class _Sender:
    """Pipelined XADDs of ``(line, command)`` batches, one round trip each, on a RawPipe."""

    def __init__(self, client: Any, stream: str, source: str, bar: Progress) -> None:
        self.pipe = RawPipe(client, stream)  # on a cluster: the stream slot's master
        self.source = source
        self.bar = bar
        self.done = Published()

    async def send(self, batch: list[tuple[int, list[Any]]]) -> None:
        for i in range(0, len(batch), BATCH):
            chunk = batch[i:i + BATCH]
            replies = await self.pipe.execute([cmd for _, cmd in chunk])
            refused: tuple[int, Exception] | None = None
            for (line, _), reply in zip(chunk, replies, strict=True):
                if isinstance(reply, Exception):
                    refused = refused or (line, reply)
                    continue
                new_id = reply.decode() if isinstance(reply, bytes) else str(reply)
                self.done.count += 1
                self.done.first_id = self.done.first_id or new_id
                self.done.last_id, self.done.last_line = new_id, line
            self.bar.update(self.done.count, self.bar.total)
            if refused is not None:
                line, exc = refused
                n = self.done.count
                raise AdminError(
                    f"{self.source} line {line}: Redis refused the entry: {exc}; {n} "
                    f"{'entry was' if n == 1 else 'entries were'} published (the last from "
                    f"line {self.done.last_line or '-'}), nothing after line {chunk[-1][0]} "
                    "was sent"
                )


def _is_stream_input(path: str) -> bool:
    """False for a regular file (``-``: stdin redirected from one), True for a pipe, a
    FIFO, a terminal."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode if path == "-" else os.stat(path).st_mode
    except OSError as exc:
        raise AdminError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return not stat.S_ISREG(mode)


def _read_file(path: str, prefix: list[Any], limit: int) -> list[tuple[int, list[Any]]]:
    """Every entry of a regular file, checked before anything is sent."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise AdminError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    path = "stdin" if path == "-" else path
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
    out: list[tuple[int, list[Any]]] = []
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            value = encode_line(raw, limit)
        except ValueError as exc:
            bad.append((number, str(exc)))
            continue
        if value is not None:
            out.append((number, [*prefix, JSON_FIELD, value]))
    if bad:
        line, why = bad[0]
        more = ""
        if len(bad) > 1:
            shown = ", ".join(str(n) for n, _ in bad[1:6]) + (", ..." if len(bad) > 6 else "")
            more = f" (and {len(bad) - 1} more bad line{'s' if len(bad) > 2 else ''}: {shown})"
        raise AdminError(f"{path} line {line}: {why}{more}; nothing published")
    return out


async def _read_some(fd: int) -> bytes:
    """The next bytes of ``fd`` as soon as there are some (b"" at the end), without
    blocking the event loop on an idle pipe or terminal."""
    # Polled, not awaited on a thread: a worker thread blocked in read() could neither be
    # cancelled (Ctrl-C) nor let the process exit.
    while not select.select([fd], [], [], 0)[0]:  # noqa: ASYNC110 (no event to wait for)
        await anyio.sleep(_IDLE_POLL)
    return os.read(fd, _READ)


async def _publish_stream(sender: _Sender, fd: int, prefix: list[Any], limit: int) -> None:
    """Publish the lines of ``fd`` as they arrive: every complete line read at once is one
    batch, so a slow producer's lines go out at once and a fast one's in big batches."""
    rest, number, first = b"", 0, True
    while True:
        chunk = await _read_some(fd)
        if first:
            chunk, first = chunk.removeprefix(b"\xef\xbb\xbf"), False
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop() if chunk else b""  # an unfinished last line, until the end
        batch: list[tuple[int, list[Any]]] = []
        for raw in lines:
            number += 1
            try:
                value = encode_line(raw, limit)
            except ValueError as exc:
                await sender.send(batch)  # every line before the bad one, then stop
                raise AdminError(
                    f"{sender.source} line {number}: {exc}; {sender.done.before(number)}"
                ) from None
            if value is not None:
                batch.append((number, [*prefix, JSON_FIELD, value]))
        await sender.send(batch)
        if not chunk:
            return


def _single(args: argparse.Namespace, prefix: list[Any], limit: int) -> list[Any] | None:
    """The XADD of ``KEY=VALUE`` fields or ``--json``; None for ``--file``."""
    given = [name for name, on in (("KEY=VALUE fields", bool(args.fields)),
                                   ("--json", args.json_payload is not None),
                                   ("--file", args.file is not None)) if on]
    if not given:
        raise AdminError("nothing to publish: give KEY=VALUE fields, --json PAYLOAD or "
                         "--file FILE")
    if len(given) > 1:
        raise AdminError(f"give one of KEY=VALUE fields, --json and --file, not "
                         f"{' and '.join(given)}")
    if args.fields:
        fields = parse_fields(args.fields)
        encode_fields(fields, limit)  # the size and the same checks as App.publish_fields
        return [*prefix, *(_bytes(x) for kv in fields.items() for x in kv)]
    if args.json_payload is not None:
        try:
            payload = json.loads(args.json_payload)
        except json.JSONDecodeError as exc:
            raise AdminError(f"--json is not valid JSON (column {exc.colno}: {exc.msg})") from None
        return [*prefix, JSON_FIELD, encode_json(payload, limit)]
    return None


async def _check_key(client: Any, stream: str) -> None:
    kind = await client.execute_command("TYPE", stream)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind not in ("stream", "none"):
        raise AdminError(f"key {stream!r} is a {kind}, not a stream; nothing published")


def cmd_publish(args: argparse.Namespace) -> int:
    """``streamflow publish STREAM (KEY=VALUE ... | --json PAYLOAD | --file FILE)``."""
    url = redis_url(args)
    stream = validate_name("stream name", args.stream)
    limit = Settings.load().max_payload_bytes
    prefix: list[Any] = ["XADD", stream]
    if args.maxlen is not None:
        prefix += ["MAXLEN", "~", args.maxlen]
    prefix.append("*")
    command = _single(args, prefix, limit)
    if command is not None:
        async def one(client: Any, conn: Connection) -> str:
            await _check_key(client, stream)
            reply = await client.execute_command(*command)
            return reply.decode() if isinstance(reply, bytes) else str(reply)

        new_id = run(url, one)
        if not args.quiet:
            print(new_id)
        return 0

    path: str = args.file
    streaming = _is_stream_input(path)
    entries = None if streaming else _read_file(path, prefix, limit)
    source = "stdin" if path == "-" else path
    with progress(f"publishing to {stream}", None if entries is None else len(entries),
                  enabled=not args.quiet) as bar:
        async def bulk(client: Any, conn: Connection) -> Published:
            await _check_key(client, stream)
            sender = _Sender(client, stream, source, bar)
            try:
                if entries is not None:
                    await sender.send(entries)
                elif path == "-":
                    await _publish_stream(sender, sys.stdin.fileno(), prefix, limit)
                else:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        await _publish_stream(sender, fd, prefix, limit)
                    finally:
                        os.close(fd)
            finally:
                await sender.pipe.aclose()
            return sender.done

        done = run(url, bulk)
    if not args.quiet:
        if done.count:
            s = "entry" if done.count == 1 else "entries"
            print(f"published {done.count} {s} to {stream} (first {done.first_id}, "
                  f"last {done.last_id})")
        else:
            print(f"published nothing to {stream}: {source} has no entries")
    return 0
