"""Running workers in a test: fast settings, building workers, serving them, ``run_until``.

One family, from the smallest piece up:

* :data:`FAST_SETTINGS` and :func:`fast_settings`: settings that react within a tenth of
  a second (short reads, quick reclaims and leases, a short grace period);
* :func:`make_worker`: a :class:`~streamflow.Worker` with those settings and no signal
  handlers (the test runner owns SIGINT);
* :func:`serving`: run workers while an ``async with`` block runs, stop them gracefully
  at its end, and close what their apps opened;
* :func:`running_worker`: :func:`make_worker` plus :func:`serving` for one app;
* :func:`run_until`: run an app until it has finished N entries or is idle, and return
  the counts.

At the end of a block every app involved is closed (:meth:`App.aclose
<streamflow.App.aclose>`, after its workers stopped): a connection it opened (a publish
before or after the worker ran) belongs to this test's event loop, so a module-level
``app`` starts the next test, on a new loop and maybe another server, with nothing old.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any

import anyio

from ..config import Settings
from ..spec import Registry
from ..stats import WorkerStats
from ..worker import Worker
from .conditions import wait_finished, wait_idle

__all__ = [
    "FAST_SETTINGS",
    "fast_settings",
    "make_worker",
    "run_until",
    "running_worker",
    "serving",
]

#: Settings that make a test worker react fast: reads block 100 ms, the reclaimer looks
#: every 0.1 s, entries of a dead consumer are reclaimed after 1 s idle (running handlers
#: renew their lease every 0.25 s), and a stop waits at most 2 s for running handlers.
FAST_SETTINGS: Mapping[str, Any] = MappingProxyType({
    "block_ms": 100,
    "visibility_timeout": 1.0,
    "reclaim_interval": 0.1,
    "grace_period": 2.0,
})


def fast_settings(app: Registry, url: str, **overrides: Any) -> Settings:
    """``app``'s settings for a worker on ``url``: :data:`FAST_SETTINGS`, then ``overrides``."""
    return app.settings(redis_url=url, **{**FAST_SETTINGS, **overrides})


def make_worker(app: Registry, url: str, **overrides: Any) -> Worker:
    """A worker for ``app`` on ``url`` with :func:`fast_settings` and no signal handlers.

    Not started: run it with :func:`serving`, or await ``worker.serve()`` to see it fail.
    """
    return Worker(app, fast_settings(app, url, **overrides), handle_signals=False)


async def _close_apps(workers: tuple[Worker, ...]) -> None:
    for app in dict.fromkeys(w.app for w in workers):
        with anyio.CancelScope(shield=True):
            try:
                await app.aclose()
            except RuntimeError as exc:
                # A connection an earlier test opened (and left open) on its own event
                # loop, which is closed now: the app has let go of it all the same.
                if "loop" not in str(exc):
                    raise


@asynccontextmanager
async def serving(
    *workers: Worker, ready_timeout: float = 10.0, timeout: float | None = 60.0
) -> AsyncIterator[None]:
    """Run ``workers`` while the ``async with`` body runs.

    The body starts once every worker is ready (groups created, own pending entries
    being drained); when it ends each worker is stopped gracefully (running handlers
    get ``grace_period``, acks are flushed) and then each app is closed (see the module
    docstring). ``timeout`` bounds the whole block (None: no bound). An error of the
    body, or of a worker that could not start, is raised as it is (not in a group).
    """
    error: Exception | None = None  # the body's, raised again once the workers stopped
    try:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                for w in workers:
                    tg.start_soon(w.serve)
                try:
                    with anyio.fail_after(ready_timeout):
                        for w in workers:
                            await w.ready.wait()
                    try:
                        yield
                    except Exception as exc:
                        error = exc
                finally:
                    for w in workers:
                        w.stop()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
            raise group.exceptions[0] from None  # e.g. ServerUnavailable from serve()
        raise
    finally:
        await _close_apps(workers)
    if error is not None:
        raise error


@asynccontextmanager
async def running_worker(
    app: Registry, url: str, *, ready_timeout: float = 10.0, timeout: float | None = 60.0,
    **overrides: Any,
) -> AsyncIterator[Worker]:
    """Run one worker for ``app`` against ``url`` while the ``async with`` body runs.

    ``overrides`` are settings (over :data:`FAST_SETTINGS`), e.g. ``concurrency=1``.
    While the body runs, ``app.publish`` goes to ``url`` (through the worker's
    connection); at the end the worker stops gracefully and the app is closed, so a
    module-level app is ready for the next test::

        async with running_worker(app, redis_url) as worker:
            await app.publish("orders", {"order_id": 7})
            stats = await wait_finished(worker, 1)
        assert stats.handled == 1
    """
    worker = make_worker(app, url, **overrides)
    async with serving(worker, ready_timeout=ready_timeout, timeout=timeout):
        yield worker


async def run_until(
    app: Registry, url: str, *, finished: int | None = None, idle: bool = False,
    feed: Callable[[], Awaitable[object]] | None = None, timeout: float = 30.0,
    **overrides: Any,
) -> WorkerStats:
    """Run a worker for ``app`` on ``url`` until it has finished ``finished`` entries
    and/or (``idle=True``) until it is idle; stop it and return its final
    :class:`~streamflow.stats.WorkerStats` (``.handled``, ``.failed``,
    ``.dead_lettered``, ``.handler("bill").retried``, ...).

    * ``finished=N``: N entries handled, dead-lettered or found trimmed (an entry
      waiting for a retry is not finished yet);
    * ``idle=True``: nothing in flight, nothing pending in any of its groups (retries
      included) and nothing left to deliver;
    * ``feed``: awaited once the worker is ready, e.g. ``lambda: app.publish_many(...)``
      (it publishes to ``url``, and the handlers' groups exist, whatever their
      ``start_id``).

    Entries may also be in the streams already (written by another client, or for
    groups that existed before). After ``timeout`` seconds of waiting,
    :class:`~streamflow.testing.WaitTimeout` says what was awaited and the counts then.
    ``overrides`` are worker settings over :data:`FAST_SETTINGS`.
    """
    if finished is None and not idle:
        raise ValueError("run_until() needs finished=N or idle=True (what to wait for)")
    async with running_worker(app, url, timeout=None, **overrides) as worker:
        if feed is not None:
            await feed()
        if finished is not None:
            await wait_finished(worker, finished, timeout=timeout)
        if idle:
            await wait_idle(worker, timeout=timeout)
    return worker.stats()
