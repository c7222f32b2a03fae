"""The ledger: what every handler execution did, kept on a private server no fault touches.

Worker side (:class:`LedgerWriter`, used by :mod:`.apps`): each execution appends a
``start`` record before the handler body and an ``end`` record just before the handler
returns (so an ``end`` record means the handler completed; the ack comes after). Records
go to the stream ``ledger`` with group commit: concurrent handlers share one pipelined
round trip, and each awaits its own record's durability before going on.

Record fields: ``id`` (entry id), ``phase`` (start/end), ``exec`` (token unique per
execution: ``<pid>:<n>``), ``pid``, ``worker`` (label given by the test), ``attempt``
(delivery count the worker saw), ``t`` (unix time, float).

In ``count`` mode (``CHAOS_LEDGER_MODE=count``, for big backlogs) only completions are
kept, as ``HINCRBY ledger:count <id> 1``.

Test side: :func:`read_executions` / :func:`read_counts` with a sync redis client.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["LEDGER_COUNT_KEY", "LEDGER_KEY", "Execution", "LedgerWriter", "read_counts",
           "read_executions"]

LEDGER_KEY = "ledger"
LEDGER_COUNT_KEY = "ledger:count"


class LedgerWriter:
    """Group-committing ledger client for one worker process (created lazily in its loop)."""

    def __init__(self, url: str, mode: str = "full") -> None:
        self.url = url
        self.mode = mode  # "full" (start + end records) or "count" (completions only)
        self._client: Any = None
        self._buf: list[tuple[tuple[str, dict[str, Any]], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, phase: str, **fields: Any) -> None:
        """Append one record and wait until the ledger server has it."""
        if self.mode == "count":
            if phase != "end":
                return
            op = ("count", {"id": fields["id"]})
        else:
            op = ("xadd", {"phase": phase, **fields})
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._buf.append((op, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.url, socket_timeout=30)
        while self._buf:
            batch, self._buf = self._buf, []
            pipe = self._client.pipeline(transaction=False)
            for (kind, fields), _ in batch:
                if kind == "count":
                    pipe.hincrby(LEDGER_COUNT_KEY, fields["id"], 1)
                else:
                    pipe.xadd(LEDGER_KEY, {k: str(v) for k, v in fields.items()})
            try:
                await pipe.execute()
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)


@dataclass
class Execution:
    """One handler execution as the ledger saw it."""

    id: str
    exec: str
    pid: int
    worker: str
    attempt: int
    start: float | None = None
    end: float | None = None  # None: did not complete (killed, cancelled, raised)


def read_executions(client: Any) -> list[Execution]:
    """Every execution recorded in the ledger (sync redis client, bytes replies)."""
    by_exec: dict[str, Execution] = {}
    start = "-"
    while True:
        rows = client.xrange(LEDGER_KEY, start, "+", count=10_000)
        if not rows:
            break
        for _rid, raw in rows:
            f = {k.decode(): v.decode() for k, v in raw.items()}
            ex = by_exec.get(f["exec"])
            if ex is None:
                ex = by_exec[f["exec"]] = Execution(
                    id=f["id"], exec=f["exec"], pid=int(f["pid"]), worker=f.get("worker", ""),
                    attempt=int(f["attempt"]),
                )
            if f["phase"] == "start":
                ex.start = float(f["t"])
            else:
                ex.end = float(f["t"])
        if len(rows) < 10_000:
            break
        start = "(" + rows[-1][0].decode()
    return list(by_exec.values())


def read_counts(client: Any) -> dict[str, int]:
    """Completions per id in ``count`` mode."""
    out: dict[str, int] = {}
    for key, value in client.hscan_iter(LEDGER_COUNT_KEY, count=10_000):
        out[key.decode()] = int(value)
    return out


def writer_from_env() -> LedgerWriter:
    """The ledger writer configured by ``CHAOS_LEDGER_URL`` / ``CHAOS_LEDGER_MODE``."""
    return LedgerWriter(os.environ.get("CHAOS_LEDGER_URL", "redis://127.0.0.1:1/0"),
                        os.environ.get("CHAOS_LEDGER_MODE", "full"))
