"""Producer of the classic Redis Streams tutorial: plain redis-py, no streamflow needed.

Each task is one stream entry, exactly what this redis-cli command would add::

    XADD my_task_stream * task_type calculate_square number 7

Run it from the repository root (start the worker before or after, either works)::

    python examples/calculate_square/producer.py --redis-url redis://localhost:6379/0 --count 100

and the worker that computes the squares (see ``app.py``)::

    python -m streamflow run examples.calculate_square.app:app --redis-url redis://localhost:6379/0
"""

from __future__ import annotations

import argparse
import os

import redis

STREAM = "my_task_stream"


def main(argv: list[str] | None = None) -> int:
    """Add ``--count`` calculate_square tasks (numbers ``--start`` .. ``--start + count - 1``)."""
    parser = argparse.ArgumentParser(description=f"Add calculate_square tasks to {STREAM}.")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("STREAMFLOW_REDIS_URL", "redis://localhost:6379/0"),
        help="server URL (default: $STREAMFLOW_REDIS_URL or redis://localhost:6379/0)",
    )
    parser.add_argument("--count", type=int, default=10, help="tasks to add (default 10)")
    parser.add_argument("--start", type=int, default=1, help="first number (default 1)")
    args = parser.parse_args(argv)

    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    try:
        with client.pipeline(transaction=False) as pipe:  # one round trip for all XADDs
            for number in range(args.start, args.start + args.count):
                pipe.xadd(STREAM, {"task_type": "calculate_square", "number": number})
            ids = pipe.execute()
    finally:
        client.close()
    if ids:
        print(f"added {len(ids)} tasks to {STREAM} (ids {ids[0]} .. {ids[-1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
