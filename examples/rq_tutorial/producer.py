"""The producer of the RQ tutorial: a plain script (no event loop) that enqueues jobs.

Run it from the repository root while a worker runs (``tasks.py``)::

    python -m streamflow run examples.rq_tutorial.tasks:app --redis-url redis://localhost:6379/0
    python -m examples.rq_tutorial.producer --redis-url redis://localhost:6379/0

Each step prints one line: a job and its result (``enqueue_sync`` and
``job.result_sync``), deduplication by ``job_id``, a delayed job, a job that waits for
another (``depends_on``), a cancelled job, and the next tick of the cron task. Without a
worker every wait ends after ``--timeout`` seconds with a message saying so.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta

from streamflow.errors import JobCancelled, JobNotFound, ResultTimeout
from streamflow.jobs.cron import CronSchedule

from .tasks import CLEANUP_CRON, app, count_words, send_email, send_reminder

TEXT = "RQ counts the words of a web page; this example counts the words of this line"


def tour(timeout: float = 30.0) -> None:
    """Enqueue the tutorial's jobs, wait for their results, print one line per step."""
    # 1. Enqueue a call and wait for its result (RQ: q.enqueue(...), then job.result).
    job = count_words.enqueue_sync(TEXT)
    print(f"count_words: {job.result_sync(timeout=timeout)} words")

    # 2. job_id: while a job with this id exists, enqueueing it again returns that job.
    #    "Exists" includes finished jobs until their result_ttl (1 h) expires.
    first = count_words.enqueue_sync("one two three", job_id="words-of-the-day")
    again = count_words.enqueue_sync("a different text", job_id="words-of-the-day")
    assert again.id == first.id
    made = sum(j.created for j in (first, again))
    note = "" if made == 1 else " (it existed already: an earlier run enqueued it)"
    print(f"job_id: 2 enqueues of 'words-of-the-day' made {made} new job{'' if made == 1 else 's'}{note}, "
          f"result {again.result_sync(timeout=timeout)}")

    # 3. A delayed job (RQ: q.enqueue_in(timedelta(seconds=1), ...)); from code without
    #    an event loop, enqueue_call_sync takes the delay.
    enqueued = time.monotonic()
    later = send_reminder.enqueue_call_sync(("ann@example.com",), delay=timedelta(seconds=1))
    status = later.enqueue_status
    result = later.result_sync(timeout=timeout)
    print(f"enqueue_in: {status} for 1 s, then {result!r} "
          f"after {time.monotonic() - enqueued:.1f} s")

    # 4. depends_on: the email waits (deferred) until the count succeeded; send_email
    #    fails on its first attempt (a simulated SMTP hiccup) and is retried.
    counted = count_words.enqueue_call_sync((TEXT,), delay=0.5)
    email = send_email.enqueue_sync("boss@example.com", "the words are counted",
                                    depends_on=counted)
    status = email.enqueue_status
    result = email.result_sync(timeout=timeout)
    print(f"depends_on: email {status} until the count finished, then {result!r} "
          f"at attempt {email.info_sync().attempt}")

    # 5. Cancel a job before it runs: it never runs, and waiting for it says so.
    doomed = send_reminder.enqueue_call_sync(("bob@example.com",), delay=60)
    cancelled = doomed.cancel_sync()
    try:
        doomed.result_sync(timeout=timeout)
    except JobCancelled as exc:
        print(f"cancel: cancelled={cancelled}, status {doomed.status_sync()}, "
              f"result_sync raised JobCancelled ({exc.reason})")

    # 6. The cron task: the workers enqueue its next tick ahead of time, under an id that
    #    names the tick, so it can be looked up like any job.
    print(f"cron: {next_cleanup()}")


def next_cleanup(wait: float = 5.0) -> str:
    """The next tick of ``cleanup`` and its status (retrying while a worker schedules it)."""
    deadline = time.monotonic() + wait
    while True:
        tick = CronSchedule.parse(CLEANUP_CRON).next_after(datetime.now(UTC))
        job = app.job(f"cron:cleanup:{int(tick.timestamp() * 1000)}")
        try:
            return f"next cleanup at {tick:%H:%M} UTC is {job.status_sync()}"
        except JobNotFound:
            if time.monotonic() > deadline:
                return f"next cleanup at {tick:%H:%M} UTC is not scheduled: is a worker running?"
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run :func:`tour`; 1 if a job did not finish in time."""
    parser = argparse.ArgumentParser(description="Enqueue the RQ tutorial's jobs.")
    parser.add_argument("--redis-url", help="server URL (default: $STREAMFLOW_REDIS_URL, "
                                            "else redis://localhost:6379/0)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="longest wait for one result, seconds (default 30)")
    args = parser.parse_args(argv)
    if args.redis_url:
        app.redis_url = args.redis_url
    try:
        tour(args.timeout)
    except ResultTimeout as exc:
        print(f"{exc}: is a worker running? (python -m streamflow run "
              "examples.rq_tutorial.tasks:app)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
