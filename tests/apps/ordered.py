"""A partitioned, ordered handler for the tests' worker processes (``tests/test_cluster.py``).

``python -m streamflow run tests.apps.ordered:app`` reads stream ``ord`` (``$ORD_PARTITIONS``
partitions, default 6) in group ``ord`` with ``ordered=True`` and concurrency 100. Each
payload ``{"k": key, "n": i, "sleep": s}`` sleeps ``s`` seconds, then appends ``n`` to the
list ``seen:<k>`` on the ledger server ``$ORD_LEDGER`` (a separate single server, so the
record survives whatever happens to the server under test).
"""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

from streamflow import App, Message

app = App()
_ledger: list[aioredis.Redis] = []


@app.on_startup
async def _open_ledger() -> None:
    _ledger.append(aioredis.Redis.from_url(os.environ["ORD_LEDGER"]))


@app.on_shutdown
async def _close_ledger() -> None:
    for client in _ledger:
        await client.aclose()


@app.handler("ord", group="ord", partitions=int(os.environ.get("ORD_PARTITIONS", "6")),
             ordered=True, concurrency=100)
async def work(msg: Message) -> None:
    payload = msg.payload
    await anyio.sleep(float(payload.get("sleep", 0)))
    await _ledger[0].rpush(f"seen:{payload['k']}", payload["n"])
