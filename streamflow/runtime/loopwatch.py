"""LoopWatch: warns when a handler blocks the event loop, and names the handler.

A handler that calls blocking code (``time.sleep(3)``, a synchronous HTTP client, a
CPU-bound loop) stops every other coroutine of the worker: other handlers, their
timeouts, lease renewals, reads. Nothing inside the loop can notice while it happens,
so a small thread watches a heartbeat the loop updates every ``threshold / 4``. When
the heartbeat is older than ``threshold``, the thread looks at the loop thread's
current stack (``sys._current_frames``), finds the innermost frame of a registered
handler and logs ``event_loop_blocked`` with the handler's name and the file and line
it is blocked at. When the loop runs again, ``event_loop_unblocked`` says for how long
it was blocked.

The hot path pays nothing: the heartbeat is one coroutine waking every
``threshold / 4``; the thread sleeps in between.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from types import CodeType, FrameType
from typing import Any

import anyio

from ..spec import HandlerSpec

__all__ = ["BLOCKED_LOOP_WARNING", "LoopWatch", "blocking_handler"]

#: Seconds the event loop may be blocked before a warning names the handler.
BLOCKED_LOOP_WARNING = 1.0


def blocking_handler(frame: FrameType | None, handlers: dict[CodeType, str]) -> tuple[str, str]:
    """(handler name, ``file:line`` where it is) for the innermost handler frame of a stack."""
    where = ""
    while frame is not None:
        if not where:
            where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        name = handlers.get(frame.f_code)
        if name is not None:
            return name, f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "", where


class LoopWatch:
    """Owned by the worker: :meth:`run` starts the watching thread and stops it when cancelled."""

    def __init__(
        self, specs: Iterable[HandlerSpec], log: Any, threshold: float = BLOCKED_LOOP_WARNING
    ) -> None:
        self.threshold = threshold  # seconds of blocking before a warning
        self.log = log
        self.handlers: dict[CodeType, str] = {}  # handler code objects -> handler names
        for spec in specs:
            code = getattr(spec.func, "__code__", None)
            if isinstance(code, CodeType):
                self.handlers[code] = spec.name
        self.blocked = 0  # warnings logged so far
        self._beat = time.monotonic()  # last time the loop ran (written by the loop only)
        self._reported = False  # a warning for the current block was logged (thread only)

    async def run(self) -> None:
        """Beat until cancelled; a daemon thread watches the beats."""
        loop_thread = threading.get_ident()
        stop = threading.Event()
        thread = threading.Thread(
            target=self._watch, args=(loop_thread, stop), name="streamflow-loopwatch",
            daemon=True,
        )
        thread.start()
        tick = self.threshold / 4
        try:
            while True:
                now = time.monotonic()
                late = now - self._beat - tick
                if late > self.threshold and self._reported:
                    self.log.warning("event_loop_unblocked", blocked_s=round(late, 3))
                self._reported = False
                self._beat = now
                await anyio.sleep(tick)
        finally:
            stop.set()

    def _watch(self, loop_thread: int, stop: threading.Event) -> None:
        tick = self.threshold / 4
        while not stop.wait(tick):
            blocked_for = time.monotonic() - self._beat - tick
            if blocked_for <= self.threshold or self._reported:
                continue
            frame = sys._current_frames().get(loop_thread)
            handler, where = blocking_handler(frame, self.handlers)
            del frame
            self._reported = True
            self.blocked += 1
            self.log.warning(
                "event_loop_blocked", blocked_s=round(blocked_for, 3), handler=handler or None,
                at=where, hint="a handler is running blocking code; every other handler, "
                "timeout and lease waits (use await, or anyio.to_thread.run_sync)",
            )
