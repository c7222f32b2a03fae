"""Behavioural tests of ``python -m streamflow run``: errors, --help, and shutdown on signals.

Every test runs the real command line in a subprocess (cwd = the repository root, so the
small apps in ``tests/apps`` import as ``tests.apps.X``). Subprocesses only ever talk to
a private test server or to a free port with nothing listening.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from streamflow.config import uvloop_available
from streamflow.embedded import free_port
from streamflow.testing import wait_until_blocking

ROOT = Path(__file__).resolve().parents[1]

STREAM, GROUP, DONE_KEY = "slow", "slow", "slow:done"  # as in tests/apps/slow.py


def _env(**extra: str) -> dict[str, str]:
    """The test process environment without STREAMFLOW_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env.update(extra)
    return env


def _dead_url() -> str:
    """URL of a free local port with nothing listening on it."""
    return f"redis://127.0.0.1:{free_port()}/0"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streamflow ARGS`` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "streamflow", *args],
        cwd=ROOT, env=env or _env(), capture_output=True, text=True, timeout=60, check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The run failed with exit 2 and exactly one stderr line ``streamflow: error: ...``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamflow: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- 9. errors --------------------------------------------------------------------------------------


def test_help_lists_the_run_command_and_its_options() -> None:
    """`--help` and `run --help` exit 0 and describe the command and its options."""
    top = run_cli("--help")
    assert top.returncode == 0, top.stderr
    assert "run" in top.stdout
    sub = run_cli("run", "--help")
    assert sub.returncode == 0, sub.stderr
    for option in ("--redis-url", "--concurrency", "--grace-period", "STREAMFLOW_"):
        assert option in sub.stdout


def test_unknown_module_is_a_one_line_error() -> None:
    """A module that does not exist gives exit 2 and one line naming the module."""
    proc = run_cli("run", "tests.apps.does_not_exist:app", "--redis-url", _dead_url())
    assert_one_line_error(proc, "tests.apps.does_not_exist")


ERRMOD = """\
from streamflow import App

app = App()


def compute():
    return 1 / 0


VALUE = compute()
"""

NEEDSDEP = """\
import json

import streamflow_test_not_installed_dependency
"""


@pytest.mark.parametrize(
    ("module", "source", "lines", "error"),
    [
        ("errmod", ERRMOD, (10, 7), "importing 'errmod' failed: ZeroDivisionError: division by zero"),
        ("needsdep", NEEDSDEP, (3,), "importing 'needsdep' failed: ModuleNotFoundError: "
                                     "No module named 'streamflow_test_not_installed_dependency'"),
    ],
    ids=["errmod", "needsdep"],
)
def test_module_failing_at_import_shows_its_traceback_then_one_error_line(
    module: str, source: str, lines: tuple[int, ...], error: str, tmp_path: Path
) -> None:
    """An exception raised while importing the user's module prints the traceback of the user's code
    (file and lines, no importlib or streamflow frames) and ends with the one-line error, exit 2."""
    path = tmp_path / f"{module}.py"
    path.write_text(source)
    proc = subprocess.run(
        [sys.executable, "-m", "streamflow", "run", f"{module}:app", "--redis-url", _dead_url()],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert err.startswith("Traceback (most recent call last):"), err
    for line in lines:
        assert f'File "{path}", line {line}' in err, err
    assert "importlib" not in err and "streamflow/cli.py" not in err, err
    assert err.rstrip().splitlines()[-1] == f"streamflow: error: {error}", err


def test_module_failing_at_import_inside_a_package_names_it() -> None:
    """A package module that raises while importing exits 2, its last line naming the module and cause."""
    proc = run_cli("run", "tests.apps.broken:app", "--redis-url", _dead_url())
    assert proc.returncode == 2, proc.stderr
    assert 'tests/apps/broken.py", line 3' in proc.stderr, proc.stderr
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last == ("streamflow: error: importing 'tests.apps.broken' failed: "
                    "RuntimeError: boom at import time"), last


def test_missing_attribute_is_a_one_line_error() -> None:
    """A module without the named attribute gives exit 2 and one line naming the attribute."""
    proc = run_cli("run", "tests.apps.slow:nope", "--redis-url", _dead_url())
    assert_one_line_error(proc, "tests.apps.slow", "'nope'")


def test_attribute_that_is_not_an_app_is_a_one_line_error() -> None:
    """An attribute that is not a streamflow.App gives exit 2 and one line saying what it is."""
    proc = run_cli("run", "tests.apps.slow:not_an_app", "--redis-url", _dead_url())
    assert_one_line_error(proc, "tests.apps.slow:not_an_app", "int", "not a streamflow.App")


def test_app_without_handlers_is_a_one_line_error() -> None:
    """An App with no handlers gives exit 2 and one line saying so."""
    proc = run_cli("run", "tests.apps.empty:app", "--redis-url", _dead_url())
    assert_one_line_error(proc, "no handlers")


def test_unreachable_redis_is_a_one_line_error() -> None:
    """A server URL with nothing listening gives exit 2 and one line naming the URL."""
    url = _dead_url()
    proc = run_cli("run", "tests.apps.slow:app", "--redis-url", url)
    assert_one_line_error(proc, "cannot reach Redis", url)


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--concurrency", "0", ">= 1"),
        ("--concurrency", "many", "not a whole number"),
        ("--grace-period", "-1", ">= 0"),
        ("--log-level", "loud", "invalid choice"),
        ("--loop", "trio", "invalid choice"),
    ],
)
def test_bad_option_value_is_reported_by_the_parser(option: str, value: str, needle: str) -> None:
    """An invalid option value exits 2 with an argparse error line naming the option, no traceback."""
    proc = run_cli("run", "tests.apps.slow:app", "--redis-url", _dead_url(), option, value)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("streamflow run: error: argument "), last
    assert option in last and needle in last, last


