"""An app whose handler sleeps, then records the entry id in the Redis set ``slow:done``.

Tunables (read at import): ``SF_TEST_SLEEP`` (seconds each handler sleeps, default 0.5).
"""

from __future__ import annotations

import os

import anyio

from streamflow import App, Message

app = App()

SLEEP = float(os.environ.get("SF_TEST_SLEEP", "0.5"))
STREAM = "slow"
GROUP = "slow"
DONE_KEY = "slow:done"

not_an_app = 42  # for the "not an App" CLI error test


@app.handler(STREAM, group=GROUP, concurrency=10)
async def slow(msg: Message) -> None:
    """Sleep, then mark the entry done (the mark is the last thing the handler does)."""
    await anyio.sleep(SLEEP)
    client = await app.connection.client()
    await client.sadd(DONE_KEY, msg.id)
