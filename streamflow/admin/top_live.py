"""``streamflow top [STREAM ...]``: the command, its refresh loop, keys, signals, the terminal.

Which view (:mod:`~streamflow.admin.top_views`) draws a refresh (:func:`cmd_top`):

* ``--once``: one snapshot (two samples ``--interval`` apart, so that the rates mean
  something), printed as plain tables (or one JSON document with ``--json``); exit 0;
* ``--json``, or stdout not a terminal: one snapshot per refresh, as plain tables (a blank
  line between two) or one JSON document per line; errors go to stderr (text) or into the
  document's ``error`` (JSON); stops on SIGINT/SIGTERM or when the reader closes the pipe;
* a terminal: full screen, redrawn every refresh and at once on a resize (SIGWINCH), by
  ``rich`` (the ``live`` extra) or, when rich is missing or ``--plain`` is given, by plain
  ANSI control sequences. While it runs the terminal is in cbreak mode (keys arrive one by
  one, not echoed); ``q`` quits with status 0, Ctrl-C with 130, SIGTERM with 143, and the
  terminal's modes and screen are restored whichever way it ends.

A refresh that fails (server down or restarting, a timeout) leaves the figures of the
last good refresh on the screen under the error; the next refresh tries again. A bad URL,
or a Redis user that may not list the server's streams when none are named, is a clear
error before (or instead of) the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import termios
from collections.abc import Iterator
from typing import Any

import anyio

from ..connection import Connection, check_url
from ..errors import ServerUnavailable, StreamflowError
from .info import _server_version
from .runner import redis_url, run, translate
from .top import Sampler
from .top_model import Snapshot
from .top_screen import snapshot_text
from .top_views import View, choose_view

__all__ = ["cmd_top"]

_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


@contextlib.contextmanager
def _cbreak(fd: int | None) -> Iterator[int | None]:
    """Terminal ``fd`` in cbreak mode (no line buffering, no echo) until the block ends."""
    if fd is None:
        yield None
        return
    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[3] &= ~(termios.ICANON | termios.ECHO)
    mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _exit_on(signum: int, _: Any) -> None:
    raise SystemExit(_CODES[signal.Signals(signum)])


@contextlib.contextmanager
def _signals_exit() -> Iterator[None]:
    """SIGTERM/SIGHUP outside the event loop (before it, and after it, when the event loop
    dropped its handlers) end the command through the ``finally`` blocks that restore the
    terminal; :func:`_arm` sets the handlers again."""
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    _arm()
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _arm() -> None:
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _exit_on)


async def _readable(fd: int) -> None:
    """Wait until ``fd`` can be read, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class _Top:
    """The refresh loop and the tasks beside it (keys, signals), owned by one task group."""

    def __init__(self, url: str, sampler: Sampler, interval: float, view: View) -> None:
        self.url, self.sampler, self.interval, self.view = url, sampler, interval, view
        self.snap = Snapshot(url)
        self.code = 0
        self._redraw = anyio.Event()
        self._scope: anyio.CancelScope | None = None

    def stop(self, code: int) -> None:
        self.code = code
        if self._scope is not None:
            self._scope.cancel()

    async def main(self, keys: int | None) -> int:
        # A reply late by more than a few refreshes is an outage to show, not to wait out.
        conn = Connection(self.url, socket_timeout=min(10.0, max(2.0, 3 * self.interval)),
                          connect_timeout=min(5.0, max(1.0, 2 * self.interval)))
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                tg.start_soon(self._signals)
                if keys is not None:
                    tg.start_soon(self._keys, keys)
                tg.start_soon(self._refresh, conn)
        finally:
            await conn.aclose()
        return self.code

    async def _signals(self) -> None:
        wanted = [*_CODES, *([signal.SIGWINCH] if self.view.interactive else [])]
        with anyio.open_signal_receiver(*wanted) as received:
            async for signum in received:
                if signum == signal.SIGWINCH:
                    self._redraw.set()
                else:
                    self.stop(_CODES[signal.Signals(signum)])

    async def _keys(self, fd: int) -> None:
        while True:
            await _readable(fd)
            data = os.read(fd, 1024)
            if not data:  # the terminal went away: nothing more to read
                return
            if b"q" in data.lower():
                self.stop(0)
            elif b"\x0c" in data:  # Ctrl-L: redraw
                self._redraw.set()

    async def _refresh(self, conn: Connection) -> None:
        client: Any = None
        while True:
            started = anyio.current_time()
            try:
                if client is None:
                    await conn.check()  # ServerUnavailable, with hints (TLS, credentials...)
                    client = await conn.client()
                    self.snap.version = await _server_version(client)
                await self.sampler.sample(client, self.snap)
            except ServerUnavailable as exc:
                self._lost(str(exc))
                client = None
            except StreamflowError:
                raise
            except Exception as exc:
                error = translate(exc, conn.safe_url)
                if error is None:
                    raise
                self._lost(str(error))
                client = None
            self._draw()
            with anyio.move_on_after(max(0.0, started + self.interval - anyio.current_time())):
                while True:
                    await self._redraw.wait()
                    self._redraw = anyio.Event()
                    self._draw()

    def _lost(self, error: str) -> None:
        self.snap.error = error
        self.sampler.forget()

    def _draw(self) -> None:
        try:
            self.view.draw(self.snap)
        except BrokenPipeError:  # the reader of the pipe is gone: stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            self.stop(0)


def _once(url: str, sampler: Sampler, interval: float, as_json: bool) -> int:
    async def work(client: Any, conn: Connection) -> Snapshot:
        snap = Snapshot(url, version=await _server_version(client))
        await sampler.sample(client, snap)
        await anyio.sleep(interval)
        await sampler.sample(client, snap)
        return snap

    snap = run(url, work)
    if as_json:
        print(json.dumps(snap.to_json(), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(snapshot_text(snap))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    """``streamflow top [STREAM ...]``: a live view of streams, groups and job queues."""
    url = redis_url(args)
    check_url(url)  # a bad URL: ConfigError now, before the terminal is touched
    sampler = Sampler(list(args.streams or []))
    interval: float = args.interval
    if args.once:
        return _once(url, sampler, interval, args.json)
    view = choose_view(args)
    top = _Top(url, sampler, interval, view)
    keys = sys.stdin.fileno() if view.interactive and sys.stdin.isatty() else None
    with _signals_exit(), _cbreak(keys):
        view.open()
        try:
            return anyio.run(top.main, keys)
        finally:
            _arm()  # asyncio reset them to the default when its loop closed
            view.close()
