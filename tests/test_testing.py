"""The pytest plugin and helpers of :mod:`streamflow.testing`, as an app's own tests use them.

Module-level apps on purpose: README.md writes apps that way, and a test suite then shares
one ``app`` between tests that each run on a new event loop (and, with ``any_redis_url``,
on another server).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import redis

from streamflow import App, Message, PayloadError, PayloadTooLarge, Retry, ServerUnavailable
from streamflow.embedded import free_port
from streamflow.testing import (
    WaitTimeout,
    is_idle,
    make_message,
    passes,
    run_until,
    running_worker,
    wait_finished,
    wait_idle,
    wait_until,
    wait_until_blocking,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "testing"

pytestmark = pytest.mark.anyio

# -- a module-level app, used by test after test --------------------------------------------

shop = App()
billed: list[int] = []


@shop.handler("orders", group="billing", start_id="0")
async def bill(msg: Message) -> None:
    billed.append(msg.payload["order_id"])


async def _bill_two_orders(url: str, monkeypatch: pytest.MonkeyPatch, first: int) -> None:
    # Outside a worker the app publishes where its settings say: point them at this server.
    monkeypatch.setenv("STREAMFLOW_REDIS_URL", url)
    billed.clear()
    await shop.publish("orders", {"order_id": first})  # the app's own connection
    async with running_worker(shop, url) as worker:
        await shop.publish("orders", {"order_id": first + 1})  # the worker's connection
        await wait_finished(worker, 2)
    assert sorted(billed) == [first, first + 1]
    client = redis.Redis.from_url(url)
    try:
        assert client.xlen("orders") == 2  # both went to this test's server
    finally:
        client.close()


async def test_module_level_app_in_one_test(
    any_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module-level app publishes (before and while a worker runs) and is served."""
    await _bill_two_orders(any_redis_url, monkeypatch, 1)


