"""Waiting for a condition in a test: poll it until it holds, fail clearly when it does not.

Tests wait for an event or for quiet, never for a fixed time: :func:`wait_until` polls a
predicate (sync or async) and returns its first truthy value; :func:`wait_until_blocking`
does the same for sync tests (a worker subprocess, a sync client). Both raise
:class:`WaitTimeout` (an ``AssertionError``) naming what was awaited, with whatever
``detail()`` reports at that moment (counts, a log).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["WaitTimeout", "wait_until", "wait_until_blocking"]


class WaitTimeout(AssertionError):
    """A condition a test waited for did not hold in time."""

    def __init__(self, what: str, timeout: float, detail: str = "") -> None:
        self.what = what  # what was awaited, in words
        self.timeout = timeout  # seconds waited
        self.detail = detail  # state at the deadline (counts, logs), may be empty
        message = f"timed out after {timeout:g}s waiting for {what}"
        super().__init__(f"{message}\n{detail}" if detail else message)


def _describe(detail: Callable[[], str] | None) -> str:
    if detail is None:
        return ""
    try:
        return detail()
    except Exception as exc:  # the timeout is the error to report, not the diagnosis
        return f"(detail() failed: {exc!r})"


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate()`` (sync, or returning an awaitable) every ``interval`` seconds
    until it returns something truthy, and return that.

    After ``timeout`` seconds (the predicate is checked once more at the deadline) raise
    :class:`WaitTimeout` with ``what`` and the text ``detail()`` returns then.
    Exceptions raised by the predicate propagate at once (an ``assert`` in it fails the
    test right away: useful for "the subprocess is still alive").
    """
    deadline = anyio.current_time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if anyio.current_time() >= deadline:
            raise WaitTimeout(what, timeout, _describe(detail))
        await anyio.sleep(interval)


def wait_until_blocking(
    predicate: Callable[[], Any],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
    detail: Callable[[], str] | None = None,
) -> Any:
    """:func:`wait_until` for sync code (blocks the thread between polls)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, _describe(detail))
        time.sleep(interval)
