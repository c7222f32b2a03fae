"""``streamflow top``: the live view, driven in a real terminal.

``python -m streamflow top`` runs in a pseudo-terminal (``os.openpty``, the child's
controlling terminal, its size set with TIOCSWINSZ) whose output feeds a ``pyte`` screen.
The pyte screen is larger than the size the program is told, so a line drawn wider than
the terminal, or a frame taller than it, would show. Against a private server with a real
worker (``python -m streamflow run`` in a subprocess) and entries published by the test.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pyte
import pytest
import redis

from streamflow import App
from streamflow.admin.top import Sampler
from streamflow.admin.top_model import GroupSample, Snapshot, StreamSample
from streamflow.admin.top_screen import fit_name, layout, snapshot_text
from streamflow.embedded import ServerProcess, find_server_binary
from streamflow.keys import consumer_leases_key
from streamflow.permissions import ADMIN_COMMANDS, acl_rules

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = "0.4"

WORKER_APP = textwrap.dedent('''
    from streamflow import App, Message, Reject

    app = App()

    @app.handler("orders", group="billing")
    async def bill(msg: Message) -> None:
        if msg.fields.get("bad"):
            raise Reject("bad order")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b
''')

#: ``python -c`` prelude that makes ``import rich`` fail, then runs the CLI.
NO_RICH = "import sys; sys.modules['rich'] = None; from streamflow.cli import main; sys.exit(main())"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STREAMFLOW_") and k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    return env


#: Run in the child's new session (``start_new_session``): make stdin, the pty, its
#: controlling terminal (so that a resize sends it SIGWINCH and Ctrl-C SIGINT), then exec.
CONTROLLING_TTY = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                   "os.execv(sys.argv[1], sys.argv[1:])")


class Terminal:
    """A program in a pty of ``cols`` x ``rows``, its output on a larger pyte screen."""

    def __init__(self, args: list[str], cols: int = 80, rows: int = 24) -> None:
        self.master, self.slave = os.openpty()
        self.resize(cols, rows)
        self.initial = self.lflags()  # the modes before the program touched them
        self.screen = pyte.Screen(160, 60)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONTROLLING_TTY, *args], stdin=self.slave, stdout=self.slave,
            stderr=self.slave, cwd=ROOT, env=_env(), start_new_session=True)

    def resize(self, cols: int, rows: int) -> None:
        """Set the window size, as a terminal emulator does (the kernel sends SIGWINCH). What
        the screen showed is cleared first, as a shrinking terminal loses what falls outside."""
        if hasattr(self, "screen"):
            self.pump(0.1)
            self.screen.erase_in_display(2)
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.cols, self.rows = cols, rows

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            self.raw += data
            self.stream.feed(data)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines()).rstrip()

    def wait_for(self, check: Callable[[list[str]], bool], what: str, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.05)
            lines = self.lines()
            with contextlib.suppress(KeyError, ValueError, IndexError, StopIteration):
                if check(lines):
                    return lines
        raise AssertionError(f"timed out waiting for {what}; the screen:\n{self.text()}")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait_exit(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.05)
        assert self.proc.poll() is not None, f"still running; the screen:\n{self.text()}"
        self.pump(0.05)
        return self.proc.returncode

    def lflags(self) -> int:
        return int(termios.tcgetattr(self.slave)[3])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@contextlib.contextmanager
def terminal(args: list[str], cols: int = 80, rows: int = 24) -> Iterator[Terminal]:
    term = Terminal(args, cols, rows)
    try:
        yield term
    finally:
        term.close()


def top_args(url: str, *extra: str, no_rich: bool = False) -> list[str]:
    head = [sys.executable, "-c", NO_RICH] if no_rich else [sys.executable, "-m", "streamflow"]
    return [*head, "top", "--url", url, "--interval", INTERVAL, *extra]


# -- reading the screen ---------------------------------------------------------------------


def cells(lines: list[str], name: str, header: str = "STREAM / GROUP") -> dict[str, str]:
    """The cells of the row named ``name`` (a group's name is indented by two spaces), by the
    labels of the table's header line (numbers are right-aligned under their label)."""
    head = next(line for line in lines if line.startswith(header))
    row = next(line for line in lines if line.startswith(name + " ") or line == name)
    out = {"NAME": row[: len(name)]}
    for m in re.finditer(r"\S+(?: / \S+)?", head):
        if m.start() == 0:
            continue
        end = m.end()
        before = row[:end]
        out[m.group()] = before.split()[-1] if len(row) >= end and before[-1:] != " " else ""
    return out


def number(cell: str) -> float:
    """``12``, ``0.5``, ``1.2k`` as a number."""
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(cell[-1:], 1)
    return float(cell.rstrip("kMG")) * scale


def frame_fits(lines: list[str], cols: int, rows: int) -> bool:
    """The frame fills ``cols`` x ``rows`` and nothing beyond: header as wide as the
    terminal, the footer on its last line, nothing right of or below it."""
    return (len(lines[0]) == cols and lines[0].startswith("streamflow top")
            and lines[rows - 1].startswith("q quit") and all(len(x) <= cols for x in lines)
            and not any(lines[rows:]))


# -- the worker and the data ----------------------------------------------------------------


@pytest.fixture
def worker(redis_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m streamflow run`` of :data:`WORKER_APP`, ready (its lease taken)."""
    (tmp_path / "topapp.py").write_text(WORKER_APP)
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamflow", "run", "topapp:app",
                             "--redis-url", redis_url], cwd=tmp_path, env=_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    r = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 15
        while not r.hlen(consumer_leases_key("orders", "billing")):
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        r.close()


def enqueue_jobs(url: str) -> None:
    """Two jobs of queue ``default`` delayed by an hour; four jobs on ``reports`` (no worker)."""

    async def go() -> None:
        app = App(redis_url=url)

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        @app.task(queue="reports")
        def report(n: int) -> None: ...

        for _ in range(2):
            await add.enqueue_in(3600, 1, 2)
        for i in range(4):
            await report.enqueue(i)
        await app.aclose()

    anyio.run(go)


class Publisher:
    """A thread adding an entry to ``orders`` every 10 ms until stopped; counts them."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.client.xadd("orders", {"n": self.count})
            self.count += 1

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


# -- the live screen ------------------------------------------------------------------------


def test_live_screen_with_a_worker(redis_url: str, worker: subprocess.Popen[bytes]) -> None:
    """With rich, 80x24: the stream row and its groups; a rate that moves while entries are
    published and drops back to 0 after; pending, lag, consumers and DLQ length as the test
    made them; the job queues; a resize to 100x30 redraws to fit (the LEN column appears);
    the terminal is in cbreak mode while it runs; q quits with 0 and restores the terminal."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    for i in range(10):
        r.xadd("orders", {"n": i})
    for _ in range(3):
        r.xadd("orders", {"bad": "1"})
    r.xgroup_create("orders", "audit", "0")
    r.xreadgroup("audit", "stuck", {"orders": ">"}, count=5)  # a consumer without a process
    enqueue_jobs(redis_url)
    deadline = time.monotonic() + 10
    while r.xlen("orders:dlq") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    with terminal(top_args(redis_url)) as term:
        lines = term.wait_for(lambda s: cells(s, "  billing")["OUT/S"] != "-"
                              and cells(s, "reports", "JOB QUEUE")["QUEUED"] == "4", "the first rates")
        assert not term.lflags() & (termios.ICANON | termios.ECHO)  # cbreak while it runs
        assert b"\x1b[7mstreamflow top" not in term.raw  # drawn by rich, not the ANSI view
        assert frame_fits(lines, 80, 24), term.text()
        assert "LEN" not in lines[2]  # dropped at 80 columns: the names get the room
        assert redis_url.split("//")[1] in lines[0]
        default = cells(lines, "default", "JOB QUEUE")
        assert (default["SCHED"], default["QUEUED"], default["FAILED"]) == ("2", "0", "0")

        seen: dict[str, float] = {"IN/S": 0, "OUT/S": 0}
        with Publisher(redis_url) as pub:

            def moving(s: list[str]) -> bool:
                seen["IN/S"] = max(seen["IN/S"], number(cells(s, "orders")["IN/S"]))
                seen["OUT/S"] = max(seen["OUT/S"], number(cells(s, "  billing")["OUT/S"]))
                return seen["IN/S"] > 20 and seen["OUT/S"] > 20

            term.wait_for(moving, "non-zero rates while publishing")
        published = pub.count

        def settled(s: list[str]) -> bool:
            billing, audit, orders = cells(s, "  billing"), cells(s, "  audit"), cells(s, "orders")
            return (billing["OUT/S"], orders["IN/S"], audit["LAG"]) == ("0", "0",
                                                                         str(8 + published))

        lines = term.wait_for(settled, "rates back to 0 after publishing")
        billing, audit, orders = cells(lines, "  billing"), cells(lines, "  audit"), cells(lines, "orders")
        assert (billing["LAG"], billing["PENDING"], billing["LIVE/STOP"]) == ("0", "0", "1/0")
        assert (audit["PENDING"], audit["LIVE/STOP"], audit["OUT/S"]) == ("5", "0/1", "0")
        assert re.fullmatch(r"\d+(\.\d)?(ms|s)", audit["OLDEST"]), audit
        assert orders["DLQ"] == "3"
        assert frame_fits(lines, 80, 24), term.text()

        term.resize(100, 30)
        lines = term.wait_for(lambda s: frame_fits(s, 100, 30), "a frame of 100x30")
        assert "LEN" in lines[2]
        assert cells(lines, "orders")["LEN"] == str(13 + published)
        term.send(b"q")
        assert term.wait_exit() == 0


def test_resize_redraws_at_once_and_q_restores_the_terminal(redis_url: str) -> None:
    """A resize redraws at once (SIGWINCH), not at the next refresh (30 s away). After q:
    exit 0, the modes as before (canonical, echo), the alternate screen left and the cursor
    shown again."""
    redis.Redis.from_url(redis_url).xadd("orders", {"n": 1})
    with terminal([*top_args(redis_url), "--interval", "30"]) as term:
        before = term.initial
        assert before & termios.ICANON and before & termios.ECHO
        term.wait_for(lambda s: cells(s, "orders")["DLQ"] == "0", "the stream")
        assert not term.lflags() & termios.ICANON
        term.resize(60, 12)
        lines = term.wait_for(lambda s: frame_fits(s, 60, 12), "a frame of 60x12", timeout=3)
        assert "IN/S" not in lines[2] and "OLDEST" not in lines[2] and "LAG" in lines[2]  # narrow
        term.send(b"q")
        assert term.wait_exit() == 0
        assert term.lflags() == before
        assert b"\x1b[?1049h" in term.raw and term.raw.rindex(b"\x1b[?1049l") > term.raw.rindex(
            b"\x1b[?1049h")
        assert term.raw.rindex(b"\x1b[?25h") > term.raw.rindex(b"\x1b[?25l")


@pytest.mark.parametrize("how", ["--plain", "rich missing"])
def test_plain_screen_without_rich(redis_url: str, how: str) -> None:
    """The plain ANSI screen (``--plain``, or rich not importable) shows the same frame, fits a
    resize, and Ctrl-C ends it with 130 and the terminal restored."""
    r = redis.Redis.from_url(redis_url)
    for i in range(10):
        r.xadd("orders", {"n": i})
    r.xgroup_create("orders", "audit", "0")
    r.xreadgroup("audit", "stuck", {"orders": ">"}, count=4)
    r.xadd("orders:dlq", {"x": 1})
    args = [*(top_args(redis_url, "--plain") if how == "--plain" else top_args(
        redis_url, no_rich=True)), "--interval", "30"]  # a redraw comes from the resize alone
    with terminal(args) as term:
        before = term.initial
        lines = term.wait_for(lambda s: cells(s, "  audit")["PENDING"] == "4", "the audit group")
        audit = cells(lines, "  audit")
        assert (audit["LAG"], audit["LIVE/STOP"]) == ("6", "0/1")
        assert cells(lines, "orders")["DLQ"] == "1"
        assert frame_fits(lines, 80, 24), term.text()
        assert b"\x1b[7mstreamflow top" in term.raw  # drawn by the ANSI view, not rich
        term.resize(100, 30)
        term.wait_for(lambda s: frame_fits(s, 100, 30) and "LEN" in s[2], "a frame of 100x30",
                      timeout=3)
        term.send(b"\x03")  # Ctrl-C: the terminal sends SIGINT
        assert term.wait_exit() == 130
        assert term.lflags() == before


def test_server_restart_shows_the_error_and_recovers(tmp_path: Path) -> None:
    """The server goes away: the screen says so and keeps the last figures; it comes back
    (empty): top reads it again without being restarted."""
    server = ServerProcess(find_server_binary("redis"), name="streamflow-test-top").start()
    try:
        r = redis.Redis.from_url(server.url)
        r.xadd("orders", {"n": 1})
        with terminal(top_args(server.url)) as term:
            term.wait_for(lambda s: cells(s, "orders")["DLQ"] == "0", "the stream")
            server.kill()
            lines = term.wait_for(lambda s: s[1].startswith("! ") and "retrying" in " ".join(s[1:4]),
                                  "the error")
            error = " ".join(lines[1:4])
            assert f"Redis at {server.url}" in error and "retrying every 0.4s" in error, error
            assert cells(lines, "orders")  # the last figures stay
            assert frame_fits(lines, 80, 24)
            server.restart()
            r.xadd("restarted", {"n": 1})
            term.wait_for(lambda s: not s[1].startswith("! ") and cells(s, "restarted"),
                          "figures after the restart")
            term.send(b"q")
            assert term.wait_exit() == 0
        r.close()
    finally:
        server.stop()


# -- pipes, --once, --json, errors ----------------------------------------------------------


def run_top(url: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamflow", "top", "--url", url, *args],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=timeout,
                          check=False)


def test_once_prints_one_snapshot(redis_url: str) -> None:
    """``--once`` prints one table (rates over one interval) and exits 0; ``--json`` the same
    as a document; named streams show only those."""
    r = redis.Redis.from_url(redis_url)
    for i in range(7):
        r.xadd("orders", {"n": i})
    r.xadd("other", {"n": 1})
    r.xgroup_create("orders", "audit", "0")
    r.xreadgroup("audit", "stuck", {"orders": ">"}, count=2)
    out = run_top(redis_url, "--once", "--interval", "0.2")
    assert out.returncode == 0, out.stderr
    rows = {tuple(line.split()[:2]): line.split() for line in out.stdout.splitlines()[2:]}
    assert rows[("orders", "audit")] == ["orders", "audit", "stream", "7", "0", "0", "5", "2",
                                         rows[("orders", "audit")][8], "0", "1", "0"]
    assert ("other", "-") in rows
    doc = json.loads(run_top(redis_url, "orders", "--once", "--json", "--interval", "0.2").stdout)
    assert [s["name"] for s in doc["streams"]] == ["orders"]
    (audit,) = doc["streams"][0]["groups"]
    assert (audit["pending"], audit["lag"], audit["live"], audit["stopped"], audit["rate"]) == (
        2, 5, 0, 1, 0.0)


def test_pipe_prints_a_snapshot_per_refresh(redis_url: str) -> None:
    """stdout a pipe: one table per refresh, plain text (no escape sequences); SIGTERM ends it
    with 143; JSON lines with --json."""
    redis.Redis.from_url(redis_url).xadd("orders", {"n": 1})
    for extra, check in (((), lambda line: line.startswith("streamflow top")),
                         (("--json",), lambda line: json.loads(line)["streams"][0]["length"] == 1)):
        proc = subprocess.Popen([sys.executable, "-m", "streamflow", "top", "--url", redis_url,
                                 "--interval", "0.2", *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=ROOT, env=_env())
        try:
            assert proc.stdout is not None
            seen, text = 0, ""
            while seen < 3:
                line = proc.stdout.readline().decode()
                assert line, proc.stderr.read() if proc.stderr else ""
                text += line
                seen += bool(check(line))
            assert "\x1b" not in text
            if not extra:
                assert re.search(r"^orders +- +stream +1 ", text, re.M), text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 143
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_bad_url_and_interval_are_clear_errors() -> None:
    """A bad URL: exit 2 and one line naming the setting, before any screen; a too short
    interval: a usage error."""
    out = run_top("http://nowhere", "--once")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("streamflow: error:") and "redis_url" in out.stderr, out.stderr
    out = run_top("redis://127.0.0.1:1/0", "--interval", "0.01")
    assert out.returncode == 2 and "--interval" in out.stderr and ">= 0.1" in out.stderr
    out = run_top("redis://127.0.0.1:1/0", "--once")  # nothing listens there
    assert out.returncode == 2 and "cannot reach Redis at redis://127.0.0.1:1/0" in out.stderr


def test_restricted_user(redis_url: str) -> None:
    """A user with only the operator commands on some keys: named streams show; listed ones
    it may not read are marked, not fatal; a user that may not SCAN is told to name streams."""
    admin = redis.Redis.from_url(redis_url)
    admin.xadd("orders", {"n": 1})
    admin.xadd("secret", {"n": 1})
    made = []

    def user(name: str, rules: list[str]) -> str:
        admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">pw-{name}", *rules)
        made.append(name)
        return redis_url.replace("redis://", f"redis://{name}:pw-{name}@", 1)

    try:
        url = user("sf-top", acl_rules(ADMIN_COMMANDS, ["orders", "orders:dlq"]))
        doc = json.loads(run_top(url, "orders", "--once", "--json", "--interval", "0.2").stdout)
        assert [(s["name"], s["state"], s["length"]) for s in doc["streams"]] == [
            ("orders", "stream", 1)]
        out = run_top(url, "--once", "--interval", "0.2")
        assert out.returncode == 0, out.stderr
        assert re.search(r"^orders +- +stream +1 ", out.stdout, re.M), out.stdout
        assert re.search(r"^secret +- +denied ", out.stdout, re.M), out.stdout
        assert "pw-sf-top" not in out.stdout
        url = user("sf-noscan", acl_rules([c for c in ADMIN_COMMANDS if c != "scan"], ["orders"]))
        for mode in ("--once", "--json"):  # one snapshot, or the loop
            out = run_top(url, mode, "--interval", "0.2")
            assert out.returncode == 2, (out.stdout, out.stderr)
            assert out.stderr == ("streamflow: error: this Redis user may not list the server's "
                                  "keys (SCAN is not allowed); name the streams to watch instead: "
                                  "streamflow top STREAM [STREAM ...]\n"), out.stderr
    finally:
        for name in made:
            admin.execute_command("ACL", "DELUSER", name)
        admin.close()


# -- the model and the layout, in-process ---------------------------------------------------


@pytest.mark.anyio
async def test_sampler_counts_handled_entries_not_deliveries(redis_url: str) -> None:
    """``handled`` is deliveries minus the growth of the pending list: entries read and not
    acked yet are not counted until acked; ``added`` counts XADDs; a named stream that does
    not exist is shown as missing."""
    from streamflow.connection import Connection

    conn = Connection(redis_url)
    client = await conn.client()
    try:
        await client.xgroup_create("s", "g", "0", mkstream=True)
        sampler, snap = Sampler(["s", "nope"]), Snapshot(redis_url)
        await sampler.sample(client, snap)
        s, nope = snap.streams
        assert nope.state == "missing" and s.groups[0].rate is None  # nothing to compare yet
        for i in range(10):
            await client.xadd("s", {"n": i})
        read = await client.xreadgroup("g", "c", {"s": ">"})
        ids = [eid for eid, _ in read[0][1]]
        await client.xack("s", "g", *ids[:4])
        await sampler.sample(client, snap)
        s = snap.streams[0]
        g = s.groups[0]
        assert (s.added, g.handled, g.pending, g.lag, g.stopped, g.live) == (10, 4, 6, 0, 1, 0)
        assert g.oldest_age_ms is not None and g.rate is not None and g.rate > 0
        await client.xack("s", "g", *ids[4:])
        await sampler.sample(client, snap)
        g = snap.streams[0].groups[0]
        assert (snap.streams[0].added, g.handled, g.pending) == (0, 6, 0)
    finally:
        await conn.aclose()


def _snapshot(n_streams: int = 3, name_len: int = 60) -> Snapshot:
    streams = []
    for i in range(n_streams):
        groups = [GroupSample(f"group-{j}-" + "g" * name_len, pending=123456, lag=99,
                              entries_read=1, live=2, stopped=1, rate=1234.5,
                              oldest_age_ms=5_000_000) for j in range(2)]
        streams.append(StreamSample(f"stream-{i}-" + "x" * name_len + f"-end{i}", length=10**9,
                                    dlq_length=3, rate_in=0.5, groups=groups))
    return Snapshot("redis://:secret@host:6379/0", version="redis 7.2", server_ms=1,
                    taken_at=time.time(), streams=streams)


def test_layout_fits_every_size() -> None:
    """Whatever the size, exactly ``height`` lines, none wider than ``width``, the footer last;
    rows that do not fit are counted in the footer; passwords never shown."""
    snap = _snapshot(n_streams=8)
    for width in (1, 10, 40, 79, 80, 100, 200):
        for height in (1, 2, 5, 24, 30, 60):
            lines = layout(snap, width, height, 1.0)
            assert len(lines) == height, (width, height)
            assert all(len(line.text) <= width for line in lines), (width, height)
            assert lines[-1].text.startswith("q quit"[:width])
            assert not any("secret" in line.text for line in lines)
    footer = layout(snap, 80, 10, 1.0)[-1].text
    assert re.search(r"\((\d+) more rows", footer), footer
    assert "more rows" not in layout(_snapshot(n_streams=1), 80, 24, 1.0)[-1].text


def test_long_names_are_cut_in_the_middle() -> None:
    """A long name keeps its start and its end; control characters are escaped."""
    assert fit_name("streamflow:queue:{default}", 20) == "streamflo...default}"
    assert fit_name("short", 20) == "short"
    assert fit_name("a\x1b[2Jb", 20) == "a\\x1b[2Jb"
    lines = [line.text for line in layout(_snapshot(1), 80, 24, 1.0)]
    (row,) = [line for line in lines if line.startswith("stream-0")]
    assert "...x" in row and "-end0" in row
    assert "streamflow top" in snapshot_text(_snapshot(1))
    assert "-end0" in snapshot_text(_snapshot(1))  # a pipe gets the names whole
