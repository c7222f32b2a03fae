"""examples/rq_tutorial runs as its README says: the one-command demo, and worker + producer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import redis

from streamflow.keys import job_key, queue_stream, scheduled_key
from streamflow.testing import wait_until_blocking

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 20.0  # seconds any single wait may take before the test fails
STREAM = queue_stream("default")

# What a first run prints, one pattern per line (README.md of the example shows them).
FIRST_RUN = [
    r"count_words: 16 words",
    r"job_id: 2 enqueues of 'words-of-the-day' made 1 new job, result 3",
    r"enqueue_in: scheduled for 1 s, then 'reminded ann@example.com' after (?P<delay>\d+\.\d) s",
    r"depends_on: email deferred until the count finished, "
    r"then 'sent 21 characters to boss@example.com' at attempt 2",
    r"cancel: cancelled=True, status cancelled, result_sync raised JobCancelled "
    r"\(cancelled by request\)",
    # At a minute boundary the tick may already have been promoted, or even have run.
    r"cron: next cleanup at \d\d:\d\d UTC is (scheduled|queued|started|succeeded)",
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env.update(extra)
    return env


def _python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=90, check=False)


def _check_first_run(stdout: str) -> None:
    lines = stdout.strip().splitlines()
    assert len(lines) == len(FIRST_RUN), stdout
    for line, pattern in zip(lines, FIRST_RUN, strict=True):
        match = re.fullmatch(pattern, line)
        assert match, f"{line!r} does not match {pattern!r}"
        if "delay" in pattern:
            assert 1.0 <= float(match["delay"]) < 3.0, line  # due after 1 s, promoted at once


def _check_state(url: str, *, cancelled: int) -> None:
    """What the run left in Redis: finished jobs' states, only the cron tick still scheduled."""
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert r.hget(job_key(STREAM, "words-of-the-day"), "status") == "succeeded"
        assert 0 < r.ttl(job_key(STREAM, "words-of-the-day")) <= 3600  # result_ttl: an hour
        scheduled = r.zrange(scheduled_key(STREAM), 0, -1)
        assert scheduled and all(j.startswith("cron:cleanup:") for j in scheduled), scheduled
        statuses = [r.hget(k, "status") for k in r.scan_iter(job_key(STREAM, "*"))
                    if r.type(k) == "hash"]  # (not the :done lists of awaited jobs)
        assert statuses.count("cancelled") == cancelled, statuses  # reminders of step 5
        assert r.xpending(STREAM, "streamflow:jobs")["pending"] == 0
    finally:
        r.close()


def test_demo_in_one_process(redis_url: str) -> None:
    """`python -m examples.rq_tutorial.demo` (here against the test's server) prints every
    step's expected line and exits 0."""
    result = _python("-m", "examples.rq_tutorial.demo", env=_env(STREAMFLOW_REDIS_URL=redis_url))
    assert result.returncode == 0, result.stderr
    _check_first_run(result.stdout)
    assert "handler_failed" in result.stderr  # send_email's first attempt, logged, then retried
    assert "worker_stopped" in result.stderr
    _check_state(redis_url, cancelled=1)


def test_worker_and_producer_processes(redis_url: str, tmp_path: Path) -> None:
    """The README's two commands: without a worker the producer gives up (exit 1); with
    one it prints the steps; a second run finds words-of-the-day already there."""
    alone = _python("-m", "examples.rq_tutorial.producer", "--redis-url", redis_url,
                    "--timeout", "1", env=_env())
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert "did not finish within 1s" in alone.stderr and "is a worker running?" in alone.stderr

    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamflow", "run", "examples.rq_tutorial.tasks:app",
             "--redis-url", redis_url], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
            stderr=err)
    try:
        wait_until_blocking(lambda: "worker_started" in log.read_text() or worker.poll() is not None,
                            timeout=DEADLINE, what="the worker to start")
        assert worker.poll() is None, log.read_text()
        first = _python("-m", "examples.rq_tutorial.producer", "--redis-url", redis_url, env=_env())
        assert first.returncode == 0, first.stderr
        _check_first_run(first.stdout)
        second = _python("-m", "examples.rq_tutorial.producer", env=_env(STREAMFLOW_REDIS_URL=redis_url))
        assert second.returncode == 0, second.stderr
        lines = second.stdout.splitlines()
        assert lines[1] == ("job_id: 2 enqueues of 'words-of-the-day' made 0 new jobs "
                            "(it existed already: an earlier run enqueued it), result 3"), lines
        assert lines[3].endswith("at attempt 1"), lines  # this worker's mail server is warm now
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(DEADLINE) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert "email_sent" in log.read_text()
    _check_state(redis_url, cancelled=2)
