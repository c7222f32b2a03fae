"""How ``streamflow top`` lays a :class:`~streamflow.admin.top.Snapshot` out: screens and tables.

:func:`layout` fits one frame into a terminal of ``width`` x ``height``: a header line
(server, version, time), a status line (a summary, or the error of the last refresh), the
streams table (one line per stream, one indented line per consumer group), the job queues
table, and a footer (``q quit``). No line is longer than ``width`` and there are never more
than ``height`` lines: the stream-name column takes what the number columns leave (long
names are cut in the middle, which keeps their distinguishing ends), columns are dropped
when the terminal is narrow (``LEN`` first), rows that do not fit are counted in the footer.
A :class:`Line` carries style names for the rich view (:mod:`~streamflow.admin.top_live`);
the plain view prints the text alone.

:func:`snapshot_text` is the plain table a pipe gets (one row per stream and group, natural
column widths, nothing cut), printed once per refresh.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..connection import redact_url
from .queues import QueueCounts
from .render import clean, duration, table
from .top_model import GroupSample, Snapshot, StreamSample

__all__ = ["Line", "count", "fit_name", "layout", "rate", "snapshot_text"]

MIN_NAME = 16  # columns are dropped before the name column gets narrower than this
ERROR_LINES = 3  # lines an error may take at the top of the screen


@dataclass
class Line:
    """One screen line: its text and ``(start, end, style)`` spans (style names, see top_live)."""

    text: str
    style: str = ""
    spans: list[tuple[int, int, str]] = field(default_factory=list)


def count(n: int | None) -> str:
    """A count in at most 6 characters: ``987``, ``12345``, ``123.4k``, ``12.3M``."""
    if n is None:
        return "-"
    if n < 100_000:
        return str(n)
    for unit, size in (("M", 1_000_000), ("G", 1_000_000_000)):
        if n < size * 1000:
            return f"{n / size:.1f}{unit}" if n < size * 100 else f"{n // size}{unit}"
    return f"{n // 1_000_000_000}G"


def rate(r: float | None) -> str:
    """A rate per second: ``-`` unknown, ``0``, ``0.5``, ``118``, ``12.3k``."""
    if r is None:
        return "-"
    if r == 0:
        return "0"
    if r < 10:
        return f"{r:.1f}"
    if r < 100_000:
        return str(round(r))
    return count(round(r))


def fit_name(name: str, width: int) -> str:
    """``name`` (control characters escaped) in at most ``width`` characters, cut in the middle."""
    name = clean(name)
    if len(name) <= width:
        return name
    if width <= 3:
        return name[:width]
    head = (width - 3 + 1) // 2
    tail = width - 3 - head
    return name[:head] + "..." + (name[-tail:] if tail else "")


def _consumers(g: GroupSample) -> str:
    return f"{'?' if g.live is None else g.live}/{g.stopped}"


def _oldest(g: GroupSample) -> str:
    return "" if g.oldest_age_ms is None else duration(g.oldest_age_ms)


# A column: label, width, the stream row's cell, the group row's cell.
Cell = Callable[[StreamSample], str]
GroupCell = Callable[[GroupSample], str]
_COLUMNS: list[tuple[str, int, Cell, GroupCell]] = [
    ("LEN", 7, lambda s: count(s.length), lambda g: ""),
    ("IN/S", 7, lambda s: rate(s.rate_in), lambda g: ""),
    ("OUT/S", 7, lambda s: "", lambda g: rate(g.rate)),
    ("LAG", 7, lambda s: "", lambda g: count(g.lag)),
    ("PENDING", 7, lambda s: "", lambda g: count(g.pending)),
    ("OLDEST", 7, lambda s: "", _oldest),
    ("LIVE/STOP", 9, lambda s: "", _consumers),
    ("DLQ", 6, lambda s: count(s.dlq_length), lambda g: ""),
]
_DROP = ["LEN", "IN/S", "OLDEST", "LIVE/STOP", "LAG", "DLQ"]  # narrow terminals lose these first
_QUEUE_COLUMNS: list[tuple[str, int, Callable[[QueueCounts], str]]] = [
    ("QUEUED", 7, lambda q: count(q.queued) + ("" if q.queued_exact else "+")),
    ("SCHED", 7, lambda q: count(q.scheduled)),
    ("RUNNING", 7, lambda q: count(q.running)),
    ("RETRYING", 8, lambda q: count(q.retrying)),
    ("FAILED", 7, lambda q: count(q.failed)),
]
_QUEUE_DROP = ["RETRYING", "SCHED", "RUNNING"]
_STATE = {"missing": "(no such stream)", "denied": "(no permission)", "wrongtype": "(not a stream)"}


def _fit_columns(width: int, columns: list[tuple[str, int]], drop: Sequence[str]) -> list[str]:
    """The labels of the columns kept so that the name column gets at least MIN_NAME."""
    kept = [label for label, _ in columns]
    sizes = dict(columns)
    for label in drop:
        if width - sum(sizes[k] + 1 for k in kept) >= MIN_NAME:
            break
        kept.remove(label)
    return kept


def _row(name: str, cells: list[tuple[str, int]], width: int, name_width: int) -> str:
    text = fit_name(name, name_width).ljust(name_width) + "".join(
        " " + value[:w].rjust(w) for value, w in cells)
    return text[:width].rstrip()


def _spans_of(text: str, cells: list[tuple[str, int, str]], name_width: int) -> list[
        tuple[int, int, str]]:
    spans, pos = [], name_width
    for _, w, style in cells:
        pos += 1 + w
        if style and pos <= len(text):
            spans.append((pos - w, pos, style))
    return spans


def _stream_lines(snap: Snapshot, width: int) -> tuple[Line, list[Line]]:
    kept = _fit_columns(width, [(c[0], c[1]) for c in _COLUMNS], _DROP)
    cols = [c for c in _COLUMNS if c[0] in kept]
    name_width = max(1, width - sum(c[1] + 1 for c in cols))
    header = Line(_row("STREAM / GROUP", [(c[0], c[1]) for c in cols], width, name_width), "title")
    lines: list[Line] = []
    for s in snap.streams:
        if s.state != "stream":
            lines.append(Line(_row(f"{s.name} {_STATE.get(s.state, s.state)}", [], width, width),
                              "dim"))
            continue
        cells = [(c[2](s), c[1], "alert" if c[0] == "DLQ" and s.dlq_length else "") for c in cols]
        text = _row(s.name, [(v, w) for v, w, _ in cells], width, name_width)
        lines.append(Line(text, "stream", _spans_of(text, cells, name_width)))
        for g in s.groups:
            cells = [(c[3](g), c[1], _group_style(c[0], g)) for c in cols]
            text = _row("  " + g.name, [(v, w) for v, w, _ in cells], width, name_width)
            lines.append(Line(text, "group", _spans_of(text, cells, name_width)))
    return header, lines


def _group_style(label: str, g: GroupSample) -> str:
    if label == "OUT/S" and g.rate:
        return "good"
    if label == "LAG" and g.lag:
        return "warn"
    if label == "LIVE/STOP" and not g.live and (g.pending or g.lag):
        return "alert"  # work waiting and nobody to do it
    return ""


def _queue_lines(snap: Snapshot, width: int) -> list[Line]:
    if not snap.queues:
        return []
    kept = _fit_columns(width, [(c[0], c[1]) for c in _QUEUE_COLUMNS], _QUEUE_DROP)
    columns = [c for c in _QUEUE_COLUMNS if c[0] in kept]
    cols = [(c[0], c[1]) for c in columns]
    name_width = max(1, width - sum(w + 1 for _, w in cols))
    lines = [Line(_row("JOB QUEUE", cols, width, name_width), "title")]
    for q in snap.queues:
        cells = [(c[2](q), c[1], "alert" if c[0] == "FAILED" and q.failed else "")
                 for c in columns]
        text = _row(q.queue, [(v, w) for v, w, _ in cells], width, name_width)
        lines.append(Line(text, "stream", _spans_of(text, cells, name_width)))
    return lines


def _header(snap: Snapshot, width: int, now: float) -> Line:
    left = f"streamflow top  {clean(redact_url(snap.url))}"
    if snap.version:
        left += f"  {clean(snap.version)}"
    right = time.strftime("%H:%M:%S", time.localtime(now))
    if len(left) + 2 + len(right) > width:
        left = fit_name(left, max(0, width - len(right) - 2))
    return Line((left.ljust(width - len(right)) + right)[:width], "header")


def _n(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _status(snap: Snapshot, interval: float, width: int) -> list[Line]:
    """The status: the error of the last refresh (up to :data:`ERROR_LINES` lines), a note,
    or a summary."""
    if snap.error:
        since = "" if snap.taken_at is None else \
            f", figures from {time.strftime('%H:%M:%S', time.localtime(snap.taken_at))}"
        text = f"! {clean(snap.error)} (retrying every {interval:g}s{since})"
        wrapped = textwrap.wrap(text, max(1, width)) or [""]
        if len(wrapped) > ERROR_LINES:
            wrapped = [*wrapped[: ERROR_LINES - 1], fit_name(" ".join(wrapped[ERROR_LINES - 1:]),
                                                            width)]
        return [Line(line, "error") for line in wrapped]
    if snap.notes:
        return [Line(fit_name(snap.notes[0], width), "note")]
    groups = sum(len(s.groups) for s in snap.streams)
    text = (f"{_n(len(snap.streams), 'stream')}  {_n(groups, 'group')}  "
            f"{_n(len(snap.queues), 'job queue')}  refresh {interval:g}s  rates: per second")
    return [Line(text[:width], "dim")]


def layout(snap: Snapshot, width: int, height: int, interval: float,
           now: float | None = None) -> list[Line]:
    """The lines of one frame for a ``width`` x ``height`` terminal (see the module docstring)."""
    if width < 1 or height < 1:
        return []
    header = _header(snap, width, time.time() if now is None else now)
    if height < 3:
        return [*[header][: height - 1], Line("q quit"[:width], "footer")]
    if snap.server_ms is None:  # no figures yet
        body: list[Line] = [Line("" if snap.error else "connecting..."[:width], "dim")]
        title: list[Line] = []
        queues: list[Line] = []
    else:
        col_header, body = _stream_lines(snap, width)
        title = [col_header]
        queues = _queue_lines(snap, width)
    status = _status(snap, 1.0 if interval <= 0 else interval, width)
    room = height - 2 - len(status) - len(title)  # header, status, footer
    q_take = 0  # lines of the queue section: a blank line, its header, its rows
    if queues and room >= 3:
        q_take = len(queues) + 1
        if len(body) + q_take > room:  # the streams get two thirds, at least one queue shows
            q_take = min(q_take, max(3, room // 3))
    shown_queues = [Line(""), *queues[: q_take - 1]] if q_take else []
    room -= q_take
    hidden = max(0, len(body) - room)
    if queues:
        hidden += len(queues) - 1 - max(0, q_take - 2)
    body = body[: max(0, room)]
    footer = "q quit" + (f"  ({hidden} more rows: enlarge the terminal)" if hidden else "")
    lines = [header, *status, *title, *body, *shown_queues]
    lines = lines[: height - 1]
    lines += [Line("") for _ in range(height - 1 - len(lines))]  # the footer on the last line
    return [*lines, Line(footer[:width], "footer")]


def snapshot_text(snap: Snapshot) -> str:
    """The plain tables of one refresh (for a pipe): a title line, streams and groups, queues."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.taken_at or time.time()))
    title = f"streamflow top  {clean(redact_url(snap.url))}  {clean(snap.version)}  {when}"
    rows: list[list[object]] = []
    for s in snap.streams:
        groups: list[GroupSample | None] = [*s.groups] or [None]
        for g in groups:
            per_group: list[object] = ["-"] * 6 if g is None else [
                rate(g.rate), count(g.lag), count(g.pending), _oldest(g) or "-",
                "?" if g.live is None else g.live, g.stopped]
            rows.append([s.name, g.name if g else "-", s.state, count(s.length), rate(s.rate_in),
                         *per_group, count(s.dlq_length)])
    parts = [title, table(["STREAM", "GROUP", "STATE", "LEN", "IN/S", "OUT/S", "LAG", "PENDING",
                           "OLDEST", "LIVE", "STOPPED", "DLQ"], rows, right=range(3, 12))]
    if snap.queues:
        parts.append(table(["QUEUE", *(c[0] for c in _QUEUE_COLUMNS)],
                           [[q.queue, *(c[2](q) for c in _QUEUE_COLUMNS)] for q in snap.queues],
                           right=range(1, 6)))
    parts += [f"note: {n}" for n in snap.notes]
    return "\n".join(parts) + "\n"