def test_nan_grace_period_is_refused() -> None:
    """`--grace-period nan` is refused with exit 2 and an error naming the option."""
    proc = run_cli("run", "tests.apps.slow:app", "--redis-url", _dead_url(), "--grace-period", "nan")
    assert proc.returncode == 2
    assert "--grace-period" in proc.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("STREAMFLOW_GRACE_PERIOD", "abc"), ("STREAMFLOW_CONCURRENCY", "0"),
     ("STREAMFLOW_LOG_FORMAT", "xml"), ("STREAMFLOW_LOOP", "trio")],
)
def test_bad_env_setting_is_a_one_line_error(variable: str, value: str) -> None:
    """A bad STREAMFLOW_* value gives exit 2 and one line naming the setting."""
    proc = run_cli("run", "tests.apps.slow:app", "--redis-url", _dead_url(),
                   env=_env(**{variable: value}))
    name = variable.removeprefix("STREAMFLOW_").lower()
    line = assert_one_line_error(proc, "invalid setting")
    assert variable in line or name in line, line


# -- 7. shutdown on signals -------------------------------------------------------------------------


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client (str replies) on the flushed private server."""
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    yield client
    client.close()


def _wait(cond: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen[bytes],
          log: Path) -> None:
    """Wait until ``cond()``; fail at once, with the worker's log, if the worker exits."""
    def alive_and() -> object:
        if proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) while waiting for {what}:\n"
                        f"{log.read_text()}")
        return cond()

    wait_until_blocking(alive_and, timeout=timeout, interval=0.02, what=what, detail=log.read_text)


def _group_exists(r: redis.Redis) -> bool:
    try:
        return any(g["name"] == GROUP for g in r.xinfo_groups(STREAM))
    except redis.ResponseError:
        return False


def _start_worker(url: str, log: Path, sleep: float, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streamflow", "run", "tests.apps.slow:app",
             "--redis-url", url, "--log-format", "json", *args],
            cwd=ROOT, env=_env(SF_TEST_SLEEP=str(sleep)), stdout=out, stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def _acked_and_pending(r: redis.Redis) -> tuple[set[str], set[str]]:
    """(ids delivered to the group and acked, ids still pending)."""
    info = next(g for g in r.xinfo_groups(STREAM) if g["name"] == GROUP)
    last = info["last-delivered-id"]
    delivered = {i for i, _ in r.xrange(STREAM, "-", last)} if last != "0-0" else set()
    pending = {row["message_id"] for row in r.xpending_range(STREAM, GROUP, "-", "+", 10_000)}
    assert pending <= delivered
    return delivered - pending, pending


def test_sigterm_drains_in_flight_handlers_and_acks_exactly_what_finished(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """SIGTERM lets in-flight handlers finish within grace, exits 0, and acks exactly the finished ones."""
    grace = 10.0
    log = tmp_path / "worker.log"
    proc = _start_worker(redis_url, log, 0.4, "--grace-period", str(grace))
    try:
        _wait(lambda: _group_exists(r), 15, "group creation", proc, log)
        for i in range(60):
            r.xadd(STREAM, {"n": str(i)})
        _wait(lambda: r.scard(DONE_KEY) >= 10, 15, "first handlers done", proc, log)
        done_at_signal = r.scard(DONE_KEY)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=grace + 10)
        elapsed = time.monotonic() - t0
    finally:
        _stop(proc)
    output = log.read_text()
    assert rc == 0, output
    assert elapsed < grace, f"took {elapsed:.1f}s, grace is {grace}s"
    assert "Traceback" not in output
    done = set(r.smembers(DONE_KEY))
    acked, pending = _acked_and_pending(r)
    assert len(done) > done_at_signal, "handlers in flight at SIGTERM were not allowed to finish"
    assert acked == done, (
        f"acked but not done: {sorted(acked - done)}, done but not acked: {sorted(done - acked)}"
    )
    assert len(done) < 60, "the test needs entries left unstarted at shutdown"
    assert not pending, f"entries delivered but neither handled nor released: {sorted(pending)}"


