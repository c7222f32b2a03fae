"""SyncBridge: runs the jobs API for code without an event loop (Flask, Django, scripts).

The first sync call starts one daemon thread with its own event loop (an anyio blocking
portal) and its own connection, opened from the application's settings; later calls
reuse both. :meth:`close` (also run at interpreter exit) closes the connection and
stops the thread. Calling it from a thread that runs an event loop is refused: that
would block the loop; ``await`` the async method there instead.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..connection import Connection
from ..errors import StreamflowError

__all__ = ["SyncBridge"]


class SyncBridge:
    """One event loop thread and connection for sync callers; see the module docstring."""

    def __init__(self, open_connection: Callable[[], Connection]) -> None:
        self._open = open_connection  # builds the bridge's connection (in its loop)
        self._lock = threading.Lock()
        self._cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None  # the portal's thread
        self._connection: Connection | None = None

    def here(self) -> bool:
        """True when called on the bridge's own event loop thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    async def client(self) -> Any:
        """The bridge connection's client (call only on the bridge's loop)."""
        if self._connection is None or self._connection.closed:
            self._connection = self._open()
        return await self._connection.client()

    def run(self, func: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``func()`` on the bridge's loop and return its result (blocking)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise StreamflowError(
                "a *_sync method was called from a running event loop, which it would "
                "block; await the async method instead (e.g. await task.enqueue(...))")
        return self._start().call(func)

    def _start(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                cm = start_blocking_portal()
                portal = cm.__enter__()
                self._thread = portal.call(threading.current_thread)
                self._cm, self._portal = cm, portal
                atexit.register(self.close)
            return self._portal

    def close(self) -> None:
        """Close the bridge's connection and stop its thread (a later call starts anew)."""
        with self._lock:
            cm, portal = self._cm, self._portal
            self._cm = self._portal = self._thread = None
        if portal is None or cm is None:
            return
        conn, self._connection = self._connection, None
        try:
            if conn is not None:
                portal.call(conn.aclose)
        finally:
            cm.__exit__(None, None, None)
