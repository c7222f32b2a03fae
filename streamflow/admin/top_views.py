"""How ``streamflow top`` draws: the views a refresh is drawn by (see :mod:`~streamflow.admin.top_live`).

* :class:`PipeView`: stdout is no terminal (or ``--json``): one snapshot per refresh, plain
  tables (:func:`~streamflow.admin.top_screen.snapshot_text`) or one JSON document per line;
* :class:`RichView`: full screen with rich's ``Live`` on the alternate screen (the ``live``
  extra), styled;
* :class:`AnsiView`: full screen with plain ANSI control sequences, when rich is missing or
  ``--plain`` is given.

Both full-screen views lay the frame out with :func:`~streamflow.admin.top_screen.layout` at
the terminal's size at the moment they draw, so a frame drawn after a resize fits it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Protocol

from .top_model import Snapshot
from .top_screen import Line, layout, snapshot_text

__all__ = ["AnsiView", "PipeView", "RichView", "View", "choose_view", "terminal_size"]

STYLES = {"header": "reverse bold", "title": "bold", "stream": "bold", "dim": "dim",
          "error": "bold red", "note": "yellow", "footer": "reverse", "good": "green",
          "warn": "yellow", "alert": "bold red"}


class View(Protocol):
    """What the refresh loop draws with."""

    interactive: bool  # full screen: reads keys, redraws on resize

    def open(self) -> None: ...
    def draw(self, snap: Snapshot) -> None: ...
    def close(self) -> None: ...


def terminal_size() -> tuple[int, int]:
    """Columns and lines of the terminal on stdout now (80 x 24 when it cannot tell)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24


class PipeView:
    """One snapshot per refresh on stdout: plain tables, or a JSON document per line."""

    interactive = False

    def __init__(self, as_json: bool, interval: float) -> None:
        self.as_json, self.interval = as_json, interval
        self._error: str | None = None  # the error last told on stderr

    def open(self) -> None: ...

    def close(self) -> None: ...

    def draw(self, snap: Snapshot) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(snap.to_json(), ensure_ascii=False) + "\n")
        elif snap.error:
            if snap.error != self._error:
                print(f"streamflow top: {snap.error}: retrying every {self.interval:g}s",
                      file=sys.stderr, flush=True)
        else:
            sys.stdout.write(snapshot_text(snap) + "\n")
        self._error = snap.error
        sys.stdout.flush()


class AnsiView:
    """Full screen without rich: the alternate screen, each line put at its place."""

    interactive = True

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def open(self) -> None:
        self._write("\x1b[?1049h\x1b[?25l\x1b[2J")

    def close(self) -> None:
        self._write("\x1b[0m\x1b[?25h\x1b[?1049l")

    def draw(self, snap: Snapshot) -> None:
        width, height = terminal_size()
        lines = layout(snap, width, height, self.interval)
        out = []
        for row, line in enumerate(lines, 1):
            text = f"\x1b[7m{line.text}\x1b[0m" if line.style in ("header", "footer") else line.text
            out.append(f"\x1b[{row};1H\x1b[2K{text}")
        if len(lines) < height:
            out.append(f"\x1b[{len(lines) + 1};1H\x1b[J")
        self._write("".join(out))


class RichView:
    """Full screen with rich's ``Live`` on the alternate screen; sized at each draw."""

    interactive = True

    def __init__(self, interval: float) -> None:
        from rich.console import Console

        self.interval = interval
        self.console = Console(highlight=False)
        self.snap: Snapshot | None = None
        self.live: Any = None

    def _text(self, lines: list[Line]) -> Any:
        from rich.text import Text

        text = Text(no_wrap=True, overflow="crop", end="")
        for i, line in enumerate(lines):
            start = len(text)
            text.append(line.text + ("\n" if i < len(lines) - 1 else ""),
                        style=STYLES.get(line.style, ""))
            for a, b, style in line.spans:
                text.stylize(STYLES.get(style, ""), start + a, start + b)
        return text

    def _frame(self) -> Any:
        width, height = self.console.size
        assert self.snap is not None
        return self._text(layout(self.snap, width, height, self.interval))

    def open(self) -> None:
        from rich.live import Live

        self.console.size = terminal_size()
        self.live = Live(console=self.console, screen=True, auto_refresh=False,
                         redirect_stdout=False, redirect_stderr=False,
                         get_renderable=lambda: self._frame() if self.snap else "")
        self.live.start()

    def draw(self, snap: Snapshot) -> None:
        self.snap = snap
        self.console.size = terminal_size()  # the terminal's size now (COLUMNS/LINES would fix it)
        self.live.refresh()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def choose_view(args: argparse.Namespace) -> View:
    interval: float = args.interval
    if args.json or not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return PipeView(args.json, interval)
    if not args.plain:
        try:
            return RichView(interval)
        except ImportError:
            pass  # rich is an optional extra (streamflow-redis[live])
    return AnsiView(interval)
