"""``streamflow run --processes N``: the supervisor, its worker processes, slots, signals, restarts.

The integration tests run the real command line (``python -m streamflow run APP
--processes 2``) against the private test server, with an app written to ``tmp_path``
whose handler records every entry it finishes in Redis (``procs:done``) and the process
index that ran it (``procs:by``). Supervisor and workers log JSON lines into one file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streamflow import App
from streamflow.cli import build_parser, main
from streamflow.cli_types import MAX_PROCESSES, processes, usable_cpus
from streamflow.errors import ConfigError
from streamflow.keys import host_label, slot_consumer_name
from streamflow.processes import (
    COUNT_ENV,
    INDEX_ENV,
    NAME_ENV,
    READY_FD_ENV,
    SLOT_ENV,
    child_arguments,
    plan_children,
    prepare_child,
)
from streamflow.supervisor import Backoff
from streamflow.testing import wait_until_blocking

STREAM, GROUP = "procs", "procs"
HOST = host_label()

APP = textwrap.dedent('''
    """Test app: each entry's payload says how long to work and whether to exit first."""
    import os

    import anyio

    from streamflow import App, Message

    app = App()
    INDEX = os.environ.get("STREAMFLOW_PROCESS_INDEX", "-")


    @app.on_startup
    async def note_env() -> None:
        client = await app.connection.client()
        await client.hset("procs:env", INDEX, ":".join(
            os.environ.get(v, "-") for v in
            ("STREAMFLOW_PROCESSES", "STREAMFLOW_WORKER_SLOT", "STREAMFLOW_CONSUMER_NAME")))


    @app.handler("procs", group="procs", concurrency=4)
    async def work(msg: Message) -> None:
        client = await app.connection.client()
        job = msg.payload
        if job.get("exit") and await client.incr("procs:exits") == 1:
            os._exit(job["exit"])  # dies after start-up, once
        await anyio.sleep(job.get("sleep", 0.01))
        await client.sadd("procs:done", msg.id)
        await client.hincrby("procs:by", INDEX, 1)
