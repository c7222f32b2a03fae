"""Worker of the classic Redis Streams tutorial: square the ``number`` of each task.

Tasks are plain entries on ``my_task_stream`` (``task_type calculate_square number N``,
see ``producer.py``); each result is stored in the hash ``square_results``
(field N, value N*N). Run from the repository root::

    python -m streamflow run examples.calculate_square.app:app --redis-url redis://localhost:6379/0
    python examples/calculate_square/producer.py --redis-url redis://localhost:6379/0 --count 100
    redis-cli -u redis://localhost:6379/0 HGETALL square_results

Ctrl-C (or SIGTERM) stops the worker after the tasks in flight are finished. Add
``--log-format console`` for readable logs on a pipe (JSON is the default there).
A task that cannot be done (unknown ``task_type``, ``number`` not an integer) is
rejected: it goes straight to ``my_task_stream:dlq`` without retries.
"""

from __future__ import annotations

import structlog

from streamflow import App, Message, Reject

TASKS = "my_task_stream"
RESULTS = "square_results"

app = App(name="calculate_square")
log = structlog.get_logger("calculate_square")


# start_id="0": a new group also takes the tasks added before the worker first started.
@app.handler(TASKS, group="square_workers", start_id="0")
async def calculate_square(msg: Message) -> None:
    """Compute ``number ** 2`` and store it in the ``square_results`` hash."""
    task = msg.fields  # {"task_type": "calculate_square", "number": "7"}
    if task.get("task_type") != "calculate_square":
        raise Reject(f"unknown task_type {task.get('task_type')!r}")
    try:
        number = int(task["number"])
    except (KeyError, ValueError):
        raise Reject(f"number must be an integer, got {task.get('number')!r}") from None

    square = number * number
    redis = await app.connection.client()  # the worker's own connection
    await redis.hset(RESULTS, str(number), square)  # idempotent: safe if redelivered
    log.info("square_calculated", number=number, square=square, message_id=msg.id)
