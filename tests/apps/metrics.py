"""The app of tests/test_metrics.py: handlers that return, fail or sleep, and two job queues.

``make_app(url)`` builds it (the worker subprocess loads ``app``, whose URL is the
``--redis-url`` it gets; a test enqueues jobs through the tasks of ``make_app(<fixture
url>)``).
"""

from __future__ import annotations

from typing import Any

import anyio

from streamflow import App, Message, Retry

OK, BAD, SLOW = "m:ok", "m:bad", "m:slow"


def make_app(url: str | None = None) -> tuple[App, dict[str, Any]]:
    """The handlers and tasks on a new App, and the tasks by name."""
    app = App(redis_url=url)

    @app.handler(OK, group="m-ok", concurrency=20)
    async def ok(msg: Message) -> None:
        """Returns at once."""

    @app.handler(BAD, group="m-bad", concurrency=5, retry=Retry(max_attempts=2, backoff=0.05))
    async def bad(msg: Message) -> None:
        """Always fails: retried once, then dead-lettered."""
        raise RuntimeError("boom")

    @app.handler(SLOW, group="m-slow", concurrency=1)
    async def slow(msg: Message) -> None:
        """Sleeps ``payload["sleep"]`` seconds (one at a time: the rest waits in the stream)."""
        await anyio.sleep(float(msg.payload["sleep"]))

    app.queue("mq", concurrency=1)
    app.queue("mqf")

    @app.task(queue="mq")
    async def nap(seconds: float) -> None:
        await anyio.sleep(seconds)

    @app.task(queue="mqf", retry=Retry(max_attempts=1))
    async def broken() -> None:
        raise RuntimeError("broken")

    @app.task(queue="mqf", retry=Retry(max_attempts=2, backoff=600, max_backoff=600))
    async def flaky() -> None:
        raise RuntimeError("flaky")

    return app, {"nap": nap, "broken": broken, "flaky": flaky}


app, _ = make_app()
