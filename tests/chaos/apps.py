"""Worker apps the chaos tests run as subprocesses (``python -m streamflow run tests.chaos.apps:app``).

One handler, ``work``, on stream ``$CHAOS_STREAM`` (default ``chaos``), group
``$CHAOS_GROUP`` (default ``chaos``), created at ``0``. Its behaviour comes from the
payload ``{"n": i, ...}`` so one app serves every fault:

* ``"sleep": s``  - work for ``s`` seconds (default ``$CHAOS_SLEEP``, 0; capped by
  ``$CHAOS_SLEEP_CAP`` when set, for a second worker that finishes a slow backlog);
* ``"fail": true``  - raise every time (retried, then dead-lettered);
* ``"exit": true``  - ``os._exit(1)``: the worker process dies mid-batch on this entry;
* ``"hang": true``  - never return (cancelled by the handler timeout);
* a payload that is not such an object (a raw field map, pickle bytes...) is rejected
  (dead-lettered at once); invalid JSON and oversized payloads raise ``PayloadError``
  from ``msg.payload`` (dead-lettered by the worker).

With ``$CHAOS_START_GATE`` set to a path, a startup hook holds the worker's start-up
after its PING and permission check and before it creates its groups, until that file
exists (logging ``chaos_start_gate_waiting`` first): a window for faulting the server
during group creation.

Every execution is written to the ledger (see :mod:`.ledger`) before the body (``start``)
and after it (``end``). Settings: ``CHAOS_CONCURRENCY`` (16), ``CHAOS_TIMEOUT`` (30 s),
``CHAOS_MAX_ATTEMPTS`` (3), ``CHAOS_BACKOFF`` (0.2 s), ``CHAOS_WORKER`` (a label).
"""

from __future__ import annotations

import itertools
import os
import time

import anyio
import redis.asyncio as aioredis
import structlog

from streamflow import App, Message, Reject, Retry

from .ledger import writer_from_env

STREAM = os.environ.get("CHAOS_STREAM", "chaos")
GROUP = os.environ.get("CHAOS_GROUP", "chaos")
SLEEP = float(os.environ.get("CHAOS_SLEEP", "0"))
SLEEP_CAP = float(os.environ.get("CHAOS_SLEEP_CAP", "0") or 0)
WORKER = os.environ.get("CHAOS_WORKER", "")
START_GATE = os.environ.get("CHAOS_START_GATE", "")
PID = os.getpid()

LEDGER = writer_from_env()
_seq = itertools.count()

app = App(name="chaos")


@app.on_startup
async def start_gate() -> None:
    """With ``$CHAOS_START_GATE``: wait until that file exists (see the module doc)."""
    if not START_GATE:
        return
    structlog.get_logger("chaos").info("chaos_start_gate_waiting", gate=START_GATE)
    while not os.path.exists(START_GATE):
        await anyio.sleep(0.02)


@app.handler(
    STREAM,
    group=GROUP,
    concurrency=int(os.environ.get("CHAOS_CONCURRENCY", "16")),
    timeout=float(os.environ.get("CHAOS_TIMEOUT", "30")),
    retry=Retry(
        max_attempts=int(os.environ.get("CHAOS_MAX_ATTEMPTS", "3")),
        backoff=float(os.environ.get("CHAOS_BACKOFF", "0.2")),
        jitter=0,
    ),
    start_id="0",
)
async def work(msg: Message) -> None:
    """Record the start, do what the payload says, record the end."""
    token = f"{PID}:{next(_seq)}"
    common = {"id": msg.id, "exec": token, "pid": PID, "worker": WORKER, "attempt": msg.attempt}
    await LEDGER.write("start", **common, t=time.time())
    payload = msg.payload  # PayloadError (invalid JSON, too large) -> dead-lettered
    if not isinstance(payload, dict) or "n" not in payload:
        raise Reject(f"not a chaos payload: {type(payload).__name__}")
    if payload.get("exit"):
        os._exit(1)
    if payload.get("fail"):
        raise RuntimeError(f"poison message n={payload['n']}")
    if payload.get("hang"):
        await anyio.sleep(3600)
    sleep = float(payload.get("sleep", SLEEP))
    if SLEEP_CAP:
        sleep = min(sleep, SLEEP_CAP)
    if sleep:
        await anyio.sleep(sleep)
    await LEDGER.write("end", **common, t=time.time())


# -- jobs ------------------------------------------------------------------------------
#: A job queue app (``tests.chaos.apps:jobs_app``): task ``job_work(n, sleep)`` counts each
#: start in the ledger hash ``chaos:job_starts`` and returns ``{"n": n, "pid": pid}``.
jobs_app = App(name="chaos-jobs")
_job_ledger: aioredis.Redis | None = None
jobs_app.queue("chaos-jobs", concurrency=int(os.environ.get("CHAOS_CONCURRENCY", "16")))


@jobs_app.task(queue="chaos-jobs", retry=Retry(max_attempts=5, backoff=0.1, jitter=0))
async def job_work(n: int, sleep: float = 0.0) -> dict[str, int]:
    """Count the start in the ledger, sleep, return who ran it."""
    global _job_ledger
    if _job_ledger is None:
        _job_ledger = aioredis.Redis.from_url(LEDGER.url, socket_timeout=30)
    await _job_ledger.hincrby("chaos:job_starts", str(n), 1)
    if sleep:
        await anyio.sleep(sleep)
    return {"n": n, "pid": PID}