@pytest.mark.parametrize("loop", ["auto", "asyncio", "uvloop"])
def test_loop_option_picks_the_event_loop(loop: str, redis_url: str, r: redis.Redis,
                                          tmp_path: Path) -> None:
    """`--loop` runs the worker on the named event loop (auto: uvloop when it is installed), which
    handles, acks and drains as usual."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    expected = "uvloop" if loop == "uvloop" or (loop == "auto" and uvloop_available()) else "asyncio"
    log = tmp_path / "worker.log"
    proc = _start_worker(redis_url, log, 0.01, "--loop", loop)
    try:
        _wait(lambda: _group_exists(r), 15, "group creation", proc, log)
        for i in range(20):
            r.xadd(STREAM, {"n": str(i)})
        _wait(lambda: r.scard(DONE_KEY) == 20, 15, "20 handled", proc, log)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
    finally:
        _stop(proc)
    output = log.read_text()
    assert rc == 0, output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    started = next(e for e in events if e["event"] == "worker_started")
    assert started["loop"].split(".")[0] == expected, started
    acked, pending = _acked_and_pending(r)
    assert len(acked) == 20 and not pending


def test_second_signal_cancels_running_handlers_at_once(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """A second signal cancels running handlers, exits promptly, and acks nothing unfinished."""
    log = tmp_path / "worker.log"
    proc = _start_worker(redis_url, log, 60.0, "--grace-period", "60")
    try:
        _wait(lambda: _group_exists(r), 15, "group creation", proc, log)
        for i in range(5):
            r.xadd(STREAM, {"n": str(i)})
        _wait(lambda: r.xpending(STREAM, GROUP)["pending"] == 5, 15, "5 in flight", proc, log)
        proc.send_signal(signal.SIGTERM)
        _wait(lambda: "worker_stopping" in log.read_text(), 10, "graceful stop", proc, log)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        _stop(proc)
    output = log.read_text()
    assert elapsed < 5, f"took {elapsed:.1f}s after the second signal"
    assert rc == 130, output
    assert "worker_force_stop" in output
    assert "Traceback" not in output
    assert r.scard(DONE_KEY) == 0
    acked, pending = _acked_and_pending(r)
    assert not acked
    assert len(pending) == 5


@pytest.mark.parametrize(
    ("first", "second", "status"),
    [(signal.SIGTERM, signal.SIGINT, 130), (signal.SIGINT, signal.SIGTERM, 143),
     (signal.SIGTERM, signal.SIGTERM, 143)],
    ids=["term-int", "int-term", "term-term"],
)
def test_forced_stop_exits_with_128_plus_the_forcing_signal(
    first: signal.Signals, second: signal.Signals, status: int,
    redis_url: str, r: redis.Redis, tmp_path: Path,
) -> None:
    """A second signal during the drain (slow handlers still running) makes the worker exit 128 + that
    signal's number (130 for SIGINT, 143 for SIGTERM), not 0, and logs the forced stop."""
    log = tmp_path / "worker.log"
    proc = _start_worker(redis_url, log, 60.0, "--grace-period", "60")
    try:
        _wait(lambda: _group_exists(r), 15, "group creation", proc, log)
        r.xadd(STREAM, {"n": "1"})
        _wait(lambda: r.xpending(STREAM, GROUP)["pending"] == 1, 15, "1 in flight", proc, log)
        proc.send_signal(first)
        _wait(lambda: "worker_stopping" in log.read_text(), 10, "graceful stop", proc, log)
        proc.send_signal(second)
        rc = proc.wait(timeout=20)
    finally:
        _stop(proc)
    output = log.read_text()
    assert rc == status, output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    forced = next(e for e in events if e["event"] == "worker_force_stop")
    assert forced["reason"] == second.name and forced["exit_status"] == status, forced
    assert "worker_stopped" in {e["event"] for e in events}


def test_version_names_streamflow_and_redis_py(capsys: pytest.CaptureFixture[str]) -> None:
    """``streamflow --version`` prints the installed distribution's version and redis-py's,
    and exits 0."""
    from importlib.metadata import version

    from streamflow.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    out = capsys.readouterr().out.strip()
    assert exited.value.code == 0
    assert out.startswith(f"streamflow-redis {version('streamflow-redis')} (redis-py ")
    assert version("redis") in out