''')


# -- the command line, without processes ------------------------------------------------------


@pytest.mark.parametrize("value, problem", [
    ("0", "must be >= 1"), ("-1", "must be >= 1"), ("abc", "neither a whole number nor 'auto'"),
    ("2.5", "neither a whole number"), (str(MAX_PROCESSES + 1), f"must be <= {MAX_PROCESSES}"),
])
def test_bad_processes_values_stop_at_start_naming_the_flag(
    value: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "tests.apps.slow:app", "--processes", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --processes" in err and problem in err, err


def test_processes_auto_is_the_number_of_usable_cores() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cpus() == expected
    assert processes("auto") == processes("AUTO") == min(expected or 1, MAX_PROCESSES)
    args = build_parser().parse_args(["run", "x:app", "--processes", "auto"])
    assert args.processes == usable_cpus()


def test_one_process_is_todays_run_without_a_supervisor(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--processes 1`` (and the default) runs the worker in this process."""
    import streamflow.supervisor
    import streamflow.worker

    ran: list[Any] = []

    def run_worker(app: App, settings: Any) -> int:
        ran.append(settings)
        return 0

    monkeypatch.setattr(streamflow.worker, "run_worker", run_worker)
    monkeypatch.setattr(streamflow.supervisor, "supervise", lambda *a: pytest.fail("supervised"))
    for extra in ([], ["--processes", "1"]):
        assert main(["run", "tests.apps.slow:app", "--redis-url", redis_url, *extra]) == 0
    assert len(ran) == 2 and all(s.worker_slot is None for s in ran)


def test_embedded_cannot_be_shared_by_processes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "tests.apps.slow:app", "--embedded", "--processes", "2"]) == 2
    assert "--processes" in capsys.readouterr().err
    # embedded:// from the app or the environment: the worker processes refuse it.
    with pytest.raises(ConfigError, match=r"redis_url.*embedded"):
        prepare_child(App(), App("embedded://").settings(), {COUNT_ENV: "2"})


def test_children_get_slots_index_and_count() -> None:
    plans = plan_children(3, env={})
    assert [p.consumer for p in plans] == [slot_consumer_name(HOST, i) for i in range(3)]
    assert [dict(p.env) for p in plans] == [
        {SLOT_ENV: str(i), INDEX_ENV: str(i), COUNT_ENV: "3"} for i in range(3)]
    based = plan_children(2, env={SLOT_ENV: "5"})
    assert [(p.env[SLOT_ENV], p.env[INDEX_ENV]) for p in based] == [("5", "0"), ("6", "1")]


def test_a_fixed_consumer_name_becomes_name_dash_index() -> None:
    """The flag wins over the variable; each child runs under ``<name>-<i>``, no slot."""
    for plans in (plan_children(2, "billing", {NAME_ENV: "other"}),
                  plan_children(2, None, {NAME_ENV: "billing"})):
        assert [p.consumer for p in plans] == ["billing-0", "billing-1"]
        assert [p.env.get(NAME_ENV) for p in plans] == ["billing-0", "billing-1"]
        assert all(SLOT_ENV not in p.env for p in plans)


@pytest.mark.parametrize("name, env, match", [
    (None, {SLOT_ENV: "abc"}, r"worker_slot \(STREAMFLOW_WORKER_SLOT=abc\).*whole number"),
    (None, {SLOT_ENV: "-1"}, r"worker_slot \(STREAMFLOW_WORKER_SLOT=-1\).*>= 0"),
    ("billing", {SLOT_ENV: "3"}, "consumer_name or worker_slot, not both"),
    ("x" * 199, {}, r"consumer_name \(--consumer-name\).*longer than 200"),
    (None, {NAME_ENV: "a b"}, r"consumer_name \(STREAMFLOW_CONSUMER_NAME=a b\)"),
])
def test_bad_names_and_slots_stop_the_supervisor(
    name: str | None, env: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        plan_children(2, name, env)


def _run_parser() -> tuple[argparse.ArgumentParser, Callable[[list[str]], argparse.Namespace]]:
    parser = build_parser()
    args = parser.parse_args(["run", "x:app"])
    run_parser: argparse.ArgumentParser = args.run_parser
    return run_parser, lambda argv: parser.parse_args(["run", *argv])


def test_children_get_every_other_option_of_run() -> None:
    """Every option of ``run`` (also one added later: the parser's actions are read)
    reaches the children, ``--processes`` and ``--consumer-name`` do not."""
    run_parser, parse = _run_parser()
    argv = ["my.mod:app", "--redis-url", "redis://h:1/2", "--embedded", "--concurrency", "7",
            "--grace-period", "2.5", "--visibility-timeout", "90", "--consumer-name", "c",
            "--loop", "asyncio", "--processes", "3", "--log-level", "debug",
            "--log-format", "json", "--metrics-port", "9100", "--metrics-host", "127.0.0.1"]
    given = parse(argv)
    options = {a.dest for a in run_parser._actions} - {"help"}
    assert all(getattr(given, d) not in (None, False, a.default)
               for a in run_parser._actions for d in [a.dest] if d in options), \
        "the test must set every option of run (one was added: set it in argv)"
    child = child_arguments(run_parser, given, drop=("processes", "consumer_name"))
    back = parse(child)
    assert vars(back) == vars(given) | {"processes": 1, "consumer_name": None}
    assert child_arguments(run_parser, parse(["my.mod:app"]), drop=("processes",)) == ["my.mod:app"]


def test_prepare_child_reports_start_up_on_the_pipe() -> None:
    import anyio

    app = App()
    read_fd, write_fd = os.pipe()
    env = {READY_FD_ENV: str(write_fd), COUNT_ENV: "2"}
    prepare_child(app, app.settings(), env)
    assert READY_FD_ENV not in env, "the variable is removed (the app's subprocesses)"
    assert not os.get_inheritable(write_fd)
    for hook in app.startup_hooks:
        anyio.run(hook)
    assert os.read(read_fd, 10) == b"1" and os.read(read_fd, 10) == b"", "written, then closed"
    os.close(read_fd)
    other = App()
    prepare_child(other, other.settings(), {})
    assert other.startup_hooks == [], "a process the supervisor did not start is left alone"


def test_backoff_doubles_to_a_cap_and_resets_after_a_stable_run() -> None:
    b = Backoff(first=0.5, most=30.0, stable_after=30.0)
    assert [b.next_delay(1.0) for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.next_delay(31.0) == 0.5
    assert b.next_delay(0.1) == 1.0


def test_each_log_line_is_one_write(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    """Worker processes share the supervisor's stderr: a line and its newline go out in one
    write, so lines of two processes never merge (print() writes them separately)."""
    import io

    import structlog

    from streamflow.logging import configure_logging

    writes: list[str] = []

    class Stream(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    stream = Stream()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("info", "json")
    structlog.get_logger("t").info("one_line", n=1)
    structlog.get_logger("t").warning("two_lines", n=2)
    assert len(writes) == 2 and all(w.endswith("}\n") for w in writes), writes


# -- the supervisor, for real -----------------------------------------------------------------


class Supervised:
    """One ``run --processes`` subprocess; supervisor and workers log into ``log``."""

    def __init__(self, tmp: Path, url: str, *args: str, env: dict[str, str] | None = None) -> None:
        (tmp / "procs_app.py").write_text(APP)
        self.log = tmp / "run.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
        base |= {"STREAMFLOW_BLOCK_MS": "100", "STREAMFLOW_RECLAIM_INTERVAL": "0.2",
                 "STREAMFLOW_GRACE_PERIOD": "10", "PYTHONPATH": str(tmp)} | (env or {})
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamflow", "run", "procs_app:app", "--redis-url", url,
                 "--log-format", "json", *args],
                cwd=tmp, env=base, stdout=out, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        out = []
        for line in self.text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == name and all(ev.get(k) == v for k, v in match.items()):
                out.append(ev)
        return out

    def wait(self, cond: Callable[[], object], what: str, timeout: float = 15) -> Any:
        def alive_and() -> object:
            if self.proc.poll() is not None:
                pytest.fail(f"supervisor exited ({self.proc.returncode}) while waiting for "
                            f"{what}:\n{self.text()}")
            return cond()

        return wait_until_blocking(alive_and, timeout=timeout, interval=0.05, what=what,
                                   detail=self.text)

    def pid_of(self, slot: int) -> int:
        started = self.events("worker_process_started", slot=slot) \
            + self.events("worker_process_restarted", slot=slot)
        return int(started[-1]["pid"])

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def exit_status(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for ev in self.events("worker_process_started") + self.events("worker_process_restarted"):
            _wait_gone(int(ev["pid"]), 10)


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture
def supervised(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., Supervised]]:
    started: list[Supervised] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Supervised:
        started.append(Supervised(tmp_path, redis_url, *args, env=env))
        return started[-1]

    yield start
    for s in started:
        s.close()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float) -> None:
    wait_until_blocking(lambda: not _alive(pid), timeout=timeout, what=f"pid {pid} gone")


def _consumers(r: redis.Redis) -> dict[str, int]:
    try:
        return {c["name"]: c["pending"] for c in r.xinfo_consumers(STREAM, GROUP)}
    except redis.ResponseError:
        return {}


def _publish(r: redis.Redis, n: int, **job: Any) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        pipe.xadd(STREAM, {"sf:json": json.dumps(job)})
    return list(pipe.execute())


def _pending_of(r: redis.Redis, consumer: str) -> set[str]:
    rows = r.xpending_range(STREAM, GROUP, "-", "+", 1000, consumername=consumer)
    return {str(row["message_id"]) for row in rows}


def test_two_processes_share_one_stream_and_drain_on_sigterm(
    supervised: Callable[..., Supervised], r: redis.Redis
) -> None:
    names = [slot_consumer_name(HOST, 0), slot_consumer_name(HOST, 1)]
    sup = supervised("--processes", "2", "--concurrency", "3")
    sup.wait(lambda: len(sup.events("worker_started")) == 2, "both workers started")
    assert sorted(e["consumer"] for e in sup.events("worker_started")) == names
    # every other flag reached the workers: --concurrency 3 (the app says 4)
    assert {h["concurrency"] for e in sup.events("worker_started") for h in e["handlers"]} == {3}
    assert r.hgetall("procs:env") == {"0": "2:0:-", "1": "2:1:-"}
    for slot in (0, 1):  # own process groups: a terminal's Ctrl-C reaches them only once
        assert os.getpgid(sup.pid_of(slot)) == sup.pid_of(slot) != os.getpgid(sup.proc.pid)

    ids = _publish(r, 120, sleep=0.02)
    sup.wait(lambda: r.scard("procs:done") == len(ids), "every entry handled")
    assert set(names) <= set(_consumers(r)), "both consumer names read from the group"
    by = r.hgetall("procs:by")
    assert set(by) == {"0", "1"} and all(int(v) > 0 for v in by.values()), by
    slow = _publish(r, 12, sleep=0.5)  # in flight when SIGTERM comes
    sup.wait(lambda: sum(_consumers(r).values()) >= 4, "slow entries in flight")
    sup.signal(signal.SIGTERM)
    assert sup.exit_status() == 0, sup.text()
    assert r.xpending(STREAM, GROUP)["pending"] == 0
    done = r.smembers("procs:done")
    last = r.xinfo_groups(STREAM)[0]["last-delivered-id"]
    delivered = {str(i) for i, _ in r.xrange(STREAM, "-", last) or []}
    assert set(ids) <= done and delivered <= done, "a delivered entry was not handled"
    assert done & set(slow), "the drain finished the entries in flight"
    exited = sup.events("worker_process_exited")
    assert sorted((e["slot"], e["exit_status"]) for e in exited) == [(0, 0), (1, 0)]
    assert sup.events("supervisor_stopped")[0]["exit_status"] == 0
    assert not sup.events("unknown_environment_variable"), "STREAMFLOW_PROCESS_* are known"
    assert "Traceback" not in sup.text()


def test_a_killed_worker_restarts_under_its_slot_and_takes_back_its_entries(
    supervised: Callable[..., Supervised], r: redis.Redis
) -> None:
    """kill -9 mid-batch: the death is logged, the slot restarts after the backoff and the
    restarted worker takes its pending entries back at once (visibility_timeout is 60 s).
    A worker that exits with status 2 *after* start-up is restarted too."""
    me = slot_consumer_name(HOST, 0)
    sup = supervised("--processes", "2", "--visibility-timeout", "60")
    sup.wait(lambda: len(sup.events("worker_started")) == 2, "both workers started")
    ids = _publish(r, 16, sleep=1.0)
    sup.wait(lambda: _pending_of(r, me), "slot 0 has entries in flight")
    victim, t0 = sup.pid_of(0), time.monotonic()
    taken = _pending_of(r, me)
    os.kill(victim, signal.SIGKILL)
    sup.wait(lambda: sup.events("worker_process_restarted", slot=0), "slot 0 restarted")
    died = sup.events("worker_process_died", slot=0)
    assert died and died[0]["pid"] == victim and died[0]["signal"] == "SIGKILL"
    assert died[0]["restart_in"] == 0.5 and died[0]["consumer"] == me
    assert sup.pid_of(0) != victim
    sup.wait(lambda: r.scard("procs:done") == len(ids), "every entry handled", timeout=20)
    assert time.monotonic() - t0 < 30, "taken back well before visibility_timeout"
    assert taken <= r.smembers("procs:done")
    assert [e["consumer"] for e in sup.events("worker_started")].count(me) == 2

    _publish(r, 1, exit=2)  # one worker exits 2 while handling it: not a start-up failure
    sup.wait(lambda: sup.events("worker_process_died", exit_status=2), "the exit-2 death")
    sup.wait(lambda: r.scard("procs:done") == len(ids) + 1, "the exit-2 entry handled")
    assert not sup.events("worker_process_failed_at_startup")
    sup.signal(signal.SIGTERM)
    assert sup.exit_status() == 0, sup.text()
    assert r.xpending(STREAM, GROUP)["pending"] == 0


def test_a_configuration_error_in_the_workers_stops_the_supervisor(
    supervised: Callable[..., Supervised]
) -> None:
    """Exit 2 before start-up was done: no restart loop; the supervisor exits 2."""
    sup = supervised("--processes", "2", env={"STREAMFLOW_BLOCK_MS": "abc"})
    assert sup.exit_status() == 2, sup.text()
    assert time.monotonic() - sup.started < 10
    assert len(sup.events("worker_process_started")) == 2
    assert not sup.events("worker_process_restarted") and not sup.events("worker_process_died")
    assert sup.events("worker_process_failed_at_startup")
    assert "invalid setting STREAMFLOW_BLOCK_MS: 'abc' is not a whole number" in sup.text()


def test_a_second_signal_forces_the_workers_and_exits_128_plus_its_number(
    supervised: Callable[..., Supervised], r: redis.Redis
) -> None:
    sup = supervised("--processes", "2")
    sup.wait(lambda: len(sup.events("worker_started")) == 2, "both workers started")
    _publish(r, 8, sleep=30)
    sup.wait(lambda: all(_consumers(r).get(slot_consumer_name(HOST, i)) for i in (0, 1)),
             "both workers busy")
    sup.signal(signal.SIGINT)
    sup.wait(lambda: len(sup.events("worker_stopping", reason="SIGINT")) == 2,
             "both workers draining")
    t0 = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.exit_status() == 128 + signal.SIGTERM, sup.text()
    assert time.monotonic() - t0 < 5, "forced, not the 10 s grace period"
    assert sorted(e["exit_status"] for e in sup.events("worker_process_exited")) == [143, 143]
    assert sup.events("supervisor_force_stop")
    assert r.xpending(STREAM, GROUP)["pending"] > 0, "cancelled handlers leave entries pending"


def test_a_sigkilled_supervisor_takes_its_workers_down(
    supervised: Callable[..., Supervised], r: redis.Redis
) -> None:
    """PDEATHSIG: the workers get SIGTERM and drain. A fixed name becomes ``<name>-<i>``."""
    sup = supervised("--processes", "2", "--consumer-name", "fixed")
    sup.wait(lambda: len(sup.events("worker_started")) == 2, "both workers started")
    assert sorted(e["consumer"] for e in sup.events("worker_started")) == ["fixed-0", "fixed-1"]
    assert r.hgetall("procs:env") == {"0": "2:-:fixed-0", "1": "2:-:fixed-1"}
    pids = [sup.pid_of(0), sup.pid_of(1)]
    assert all(_alive(p) for p in pids)
    os.kill(sup.proc.pid, signal.SIGKILL)
    sup.proc.wait(10)
    for pid in pids:
        _wait_gone(pid, 15)
    stopped = sup.events("worker_stopped")
    assert len(stopped) == 2 and all(e["exit_status"] == 0 for e in stopped), sup.text()
