"""Image-resize worker: up to 50 resizes at once, retried on failure, done-marks in a hash.

Tasks are plain entries on ``image_resize_tasks`` (``image_path /p/N.jpg task_id <uuid>``,
see ``producer.py``). The resize is simulated (a 10 ms sleep, no Pillow); each finished
task is recorded in the hash ``image_resize_done`` (field task_id, value the thumbnail
path) through a simulated, flaky thumbnail store. Run from the repository root::

    python -m streamflow run examples.image_resize.app:app --redis-url redis://localhost:6379/0
    python examples/image_resize/producer.py --redis-url redis://localhost:6379/0 --count 500
    redis-cli -u redis://localhost:6379/0 HLEN image_resize_done
    python -m streamflow dlq list image_resize_tasks --redis-url redis://localhost:6379/0

Failures, so that retries and the dead-letter stream show (deterministic, by image number):

* **transient**: the store times out on the first write of every 10th image
  (``/p/10.jpg``, ``/p/20.jpg``, ...). The handler raises, the worker logs
  ``handler_failed`` and retries the task about a second later (attempt 2), which works.
  A handler that keeps raising is retried up to 4 times (after about 1, 2, 4 and 8 s),
  then the task goes to ``image_resize_tasks:dlq``.
* **permanent**: every 97th image (``/p/97.jpg``, ``/p/194.jpg``, ...) is corrupt. Retrying
  cannot help, so the handler raises :class:`~streamflow.Reject` and the task goes to
  ``image_resize_tasks:dlq`` at once (``message_rejected``), where ``streamflow dlq list``
  shows it and ``streamflow dlq replay`` can send it back once the image is fixed.

A real resize is CPU work: run it in a thread (``await anyio.to_thread.run_sync(resize,
path)``) so the event loop stays free.
"""

from __future__ import annotations

import re

import anyio
import structlog

from streamflow import App, Message, Reject, Retry

TASKS = "image_resize_tasks"
DONE = "image_resize_done"
FLAKY_EVERY = 10  # the store times out on the first write of every 10th image
CORRUPT_EVERY = 97  # every 97th image cannot be decoded

app = App(name="image_resize")
log = structlog.get_logger("image_resize")


class StorageTimeout(Exception):
    """The thumbnail store did not answer in time (transient: the task is retried)."""


def image_number(image_path: str) -> int:
    """``/p/42.jpg`` -> 42 (0 for a path without a number)."""
    match = re.search(r"(\d+)\.jpg$", image_path)
    return int(match[1]) if match else 0


class FlakyStore:
    """The thumbnail store (here the ``image_resize_done`` hash), simulated to time out on the
    first write of every ``flaky_every``-th image, as a real network store sometimes does."""

    def __init__(self, flaky_every: int) -> None:
        self.flaky_every = flaky_every

    async def write(self, task_id: str, thumbnail: str, *, number: int, attempt: int) -> None:
        """Record the thumbnail of ``task_id``; raises StorageTimeout on the simulated failures."""
        if attempt == 1 and number and number % self.flaky_every == 0:
            await anyio.sleep(0.005)
            raise StorageTimeout(f"thumbnail store timed out writing {thumbnail}")
        redis = await app.connection.client()
        await redis.hset(DONE, task_id, thumbnail)  # idempotent: safe if redelivered


store = FlakyStore(FLAKY_EVERY)


@app.handler(
    TASKS,
    group="resizers",
    concurrency=50,  # resizes in flight at once in this process
    timeout=30,  # a resize taking longer counts as a failed attempt
    retry=Retry(max_attempts=5, backoff=1.0, max_backoff=30.0),
    start_id="0",  # a new group also takes tasks added before the worker first started
)
async def resize_image(msg: Message) -> None:
    """Resize one image (simulated) and store its thumbnail path under its task_id."""
    task_id = msg.fields["task_id"]
    image_path = msg.fields["image_path"]
    number = image_number(image_path)
    if number and number % CORRUPT_EVERY == 0:
        raise Reject(f"{image_path} is not a valid JPEG")  # dead-lettered now, no retry
    thumbnail = image_path.removesuffix(".jpg") + ".thumb.jpg"

    await anyio.sleep(0.01)  # the "resize"

    await store.write(task_id, thumbnail, number=number, attempt=msg.attempt)
    log.info("image_resized", task_id=task_id, image_path=image_path, thumbnail=thumbnail,
             attempt=msg.attempt)
