"""The tasks of the RQ tutorial, written for streamflow (see README.md in this folder).

RQ enqueues any importable function; streamflow enqueues the functions registered on an
``App`` with ``@app.task``, so that a worker knows every task it may be asked to run and
``enqueue`` checks the arguments against the function before anything is sent. Run the
worker from the repository root::

    python -m streamflow run examples.rq_tutorial.tasks:app --redis-url redis://localhost:6379/0

and the producer (``producer.py``) in another terminal, or both in one process with
``python -m examples.rq_tutorial.demo``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import structlog

from streamflow import App, Retry

# URL: --redis-url on the command line, else STREAMFLOW_REDIS_URL, else redis://localhost:6379/0
app = App(name="rq_tutorial")
log = structlog.get_logger("rq_tutorial")

#: When ``cleanup`` runs: at every minute (standard five-field cron, UTC).
CLEANUP_CRON = "* * * * *"


# A plain function: it runs on one of the worker's threads, so blocking code (requests,
# a database driver) is fine. RQ's tutorial downloads a page and counts its words; this
# one counts the words of a text, so that the example needs no network.
@app.task
def count_words(text: str) -> int:
    """How many words ``text`` has."""
    return len(text.split())


_smtp_calls: dict[str, int] = {}  # stands in for a flaky mail server: the first try fails


# An async function runs on the worker's event loop. It raises on its first attempt per
# address (a simulated SMTP hiccup): the job is retried after ~0.2 s and succeeds.
@app.task(retry=Retry(max_attempts=3, backoff=0.2))
async def send_email(address: str, message: str) -> str:
    """Send ``message`` to ``address`` (simulated: no mail leaves this machine)."""
    _smtp_calls[address] = _smtp_calls.get(address, 0) + 1
    if _smtp_calls[address] == 1:
        raise ConnectionError(f"SMTP server busy for {address} (simulated)")
    await anyio.sleep(0.01)  # the SMTP round trip
    log.info("email_sent", address=address, chars=len(message))
    return f"sent {len(message)} characters to {address}"


# The task the producer enqueues with a delay (RQ's enqueue_in): any task can be delayed.
@app.task
async def send_reminder(address: str) -> str:
    """Remind ``address`` of something (simulated)."""
    return f"reminded {address}"


# Enqueued by the workers at every tick of CLEANUP_CRON: exactly one run per tick, however
# many workers run. (RQ has `rq cron` for this, a separate process.)
@app.cron(CLEANUP_CRON)
def cleanup() -> str:
    """A periodic maintenance job (a stand-in: it only says when it ran)."""
    return f"cleaned up at {datetime.now(UTC):%H:%M:%S}"
