"""A progress indicator for long operator commands: on a terminal only, on stderr.

``dlq replay --all``, ``dlq purge``, ``publish --file`` and ``info`` over many streams
report how far they are with :func:`progress`::

    with progress("replaying orders:dlq", total=n) as bar:
        ...
        bar.update(done, total)     # or bar.advance(k)

What is drawn depends on where stderr goes:

* not a terminal (a pipe, a file, a CI log): nothing at all, so scripts and logs see only
  the command's output;
* a terminal, with `rich <https://rich.readthedocs.io>`_ installed: a ``rich.progress``
  bar (description, bar, done/total, percentage, time left);
* a terminal without rich: one plain line redrawn in place with ``\\r``
  (``replaying orders:dlq [#######.....] 1200/3000 40% 5200/s``), at most ten times a
  second.

Either way the indicator is erased when the operation ends (the command then prints its
summary), and it only appears once there is something worth showing: ``min_total``
items (the total, or the count so far when the total is unknown). Progress goes to
stderr, never stdout, so ``--json`` output stays one clean document.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = ["MIN_TOTAL", "PlainProgress", "Progress", "RichProgress", "progress"]

#: Items below which no indicator is drawn (an operation that short is over at once).
MIN_TOTAL = 500
_INTERVAL = 0.1  # seconds between redraws of the plain line
_BAR = 24  # characters of the plain bar


class Progress:
    """The progress of one operation. This base class draws nothing (stderr is not a
    terminal, or the command was asked to be quiet); the subclasses draw."""

    def __init__(self, description: str = "", total: int | None = None,
                 min_total: int = MIN_TOTAL) -> None:
        self.description = description
        self.total = total  # None: not known (yet)
        self.done = 0
        self.min_total = min_total
        self.started = False  # drawing began (min_total reached)
        self.start_time = time.monotonic()

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` items of ``total`` (None: unknown) are done."""
        self.done, self.total = done, total
        if not self.started and max(done, total or 0) >= self.min_total:
            self.started = True
            self._start()
        if self.started:
            self._draw()

    def advance(self, n: int = 1) -> None:
        """``n`` more items are done (the total stays what it was)."""
        self.update(self.done + n, self.total)

    def close(self) -> None:
        """The operation ended: erase the indicator."""
        if self.started:
            self.started = False
            self._stop()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        """Begin drawing (subclasses)."""

    def _draw(self) -> None:
        """Show ``done`` / ``total`` (subclasses)."""

    def _stop(self) -> None:
        """Erase what was drawn (subclasses)."""


class PlainProgress(Progress):
    """One line on ``stream``, redrawn in place with ``\\r``; erased at the end."""

    def __init__(self, description: str, total: int | None, min_total: int,
                 stream: TextIO) -> None:
        super().__init__(description, total, min_total)
        self.stream = stream
        self._last_draw = 0.0
        self._width = 0  # characters of the line drawn last

    def line(self) -> str:
        """The text of the line: description, bar, done/total, percentage, rate."""
        elapsed = max(time.monotonic() - self.start_time, 1e-6)
        rate = f"{self.done / elapsed:.0f}/s"
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = int(frac * _BAR)
            bar = "#" * filled + "." * (_BAR - filled)
            return f"{self.description} [{bar}] {self.done}/{self.total} {frac:4.0%} {rate}"
        return f"{self.description} {self.done}/? {rate}"

    def _draw(self) -> None:
        now = time.monotonic()
        if now - self._last_draw < _INTERVAL and self.done != self.total:
            return
        self._last_draw = now
        columns = shutil.get_terminal_size((80, 24)).columns
        text = self.line()[: max(columns - 1, 10)]  # a wrapped line could not be redrawn
        self.stream.write("\r" + text + " " * max(self._width - len(text), 0))
        self.stream.flush()
        self._width = len(text)

    def _stop(self) -> None:
        self.stream.write("\r" + " " * self._width + "\r")
        self.stream.flush()


class RichProgress(Progress):
    """A ``rich.progress`` bar on ``stream`` (transient: removed at the end)."""

    def __init__(self, description: str, total: int | None, min_total: int,
                 stream: TextIO, rich_progress: Any, console: Any) -> None:
        super().__init__(description, total, min_total)
        rp = rich_progress
        self._bar: Any = rp.Progress(
            rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
            rp.TaskProgressColumn(), rp.TimeRemainingColumn(),
            console=console.Console(file=stream), transient=True,
        )
        self._task: Any = None

    def _start(self) -> None:
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total)

    def _draw(self) -> None:
        self._bar.update(self._task, completed=self.done, total=self.total)

    def _stop(self) -> None:
        self._bar.stop()


def _rich() -> tuple[Any, Any] | None:
    """``(rich.progress, rich.console)`` when rich is installed, else None."""
    try:
        return importlib.import_module("rich.progress"), importlib.import_module("rich.console")
    except ImportError:
        return None


def progress(description: str, total: int | None = None, *, enabled: bool = True,
             min_total: int = MIN_TOTAL, stream: TextIO | None = None) -> Progress:
    """A progress indicator for ``description`` on ``stream`` (default stderr).

    It draws only when ``enabled`` (False for ``--quiet``), ``stream`` is a terminal,
    and at least ``min_total`` items are (or will be) done; with rich installed it is a
    ``rich.progress`` bar, else a plain ``\\r`` line.
    """
    out = sys.stderr if stream is None else stream
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        tty = False
    if not enabled or not tty:
        return Progress(description, total, min_total)
    rich = _rich()
    if rich is not None:
        return RichProgress(description, total, min_total, out, *rich)
    return PlainProgress(description, total, min_total, out)
