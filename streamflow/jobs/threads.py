"""ThreadLane: a bounded set of daemon threads that run sync task functions.

Each lane has ``size`` threads (a task's ``threads=``, else its queue's). A job takes
a thread only when one is free, so its timeout starts when it starts running, not while
it waits. Python cannot stop a running thread: a function that overruns its timeout is
reported as timed out (the job fails or is retried as any failure) while its thread runs
on until the function returns, and its result is then dropped. Such a thread is
*stuck*: it is counted (``stuck``), logged when it overruns and when it finally ends,
and it keeps its place in the lane, so a lane full of stuck threads stops taking sync
jobs (logged as ``sync_threads_exhausted``) instead of growing without bound.
The threads are daemon threads: a stuck one does not keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from ..errors import HandlerTimeout

__all__ = ["ThreadLane"]

log = structlog.get_logger("streamflow.jobs")

_Work = tuple[Callable[[], Any], Callable[[BaseException | None, Any], None]]


class ThreadLane:
    """``size`` daemon threads for sync functions; see the module docstring."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name  # shown in thread names and logs
        self.size = size
        self.busy = 0  # threads running a function now (stuck ones included)
        self.stuck = 0  # threads still running a function whose job timed out or was cancelled
        self.overran = 0  # functions that overran their timeout, ever
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._free: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}  # per loop

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._free.get(loop)
        if sem is None:
            sem = self._free[loop] = asyncio.Semaphore(self.size)
        return sem

    def _spawn(self) -> None:
        with self._lock:
            if len(self._threads) >= self.size:
                return
            t = threading.Thread(target=self._serve, daemon=True,
                                 name=f"streamflow-{self.name}-{len(self._threads)}")
            self._threads.append(t)
        t.start()

    def _serve(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            func, done = work
            try:
                value = func()
            except BaseException as exc:  # handed to the waiting coroutine
                done(exc, None)
            else:
                done(None, value)

    async def run(self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], *,
                  limit: float | None, task: str, job_id: str) -> Any:
        """Run ``func(*args, **kwargs)`` on a thread of this lane; see the module docstring."""
        sem = self._semaphore()
        if sem.locked() and self.stuck >= self.size:
            log.warning("sync_threads_exhausted", lane=self.name, threads=self.size,
                        stuck=self.stuck, task=task, job_id=job_id,
                        hint="every thread runs a function that overran its timeout; "
                             "raise threads= or fix the function")
        await sem.acquire()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        abandoned = False
        started = time.monotonic()

        def finished(exc: BaseException | None, value: Any) -> None:  # on the thread
            def settle() -> None:
                self.busy -= 1
                sem.release()
                if abandoned:
                    self.stuck -= 1
                    log.info("stuck_thread_finished", lane=self.name, task=task, job_id=job_id,
                             ran_s=round(time.monotonic() - started, 3), stuck=self.stuck)
                elif not fut.done():
                    if exc is not None:
                        fut.set_exception(exc)
                    else:
                        fut.set_result(value)
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(settle)

        ctx = contextvars.copy_context()
        self.busy += 1
        self._spawn()
        self._work.put((lambda: ctx.run(func, *args, **kwargs), finished))
        try:
            with anyio.move_on_after(limit) as scope:
                return await asyncio.shield(fut)
        except BaseException:
            # Cancelled (the job was cancelled, or the worker is stopping): the function
            # runs on; its result will be dropped.
            if not fut.done():
                abandoned = True
                self.stuck += 1
            raise
        finally:
            if scope.cancelled_caught and not fut.done():
                abandoned = True
                self.stuck += 1
                self.overran += 1
                log.warning("sync_job_overran", lane=self.name, task=task, job_id=job_id,
                            timeout=limit, stuck=self.stuck, threads=self.size,
                            hint="Python cannot stop a thread: it runs on and its result "
                                 "is dropped; the job counts as timed out")
        raise HandlerTimeout(f"task {task} timed out after {limit:g}s "
                             "(its thread runs on: sync functions cannot be stopped)")

    def close(self) -> None:
        """Let idle threads exit (running ones finish their function first)."""
        with self._lock:
            n, self._threads = len(self._threads), []
        for _ in range(n):
            self._work.put(None)
