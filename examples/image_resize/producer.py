"""Producer of image-resize tasks: plain redis-py, one stream entry per image.

Each task is what this redis-cli command would add::

    XADD image_resize_tasks * image_path /p/7.jpg task_id 0b7c...

Run it from the repository root, with the worker from ``app.py``::

    python examples/image_resize/producer.py --redis-url redis://localhost:6379/0 --count 500
    python -m streamflow run examples.image_resize.app:app --redis-url redis://localhost:6379/0
"""

from __future__ import annotations

import argparse
import os
import uuid

import redis

STREAM = "image_resize_tasks"


def main(argv: list[str] | None = None) -> int:
    """Add ``--count`` resize tasks for ``/p/1.jpg`` .. ``/p/<count>.jpg``, each with a new uuid."""
    parser = argparse.ArgumentParser(description=f"Add image resize tasks to {STREAM}.")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("STREAMFLOW_REDIS_URL", "redis://localhost:6379/0"),
        help="server URL (default: $STREAMFLOW_REDIS_URL or redis://localhost:6379/0)",
    )
    parser.add_argument("--count", type=int, default=100, help="tasks to add (default 100)")
    args = parser.parse_args(argv)

    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    try:
        with client.pipeline(transaction=False) as pipe:  # one round trip for all XADDs
            for n in range(1, args.count + 1):
                pipe.xadd(STREAM, {"image_path": f"/p/{n}.jpg", "task_id": str(uuid.uuid4())})
            ids = pipe.execute()
    finally:
        client.close()
    print(f"added {len(ids)} resize tasks to {STREAM}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
