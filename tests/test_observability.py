"""What a worker tells an operator about handlers: blocked event loops, per-message debug lines."""

from __future__ import annotations

import time

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from streamflow import App, Message
from streamflow.context import current_message
from streamflow.runtime.loopwatch import LoopWatch
from streamflow.testing import running_worker, wait_until

pytestmark = pytest.mark.anyio



async def test_blocking_handler_is_named_in_a_warning(redis_url: str) -> None:
    """A handler that calls time.sleep(1.6) is named (with file and line) in an
    event_loop_blocked warning while it blocks, and event_loop_unblocked follows."""
    app = App(redis_url)
    done: list[str] = []

    @app.handler("jobs", group="g")
    async def sleepy(msg: Message) -> None:
        time.sleep(1.6)  # the blocking call under test
        done.append(msg.id)

    with capture_logs() as logs:
        # A visibility timeout longer than the block: a blocked loop cannot renew leases, so
        # with the test default (1 s) the entry would be reclaimed and run (and block) again.
        async with running_worker(app, redis_url, visibility_timeout=30.0) as worker:
            await app.publish("jobs", {"n": 1})
            await wait_until(lambda: worker.stats().handled == 1, what="the blocking handler")
            await wait_until(lambda: any(e["event"] == "event_loop_unblocked" for e in logs),
                             what="the unblocked line")
    blocked = [e for e in logs if e["event"] == "event_loop_blocked"]
    assert len(blocked) == 1, blocked
    assert blocked[0]["handler"].endswith("sleepy")
    assert "test_observability.py" in blocked[0]["at"]
    assert blocked[0]["blocked_s"] > 1.0


async def test_awaiting_handlers_raise_no_blocked_warning(redis_url: str) -> None:
    """Handlers that await (even for 1.5 s) never trigger the blocked-loop warning."""
    app = App(redis_url)

    @app.handler("jobs", group="g", concurrency=5)
    async def patient(msg: Message) -> None:
        await anyio.sleep(1.5)

    with capture_logs() as logs:
        async with running_worker(app, redis_url) as worker:
            await app.publish_many("jobs", range(5))
            await wait_until(lambda: worker.stats().handled == 5, what="5 handled")
    assert not [e for e in logs if e["event"].startswith("event_loop_")]


def test_blocking_handler_lookup_walks_out_of_library_frames() -> None:
    """The innermost registered handler frame is found below library frames on the stack."""
    app = App()

    @app.handler("s", group="g")
    async def outer(msg: Message) -> None:
        pass

    watch = LoopWatch(app.handlers, structlog.get_logger())
    code = next(iter(watch.handlers))
    assert code is outer.__code__
    assert watch.handlers[code].endswith("outer")


async def test_debug_logging_logs_each_handled_message(redis_url: str) -> None:
    """With structlog configured at debug, every handled message is logged with its duration;
    a handler's context names the message it runs."""
    app = App(redis_url)
    seen: list[str | None] = []

    @app.handler("jobs", group="g")
    async def work(msg: Message) -> None:
        current = current_message.get()
        seen.append(current.id if current is not None else None)

    with capture_logs() as logs:
        async with running_worker(app, redis_url) as worker:
            ids = await app.publish_many("jobs", range(3))
            await wait_until(lambda: worker.stats().handled == 3, what="3 handled")
    handled = [e for e in logs if e["event"] == "message_handled"]
    assert sorted(e["message_id"] for e in handled) == sorted(ids)
    assert all(e["duration_ms"] >= 0 and e["stream"] == "jobs" for e in handled)
    assert sorted(s for s in seen if s) == sorted(ids)
    assert current_message.get() is None  # nothing leaks into the test's own context


async def test_no_per_message_debug_line_when_structlog_is_not_configured(redis_url: str) -> None:
    """An application that never configured structlog gets no per-message debug line (and
    pays nothing for one)."""
    structlog.reset_defaults()
    assert not structlog.is_configured()
    app = App(redis_url)

    @app.handler("jobs", group="g")
    async def work(msg: Message) -> None:
        pass

    async with running_worker(app, redis_url) as worker:
        await app.publish("jobs", 1)
        await wait_until(lambda: worker.stats().handled == 1, what="1 handled")
        consumer = worker.consumers[0]
        assert consumer.pool.func is work  # not wrapped


async def test_stats_count_acks(redis_url: str) -> None:
    """Worker.stats() reports the acks Redis confirmed (an empty ack buffer is no reason to
    report 0)."""
    app = App(redis_url)

    @app.handler("jobs", group="g")
    async def work(msg: Message) -> None:
        pass

    async with running_worker(app, redis_url) as worker:
        await app.publish_many("jobs", range(20))
        await wait_until(lambda: worker.stats().acked == 20, what="20 acks confirmed")
        assert worker.stats().unacked == 0
    assert worker.stats().acked == 20
