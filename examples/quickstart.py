"""streamflow in 30 seconds: one handler, a demo batch, and a private server.

Run it from the repository root (``pip install -e '.[embedded]'`` is all it needs)::

    python examples/quickstart.py

It starts an embedded Redis-compatible server, runs a worker in this process,
publishes 1000 JSON orders plus 3 plain field-map entries to the ``orders`` stream,
waits until every one of them was handled, stops the worker (and the server) and
prints one summary line on stdout; the logs on stderr show what happened.
To use your own server instead::

    STREAMFLOW_REDIS_URL=redis://localhost:6379/0 python examples/quickstart.py

The same app also runs as a long-lived worker (Ctrl-C stops it gracefully)::

    python -m streamflow run examples.quickstart:app --embedded
"""

from __future__ import annotations

import os
import sys
import time

import anyio
import structlog

from streamflow import App, Message, Worker

app = App(redis_url=os.environ.get("STREAMFLOW_REDIS_URL", "embedded://"))
log = structlog.get_logger("quickstart")


@app.handler("orders", group="order-handlers", concurrency=100)
async def handle_order(msg: Message) -> None:
    """Handle one order; returning acknowledges it, raising retries it later."""
    order = msg.payload  # the JSON given to app.publish(), or the entry's fields for a raw XADD
    await anyio.sleep(0.001)  # stand-in for real work: an API call, a database write...
    log.debug("order_handled", order_id=order["order_id"], amount=order["amount"], id=msg.id)


# --- the demo: everything below runs only with `python examples/quickstart.py` -------------

DEMO_ORDERS = 1000


async def publish_and_wait(worker: Worker) -> str:
    """Publish the demo batch, wait until the worker handled all of it; return the summary."""
    started = time.perf_counter()
    orders = [{"order_id": i, "amount": 5 + i % 50} for i in range(DEMO_ORDERS)]
    await app.publish_many("orders", orders)  # JSON payloads, pipelined
    for i in range(3):  # plain field maps, as any other producer would XADD them
        await app.publish_fields("orders", {"order_id": f"raw-{i}", "amount": "9.99"})
    expected = DEMO_ORDERS + 3
    log.info("demo_published", stream="orders", messages=expected)

    with anyio.move_on_after(60):  # poll the worker's counters (it has no event for this)
        while worker.handled < expected:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    elapsed = time.perf_counter() - started
    handled = worker.handled
    if handled < expected:
        log.error("demo_incomplete", handled=handled, expected=expected)
        return ""
    return f"quickstart: handled {handled} messages in {elapsed:.2f}s ({handled / elapsed:,.0f} msg/s)"


async def demo() -> int:
    """Run a worker in-process, publish the demo batch, wait for it, stop; return the exit code."""
    from redis.exceptions import RedisError

    from streamflow.logging import configure_logging

    configure_logging("info", "console")
    worker = Worker(app, handle_signals=True)  # Ctrl-C / SIGTERM: graceful stop
    summary = ""
    try:
        async with anyio.create_task_group() as tg:

            async def serve() -> None:
                await worker.serve()
                tg.cancel_scope.cancel()  # the worker stopped (e.g. Ctrl-C): end the demo too

            tg.start_soon(serve)
            await worker.ready.wait()  # the consumer group exists: nothing published is missed
            try:
                summary = await publish_and_wait(worker)
            except RedisError:
                if not worker.exit_reason:  # not stopped by a signal: a real error
                    raise
            if not worker.exit_reason:
                worker.stop("demo finished")  # drain, flush acks, stop the embedded server
    finally:
        await app.aclose()
    if worker.exit_reason.startswith("SIG"):
        log.warning("demo_interrupted", reason=worker.exit_reason)
        return 130
    if not summary:
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(demo))
