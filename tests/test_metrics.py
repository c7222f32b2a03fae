"""The metrics exporter: /metrics, /healthz and /readyz of a real worker, scraped over HTTP.

Workers run as ``python -m streamflow run tests.apps.metrics:app --metrics-port P`` against
the test's private server; scrapes are parsed with prometheus-client's own parser (a
scrape it cannot parse fails the test). The settings, the port offset, the HTTP edge
cases and the histograms are also tested in process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from streamflow import App, Message
from streamflow.config import Settings
from streamflow.embedded import ServerProcess, find_server_binary
from streamflow.embedded.probe import free_port
from streamflow.errors import ConfigError
from streamflow.metrics import metrics_port_for, require_prometheus_client
from streamflow.stats import DURATION_BUCKETS, LATENCY_BUCKETS
from streamflow.testing import running_worker, wait_until

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from streamflow.metrics import server as http
from streamflow.metrics.collector import METRICS
from tests.apps.metrics import BAD, OK, SLOW, make_app

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.apps.metrics:app"
#: Worker settings of every test: react within a few tenths of a second.
ENV = {
    "STREAMFLOW_METRICS_INTERVAL": "0.2",
    "STREAMFLOW_BLOCK_MS": "100",
    "STREAMFLOW_RECLAIM_INTERVAL": "0.1",
    "STREAMFLOW_GRACE_PERIOD": "0.5",
    "STREAMFLOW_LOG_FORMAT": "json",
    "STREAMFLOW_LOG_LEVEL": "info",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- a worker subprocess and its endpoints ------------------------------------------------


def get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of ``GET http://127.0.0.1:port/path``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def parse(text: str) -> tuple[Samples, set[str]]:
    """Samples by (name, labels), and the family names, of an exposition."""
    samples: Samples = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, names


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name`` whose labels include ``labels`` (handler: a name suffix)."""
    handler = labels.pop("handler", None)
    found = [v for (n, ls), v in samples.items() if n == name
             and all((k, val) in ls for k, val in labels.items())
             and (handler is None or any(k == "handler" and val.endswith("." + handler)
                                         for k, val in ls))]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