async def test_module_level_app_in_the_next_test(
    any_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same app again, on a new event loop: no 'attached to a different loop', no 'Event
    loop is closed', and on the next server (Valkey after Redis) its publishes go there."""
    await _bill_two_orders(any_redis_url, monkeypatch, 10)


leftover = App()


@leftover.handler("leftover", group="g")
async def ignore(msg: Message) -> None:
    pass


async def test_connection_left_open_outside_the_helpers(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that publishes without the helpers leaves the app's connection open on its loop."""
    monkeypatch.setenv("STREAMFLOW_REDIS_URL", redis_url)
    await leftover.publish("leftover", 1)


async def test_next_test_with_the_helpers_still_works(redis_url: str) -> None:
    """The next test runs the same app: the connection of the closed loop is let go of."""
    stats = await run_until(leftover, redis_url, finished=1,
                            feed=lambda: leftover.publish("leftover", 2))
    assert stats.handled == 1


# -- run_until, wait_idle, passes -------------------------------------------------------------


async def test_run_until_idle_waits_for_retries(any_redis_url: str) -> None:
    """idle=True returns only once entries parked for a retry ran again; counts are final."""
    app = App()
    attempts: list[int] = []

    @app.handler("jobs", group="g", retry=Retry(max_attempts=3, backoff=0.2, jitter=0))
    async def flaky(msg: Message) -> None:
        attempts.append(msg.attempt)
        if msg.attempt == 1:
            raise RuntimeError("first attempt fails")

    stats = await run_until(app, any_redis_url, idle=True,
                            feed=lambda: app.publish_many("jobs", range(3)))
    assert sorted(attempts) == [1, 1, 1, 2, 2, 2]
    assert (stats.handled, stats.failed, stats.retried, stats.finished) == (3, 3, 3, 3)
    assert stats.handler("flaky").handled == 3
    assert (stats.acked, stats.unacked, stats.in_flight) == (3, 0, 0)


async def test_run_until_timeout_says_what_it_waited_for(redis_url: str) -> None:
    """A timeout names the condition and the counts at that moment."""
    app = App()

    @app.handler("jobs", group="g", retry=Retry(max_attempts=5, backoff=60))
    async def failing(msg: Message) -> None:
        raise RuntimeError("never")

    with pytest.raises(WaitTimeout) as info:
        await run_until(app, redis_url, finished=1, timeout=0.5,
                        feed=lambda: app.publish("jobs", 1))
    text = str(info.value)
    assert text.startswith("timed out after 0.5s waiting for 1 finished entries")
    assert "finished=0" in text and "failed=1" in text and "retried=1" in text

    with pytest.raises(WaitTimeout) as info:
        await run_until(app, redis_url, idle=True, timeout=0.5)
    assert "jobs/g: pending=1 lag=0" in str(info.value)  # parked for its retry

    with pytest.raises(ValueError, match="finished=N or idle=True"):
        await run_until(app, redis_url)


async def test_step_by_step_with_running_worker(redis_url: str) -> None:
    """running_worker plus wait_idle / is_idle / passes, reading only the public snapshot."""
    app = App()
    seen: list[int] = []

    @app.handler("steps", group="g")
    async def step(msg: Message) -> None:
        seen.append(msg.payload)

    async with running_worker(app, redis_url, concurrency=1) as worker:
        before = await passes(worker, read=1, reclaim=1, maintenance=0)
        assert await is_idle(worker)
        await app.publish_many("steps", range(5))
        stats = await wait_idle(worker)
        assert seen == list(range(5))
        assert stats.handled == 5 and stats.handlers[0].concurrency == 1
        after = await passes(worker, reclaim=2)
        assert after.reclaim_passes >= before.reclaim_passes + 2
        with pytest.raises(ValueError, match="read=, reclaim= or maintenance="):
            await passes(worker)


async def test_a_worker_that_cannot_start_raises_its_own_error() -> None:
    """The error of a worker that cannot start comes out as it is, not in an exception group."""
    app = App()

    @app.handler("nowhere", group="g")
    async def never(msg: Message) -> None:
        raise AssertionError("never called")

    with pytest.raises(ServerUnavailable, match="cannot reach Redis"):
        async with running_worker(app, f"redis://127.0.0.1:{free_port()}/0", connect_timeout=2):
            raise AssertionError("the body does not run")


# -- make_message -------------------------------------------------------------------------------


async def test_make_message_builds_what_a_handler_receives() -> None:
    """JSON payloads as App.publish lays them out, raw field maps, attempt, ids, limits."""
    msg = make_message({"order_id": 7}, stream="orders", attempt=3)
    assert msg.payload == {"order_id": 7}
    assert msg.fields == {"sf:json": '{"order_id":7}'}
    assert (msg.stream, msg.group, msg.attempt) == ("orders", "group", 3)
    assert re.fullmatch(r"\d+-0", msg.id)
    assert make_message(1).id != make_message(1).id

    raw = make_message(fields={"task_type": "calculate_square", "number": 4}, id="5-1")
    assert raw.payload == raw.fields == {"task_type": "calculate_square", "number": "4"}
    assert raw.raw_fields == [b"task_type", b"calculate_square", b"number", b"4"]
    assert raw.id == "5-1"

    with pytest.raises(PayloadError):
        make_message(fields={"sf:json": "{not json"}).payload  # noqa: B018
    with pytest.raises(PayloadTooLarge):
        make_message("x" * 100, max_payload_bytes=64).payload  # noqa: B018
    with pytest.raises(TypeError):
        make_message()
    with pytest.raises(TypeError):
        make_message(1, fields={"a": "b"})

    async def handler(m: Message) -> int:
        return int(m.payload["n"]) * 2

    assert await handler(make_message({"n": 21})) == 42


# -- waiting ------------------------------------------------------------------------------------


async def test_wait_until_returns_the_value_or_says_what_it_waited_for() -> None:
    """The first truthy value is returned (sync or async predicate); a timeout names `what`
    and the detail."""
    calls: list[int] = []

    def third() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else None

    assert await wait_until(third, interval=0) == 3

    async def ready() -> str:
        await anyio.sleep(0)
        return "yes"

    assert await wait_until(ready) == "yes"
    with pytest.raises(WaitTimeout, match=r"after 0.05s waiting for the moon\nstill no moon"):
        await wait_until(lambda: False, timeout=0.05, what="the moon",
                         detail=lambda: "still no moon")
    with pytest.raises(WaitTimeout, match="waiting for nothing") as info:
        wait_until_blocking(lambda: 0, timeout=0.05, interval=0.01, what="nothing")
    assert isinstance(info.value, AssertionError) and info.value.what == "nothing"


def test_helpers_import_without_pytest() -> None:
    """Without pytest installed the helpers still import; only the fixtures are missing."""
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import streamflow.testing as t\n"
        "assert not hasattr(t, 'redis_url') and 'redis_url' not in t.__all__\n"
        "assert t.make_message({'a': 1}).payload == {'a': 1}\n"
        "assert 'pytest' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr


# -- the README example -------------------------------------------------------------------------


def test_readme_testing_section_is_the_example_and_it_passes() -> None:
    """README.md "Testing your handlers" shows examples/testing/ verbatim, and those tests pass
    under the plugin (the entry point loads it: no conftest)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Testing your handlers\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks == [(EXAMPLE / "orders.py").read_text(), (EXAMPLE / "test_orders.py").read_text()]
    assert not (EXAMPLE / "conftest.py").exists()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFLOW_", "PYTEST_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\b3 passed\b", summary) or re.search(r"\b2 passed, 1 skipped\b", summary), summary
