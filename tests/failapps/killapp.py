"""Worker app killed with SIGKILL mid-batch by ``test_reclaim.py``.

Run as ``python -m streamflow run tests.failapps.killapp:app --redis-url URL ...``.
Each handler call appends the entry id to the Redis list ``ledger:start``, sleeps
``FAILAPP_DELAY`` seconds (default 0.4) and adds the id to the set ``ledger:done``.
"""

from __future__ import annotations

import os

import anyio

from streamflow import App, Message

STREAM = os.environ.get("FAILAPP_STREAM", "jobs")
GROUP = "kill-test"
DELAY = float(os.environ.get("FAILAPP_DELAY", "0.4"))

app = App(name="killapp")


@app.handler(STREAM, group=GROUP, concurrency=8, start_id="0")
async def work(msg: Message) -> None:
    """Record the start, work slowly, record the end."""
    client = await app.connection.client()
    await client.rpush("ledger:start", msg.id)
    await anyio.sleep(DELAY)
    await client.sadd("ledger:done", msg.id)