class MetricsWorker:
    """``streamflow run tests.apps.metrics:app`` with metrics on ``port`` (stopped by PID)."""

    def __init__(self, url: str, port: int, log: Path, env: dict[str, str] | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
        full.update(ENV, PYTHONPATH=str(ROOT), **(env or {}))
        self.port = port
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamflow", "run", APP, "--redis-url", url,
                 "--metrics-port", str(port), *extra],
                cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        return get(self.port, path)

    def scrape(self) -> Samples:
        status, body, headers = self.get("/metrics")
        assert status == 200, body
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return parse(body)[0]

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
        """Poll ``check`` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = check()
            except (OSError, urllib.error.URLError):
                got = None
            if got:
                return got
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} after {timeout}s:\n{self.logs()}")
            time.sleep(0.05)

    def wait_ready(self) -> None:
        self.wait(lambda: self.get("/readyz")[0] == 200, "ready")

    def wait_status(self, path: str, status: int) -> str:
        """Poll ``path`` until it answers ``status``; the body."""
        got: list[str] = []

        def check() -> bool:
            code, body, _ = self.get(path)
            got[:] = [body]
            return code == status

        self.wait(check, f"{path} answering {status}")
        return got[0]

    def wait_metric(self, name: str, want: float, **labels: str) -> Samples:
        """Scrape until sample ``name`` (with ``labels``) equals ``want``; the last scrape."""
        last: list[Samples] = []

        def check() -> bool:
            last[:] = [self.scrape()]
            return value(last[0], name, **labels) == want

        try:
            self.wait(check, f"{name}{labels} == {want}")
        except AssertionError:
            got = value(last[0], name, **labels) if last else None
            raise AssertionError(f"{name}{labels} is {got}, not {want}\n{self.logs()}") from None
        return last[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., MetricsWorker]]:
    """Start metrics workers (``start(url, **kwargs)``); every one is stopped at the end."""
    started: list[MetricsWorker] = []

    def start(url: str, port: int | None = None, **kwargs: Any) -> MetricsWorker:
        w = MetricsWorker(url, port or free_port(), tmp_path / f"worker-{len(started)}.log",
                          **kwargs)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def publish(url: str, stream: str, payloads: list[Any], *, ids: list[str] | None = None) -> None:
    client = redis.Redis.from_url(url)
    try:
        for i, payload in enumerate(payloads):
            client.xadd(stream, {"sf:json": json.dumps(payload)}, id=ids[i] if ids else "*")
    finally:
        client.close()


# -- over HTTP ------------------------------------------------------------------------------


def test_counters_and_histograms_move(redis_url: str, workers: Callable[..., MetricsWorker]) -> None:
    w = workers(redis_url)
    w.wait_ready()
    status, body, _ = w.get("/metrics")
    assert status == 200
    _, names = parse(body)
    documented = (ROOT / "docs" / "operations.md").read_text()
    # (the parser names a counter's family without _total; the text format has no info type)
    expected = {m.name.removesuffix("_total") if m.kind == "counter" else m.name for m in METRICS}
    # Every family served is one of METRICS (or prometheus-client's process_*), each documented.
    assert {n for n in names if not n.startswith("process_")} == expected
    for m in METRICS:
        assert f"`{m.name}`" in documented, f"{m.name} is not in docs/operations.md"

    publish(redis_url, OK, [{"n": i} for i in range(40)])
    publish(redis_url, BAD, [{"n": i} for i in range(3)])
    w.wait_metric("streamflow_messages_handled_total", 40, handler="ok")
    s = w.wait_metric("streamflow_messages_dead_lettered_total", 3, handler="bad")
    s = w.wait_metric("streamflow_dead_letter_stream_length", 3, stream=BAD)
    time.sleep(0.3)  # nothing more arrives: the counts are exact, not "at least"
    s = w.scrape()
    assert value(s, "streamflow_messages_handled_total", handler="ok", stream=OK,
                 group="m-ok") == 40
    assert value(s, "streamflow_messages_failed_total", handler="ok") == 0
    # Two attempts each: the first parked for a retry and reclaimed, the second dead-lettered.
    assert value(s, "streamflow_messages_failed_total", handler="bad") == 6
    assert value(s, "streamflow_messages_retried_total", handler="bad") == 3
    assert value(s, "streamflow_messages_reclaimed_total", handler="bad") == 3
    assert value(s, "streamflow_messages_handled_total", handler="bad") == 0
    assert value(s, "streamflow_acks_total") == 40
    assert value(s, "streamflow_handler_slots", handler="ok") == 20
    assert value(s, "streamflow_handler_in_flight", handler="ok") == 0
    assert value(s, "streamflow_group_pending", stream=BAD, group="m-bad") == 0
    assert value(s, "streamflow_group_lag", stream=OK, group="m-ok") == 0
    assert value(s, "streamflow_stream_length", stream=OK) == 40
    for name, bounds, handler, count in [
        ("streamflow_handler_duration_seconds", DURATION_BUCKETS, "ok", 40),
        ("streamflow_handler_duration_seconds", DURATION_BUCKETS, "bad", 6),
        ("streamflow_message_latency_seconds", LATENCY_BUCKETS, "ok", 40),
        ("streamflow_message_latency_seconds", LATENCY_BUCKETS, "bad", 6),
    ]:
        assert value(s, f"{name}_count", handler=handler) == count
        buckets = [value(s, f"{name}_bucket", handler=handler, le=le)
                   for le in [*map(repr, bounds), "+Inf"]]
        assert None not in buckets, (name, buckets)
        assert buckets == sorted(buckets) and buckets[-1] == count, (name, buckets)
        total = value(s, f"{name}_sum", handler=handler)
        assert total is not None and 0 <= total <= count * 60
    # The no-op handler takes well under 10 ms, far from the top bucket.
    assert value(s, "streamflow_handler_duration_seconds_bucket", handler="ok", le="0.01") == 40
    # A few entries a second: every one timed (sampling starts above 10,000 a second).
    assert value(s, "streamflow_handler_timed_total", handler="ok") == 40
    assert value(s, "streamflow_handler_timed_total", handler="bad") == 6


def test_backlog_gauges_then_draining(redis_url: str, workers: Callable[..., MetricsWorker]) -> None:
    w = workers(redis_url, env={"STREAMFLOW_GRACE_PERIOD": "1.5"})
    w.wait_ready()
    publish(redis_url, SLOW, [{"sleep": 30}] * 4)  # one runs (concurrency 1), three wait
    s = w.wait_metric("streamflow_group_lag", 3, stream=SLOW, group="m-slow")
    assert value(s, "streamflow_group_pending", stream=SLOW, group="m-slow") == 1
    assert value(s, "streamflow_handler_running", handler="slow") == 1
    assert value(s, "streamflow_group_consumers", stream=SLOW, group="m-slow") == 1
    assert value(s, "streamflow_stream_length", stream=SLOW) == 4
    time.sleep(0.6)  # the entries age; the next polls see it

    def aged() -> Samples | None:
        s = w.scrape()
        age = value(s, "streamflow_group_oldest_undelivered_age_seconds", stream=SLOW)
        return s if age is not None and age >= 0.5 else None

    s = w.wait(aged, "the backlog's head 0.5 s old")
    assert value(s, "streamflow_group_oldest_pending_age_seconds", stream=SLOW) >= 0.5
    assert value(s, "streamflow_group_oldest_pending_age_seconds", stream=OK) == 0
    assert value(s, "streamflow_group_oldest_undelivered_age_seconds", stream=OK) == 0

    # SIGTERM with a handler in flight: not ready while draining, still alive.
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait_status("/readyz", 503) == "not ready: draining\n"
    assert w.get("/healthz")[:2] == (200, "ok\n")
    assert value(w.scrape(), "streamflow_worker_ready") == 0
    assert w.proc.wait(10) == 0  # the grace period ran out: a graceful stop all the same
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", w.port), timeout=1).close()  # the port is closed


def test_job_gauges(any_redis_url: str, workers: Callable[..., MetricsWorker]) -> None:
    """On Redis and Valkey: the poll reads XINFO GROUPS, XPENDING, XLEN, ZCARD of both."""
    w = workers(any_redis_url)
    w.wait_ready()
    app, tasks = make_app(any_redis_url)
    try:
        for _ in range(2):
            tasks["nap"].enqueue_sync(0)  # succeed first: streamflow_jobs_succeeded_total 2
        for _ in range(3):
            tasks["nap"].enqueue_sync(30)  # one runs (concurrency 1), two queued
        tasks["nap"].enqueue_in_sync(600, 1)
        tasks["broken"].enqueue_sync()
        tasks["flaky"].enqueue_sync()
    finally:
        app.jobs.bridge.close()
    w.wait_metric("streamflow_jobs", 1, queue="mqf", status="failed")
    s = w.wait_metric("streamflow_jobs", 1, queue="mqf", status="retrying")
    s = w.wait_metric("streamflow_jobs", 2, queue="mq", status="queued")
    assert {status: value(s, "streamflow_jobs", queue="mq", status=status)
            for status in ("queued", "scheduled", "running", "retrying", "failed")} == {
        "queued": 2, "scheduled": 1, "running": 1, "retrying": 0, "failed": 0}
    assert value(s, "streamflow_jobs", queue="mqf", status="running") == 0
    s = w.wait_metric("streamflow_jobs_succeeded_total", 2, queue="mq")
    assert value(s, "streamflow_jobs_succeeded_total", queue="mqf") == 0
    assert value(s, "streamflow_messages_dead_lettered_total", group="streamflow:jobs",
                 stream="streamflow:queue:{mqf}") == 1


def test_readyz_when_redis_goes_away(workers: Callable[..., MetricsWorker]) -> None:
    with ServerProcess(find_server_binary("redis"), name="streamflow-test-metrics") as server:
        w = workers(server.url)
        w.wait_ready()
        assert value(w.scrape(), "streamflow_redis_up") == 1
        server.kill()
        body = w.wait_status("/readyz", 503)
        assert body.startswith("not ready: redis unreachable: "), body
        assert w.get("/healthz")[0] == 200  # the process is fine: only not ready
        s = w.scrape()
        assert value(s, "streamflow_redis_up") == 0
        assert value(s, "streamflow_group_lag", stream=OK) is None  # no stale values
        assert value(s, "streamflow_messages_handled_total", handler="ok") == 0
        server.restart()  # empty: the worker recreates its groups, then is ready again
        w.wait_ready()
        assert value(w.scrape(), "streamflow_redis_up") == 1


def test_port_offset_per_process(redis_url: str, workers: Callable[..., MetricsWorker]) -> None:
    base = free_port(max_port=60000)
    while not _free(base + 2):
        base = free_port(max_port=60000)
    w = workers(redis_url, port=base, env={"STREAMFLOW_PROCESS_INDEX": "2",
                                           "STREAMFLOW_PROCESSES": "3"})
    w.port = base + 2
    w.wait_ready()
    assert f'"port": {base + 2}' in w.logs()
    assert "unknown_environment_variable" not in w.logs()
    with pytest.raises(OSError):
        get(base, "/healthz", timeout=1)


def test_missing_prometheus_client_stops_the_worker(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'prometheus_client':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    proc = subprocess.run([sys.executable, "-m", "streamflow", "run", APP, "--redis-url", redis_url,
                           "--metrics-port", str(free_port())],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "invalid setting metrics_port" in proc.stderr
    assert "pip install 'streamflow-redis[metrics]'" in proc.stderr
    assert "worker_started" not in proc.stderr + proc.stdout


# -- in process -----------------------------------------------------------------------------


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_settings() -> None:
    assert Settings().metrics_port is None
    assert Settings.load(env={"STREAMFLOW_METRICS_PORT": "9100"}).metrics_port == 9100
    for bad in (-1, 65536, True, 1.5, "9100"):
        with pytest.raises(ConfigError, match="metrics_port"):
            Settings(metrics_port=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"STREAMFLOW_METRICS_PORT: 'abc' is not a whole number"):
        Settings.load(env={"STREAMFLOW_METRICS_PORT": "abc"})
    with pytest.raises(ConfigError, match=r"STREAMFLOW_METRICS_PORT=70000.*65535"):
        Settings.load(env={"STREAMFLOW_METRICS_PORT": "70000"})
    with pytest.raises(ConfigError, match="metrics_host"):
        Settings(metrics_host="")
    with pytest.raises(ConfigError, match="metrics_interval"):
        Settings(metrics_interval=0)

    s = Settings(metrics_port=9100)
    assert metrics_port_for(s, {}) == 9100
    assert metrics_port_for(s, {"STREAMFLOW_PROCESS_INDEX": "3"}) == 9103
    assert metrics_port_for(Settings(metrics_port=0), {"STREAMFLOW_PROCESS_INDEX": "3"}) == 0
    with pytest.raises(ConfigError, match=r"STREAMFLOW_PROCESS_INDEX.*whole number"):
        metrics_port_for(s, {"STREAMFLOW_PROCESS_INDEX": "x"})
    with pytest.raises(ConfigError, match=r"STREAMFLOW_PROCESS_INDEX.*>= 0"):
        metrics_port_for(s, {"STREAMFLOW_PROCESS_INDEX": "-1"})
    with pytest.raises(ConfigError, match=r"metrics_port.*65535 \+ process index 1"):
        metrics_port_for(Settings(metrics_port=65535), {"STREAMFLOW_PROCESS_INDEX": "1"})


async def _noop(msg: Message) -> None:
    pass


@pytest.mark.anyio
async def test_missing_prometheus_client_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"metrics_port.*pip install 'streamflow-redis\[metrics\]'"):
        require_prometheus_client()
    app = App(redis_url="redis://127.0.0.1:1/0")  # never reached: the check comes first
    app.handler("x", group="x")(_noop)
    from streamflow import Worker

    worker = Worker(app, app.settings(metrics_port=free_port()), handle_signals=False)
    with pytest.raises(ConfigError, match="metrics_port"):
        await worker.serve()


@pytest.mark.anyio
async def test_histograms_in_process(redis_url: str) -> None:
    app = App(redis_url=redis_url)

    @app.handler("h", group="h", concurrency=4)
    async def sleepy(msg: Message) -> None:
        await anyio.sleep(0.03)

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        sec, usec = await client.time()
        now_ms = sec * 1000 + usec // 1000
        # Entries whose ids say they were added 2-3 s ago: that is their latency.
        for i in range(5):
            await client.xadd("h", {"sf:json": "{}"}, id=f"{now_ms - 3000 + i}-0")
        async with running_worker(app, redis_url, metrics_port=0) as worker:
            await wait_until(lambda: worker.stats().handled == 5, timeout=10)
            assert worker.exporter is not None and worker.exporter.bound_port
            stats = worker.stats().handler("sleepy")
            port = worker.exporter.bound_port
            status, body, _ = await anyio.to_thread.run_sync(get, port, "/metrics")
    finally:
        await client.aclose()
    assert status == 200 and "streamflow_handler_duration_seconds_bucket" in body
    assert stats.durations is not None and stats.latencies is not None
    assert stats.durations.count == 5 and stats.latencies.count == 5 and stats.timed == 5
    assert 'streamflow_handler_timed_total{group="h",handler=' in body
    # 30 ms handlers land in (0.025, 0.05]; 3 s old entries in (2.5, 5].
    assert dict(zip((*DURATION_BUCKETS, "inf"), stats.durations.counts, strict=True))[0.05] == 5
    assert dict(zip((*LATENCY_BUCKETS, "inf"), stats.latencies.counts, strict=True))[5.0] == 5
    assert 0.15 <= stats.durations.sum < 0.5
    assert 12 <= stats.latencies.sum < 20

    # Without metrics the slots record nothing.
    app2 = App(redis_url=redis_url)
    app2.handler("h2", group="h2")(_noop)
    async with running_worker(app2, redis_url) as worker:
        assert worker.exporter is None
        assert worker.stats().handlers[0].durations is None


@pytest.mark.anyio
async def test_http_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    import structlog

    def boom() -> http.Response:
        raise RuntimeError("bug")

    server = http.HttpServer({"/ok": lambda: http.Response(200, b"fine\n"), "/boom": boom},
                             log=structlog.get_logger("test"))
    monkeypatch.setattr(http, "REQUEST_TIMEOUT", 0.3)

    async def exchange(port: int, data: bytes) -> bytes:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            if data:
                await stream.send(data)
            out = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    out += await stream.receive()
            return out

    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        ok = await exchange(port, b"GET /ok?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nfine\n")
        assert b"Connection: close\r\n" in ok and b"Content-Length: 5\r\n" in ok
        head = await exchange(port, b"HEAD /ok HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
        assert (await exchange(port, b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
        post = await exchange(port, b"POST /ok HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD\r\n" in post
        assert (await exchange(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        big = b"GET /ok HTTP/1.1\r\nX: " + b"a" * (http.MAX_HEAD + 10) + b"\r\n\r\n"
        assert (await exchange(port, big)).startswith(b"HTTP/1.1 431 ")
        assert (await exchange(port, b"GET /boom HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 500 ")
        t0 = time.monotonic()
        assert await exchange(port, b"GET /ok HTTP/1.1\r\n") == b""  # never finishes its head
        assert time.monotonic() - t0 < 2
        assert server.active == 0
        # The same port again: a clear error naming the setting.
        with pytest.raises(ConfigError, match=rf"metrics_port.*cannot listen on 127\.0\.0\.1:{port}"):
            await http.HttpServer({}, log=structlog.get_logger("test")).serve("127.0.0.1", port)
        tg.cancel_scope.cancel()


async def _scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    status, body, _ = await anyio.to_thread.run_sync(get, port, path)
    return status, body


@pytest.mark.anyio
async def test_least_privilege_worker_without_xlen(redis_url: str) -> None:
    """The worker ACL of docs/security.md lacks XLEN: those gauges are left out, logged once."""
    import structlog.testing

    from streamflow.permissions import WORKER_COMMANDS, acl_rules, worker_keys
    from tests.acl_users import AclUsers

    app = App(redis_url=redis_url)
    app.handler("lp", group="lp")(_noop)
    users = AclUsers(redis_url)
    try:
        url = users.user("metrics-lp", acl_rules(WORKER_COMMANDS, worker_keys(app.handlers)))
        app = App(redis_url=url)
        app.handler("lp", group="lp")(_noop)
        with structlog.testing.capture_logs() as logs:
            async with running_worker(app, url, metrics_port=0, metrics_interval=0.1) as worker:
                assert worker.exporter is not None
                await wait_until(lambda: worker.exporter is not None
                                 and worker.exporter.poller.polls >= 2, timeout=10)
                port = worker.exporter.bound_port
                assert port is not None
                status, body = await _scrape(port)
                ready = await _scrape(port, "/readyz")
    finally:
        users.close()
    assert status == 200 and ready == (200, "ready\n")
    samples, _ = parse(body)
    assert value(samples, "streamflow_group_lag", stream="lp", group="lp") == 0
    assert value(samples, "streamflow_group_consumers", stream="lp", group="lp") == 1
    assert value(samples, "streamflow_stream_length", stream="lp") is None
    assert value(samples, "streamflow_dead_letter_stream_length", stream="lp") is None
    denied = [e for e in logs if e["event"] == "metrics_permission_denied"]
    assert sorted((e["command"], e["key"]) for e in denied) == [("XLEN", "lp"), ("XLEN", "lp:dlq")]
    assert "+xlen" in denied[0]["hint"]


@pytest.mark.anyio
async def test_a_poll_that_fails_oddly_leaves_the_worker_running(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamflow.metrics.groups import GroupPoller

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("lag")

    monkeypatch.setattr(GroupPoller, "_group", broken)
    app = App(redis_url=redis_url)
    app.handler("odd", group="odd")(_noop)
    async with running_worker(app, redis_url, metrics_port=0, metrics_interval=0.1) as worker:
        assert worker.exporter is not None and worker.exporter.bound_port is not None
        port = worker.exporter.bound_port
        await wait_until(lambda: worker.exporter is not None
                         and worker.exporter.poller.error is not None, timeout=10)
        assert await _scrape(port, "/readyz") == (503, "not ready: metrics poll failed: KeyError: 'lag'\n")
        await app.publish("odd", {"n": 1})
        await wait_until(lambda: worker.stats().handled == 1, timeout=10)
        status, body = await _scrape(port)
    samples, _ = parse(body)
    assert status == 200 and value(samples, "streamflow_messages_handled_total", handler="_noop") == 1
    assert value(samples, "streamflow_redis_up") == 1  # Redis answered; reading it failed


def test_a_port_already_taken_stops_the_worker_at_start(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
        proc = subprocess.run([sys.executable, "-m", "streamflow", "run", APP, "--redis-url",
                               redis_url, "--metrics-port", str(port)], check=False, cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"invalid setting metrics_port: cannot listen on 0.0.0.0:{port}" in proc.stderr
    assert "worker_started" not in proc.stderr + proc.stdout


@pytest.mark.anyio
async def test_metrics_on_a_cluster(redis_cluster: Any) -> None:
    """The poll's pipeline spans keys of several slots: the cluster client routes each."""
    redis_cluster.wait_ok(timeout=30)
    redis_cluster.flushall()
    url = redis_cluster.url
    app = App(redis_url=url)
    app.handler("cm", group="cm", partitions=3)(_noop)  # three streams, on three slots
    async with running_worker(app, url, metrics_port=0, metrics_interval=0.1) as worker:
        assert worker.exporter is not None and worker.exporter.bound_port is not None
        port = worker.exporter.bound_port
        for n in range(5):
            await app.publish("cm", {"n": n})
        await wait_until(lambda: worker.stats().handled == 5, timeout=15)
        polls = worker.exporter.poller.polls
        await wait_until(lambda: worker.exporter is not None
                         and worker.exporter.poller.polls > polls + 1, timeout=10)
        status, body = await _scrape(port)
        ready = await _scrape(port, "/readyz")
    assert status == 200 and ready == (200, "ready\n"), (ready, body[-2000:])
    samples, _ = parse(body)
    assert value(samples, "streamflow_messages_handled_total", handler="_noop") == 5
    streams = worker.stats().handlers[0].streams
    assert len(streams) == 3
    for stream in streams:
        assert value(samples, "streamflow_group_lag", stream=stream, group="cm") == 0
        assert value(samples, "streamflow_group_pending", stream=stream, group="cm") == 0
        assert value(samples, "streamflow_group_consumers", stream=stream, group="cm") == 1
    assert sum(value(samples, "streamflow_stream_length", stream=s) or 0 for s in streams) == 5
