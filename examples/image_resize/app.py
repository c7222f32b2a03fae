"""Image-resize worker: up to 50 resizes at once, retried on failure, done-marks in a hash.

Tasks are plain entries on ``image_resize_tasks`` (``image_path /p/N.jpg task_id <uuid>``,
see ``producer.py``). The resize is simulated (a 10 ms sleep, no Pillow); each finished
task is recorded in the hash ``image_resize_done`` (field task_id, value the thumbnail
path). Run from the repository root::

    python -m streamflow run examples.image_resize.app:app --redis-url redis://localhost:6379/0
    python examples/image_resize/producer.py --redis-url redis://localhost:6379/0 --count 500
    redis-cli -u redis://localhost:6379/0 HLEN image_resize_done

A handler that raises is retried up to 4 times (after about 1, 2, 4 and 8 s), then the task
goes to ``image_resize_tasks:dlq``. A real resize is CPU work: run it in a thread
(``await anyio.to_thread.run_sync(resize, path)``) so the event loop stays free.
"""

from __future__ import annotations

import anyio
import structlog

from streamflow import App, Message, Retry

TASKS = "image_resize_tasks"
DONE = "image_resize_done"

app = App(name="image_resize")
log = structlog.get_logger("image_resize")


@app.handler(
    TASKS,
    group="resizers",
    concurrency=50,  # resizes in flight at once in this process
    timeout=30,  # a resize taking longer counts as a failed attempt
    retry=Retry(max_attempts=5, backoff=1.0, max_backoff=30.0),
    start_id="0",  # a new group also takes tasks added before the worker first started
)
async def resize_image(msg: Message) -> None:
    """Resize one image (simulated) and mark its task_id done."""
    task_id = msg.fields["task_id"]
    image_path = msg.fields["image_path"]
    thumbnail = image_path.removesuffix(".jpg") + ".thumb.jpg"

    await anyio.sleep(0.01)  # the "resize"

    redis = await app.connection.client()
    await redis.hset(DONE, task_id, thumbnail)  # idempotent: safe if redelivered
    log.info("image_resized", task_id=task_id, image_path=image_path, thumbnail=thumbnail,
             attempt=msg.attempt)
