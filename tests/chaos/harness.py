"""Processes the chaos tests own: worker subprocesses, producers, sizes.

Workers run as ``python -m streamflow run tests.chaos.apps:app`` from the repository
root, with JSON logs to a file per worker; :class:`Workers` only ever signals the PIDs it
started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from .checker import FULL

__all__ = ["ROOT", "BackgroundProducer", "WorkerProc", "Workers", "produce", "size", "sync_client"]

ROOT = Path(__file__).resolve().parents[2]
STREAM = "chaos"
GROUP = "chaos"
DLQ = "chaos:dlq"

#: Worker settings shared by every test unless it overrides them.
BASE_ENV = {
    "STREAMFLOW_RECLAIM_INTERVAL": "0.2",
    "STREAMFLOW_BLOCK_MS": "100",
    "STREAMFLOW_GRACE_PERIOD": "2",
    "STREAMFLOW_LOG_LEVEL": "info",
    "STREAMFLOW_LOG_FORMAT": "json",
}


def size(reduced: int, full: int) -> int:
    """``full`` when ``STREAMFLOW_CHAOS_FULL=1``, else ``reduced``."""
    return full if FULL else reduced


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A plain sync client (bytes replies)."""
    kwargs.setdefault("socket_timeout", 10)
    return redis.Redis.from_url(url, **kwargs)


def payload(n: int, **extra: Any) -> bytes:
    return json.dumps({"n": n, **extra}).encode()


def produce(client: redis.Redis, items: Iterable[bytes | dict[str, Any]], stream: str = STREAM,
            chunk: int = 500) -> list[str]:
    """XADD every item (JSON bytes go to ``sf:json``, dicts are raw field maps); return ids."""
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    n = 0
    for item in items:
        fields = item if isinstance(item, dict) else {"sf:json": item}
        pipe.xadd(stream, fields)
        n += 1
        if n == chunk:
            ids.extend(r.decode() for r in pipe.execute())
            n = 0
    if n:
        ids.extend(r.decode() for r in pipe.execute())
    return ids


class BackgroundProducer:
    """A thread that XADDs ``payload(n)`` at ``rate`` per second, retrying through errors.

    ``ids`` holds ``(id, monotonic time the reply came)`` for every XADD that returned;
    ``errors`` counts failures by message. A failed XADD is retried with the same ``n``:
    its first try may have been applied without the reply reaching us (an *unexpected*
    id for the checker, never a loss).
    """

    def __init__(self, url: str, total: int, rate: float, stream: str = STREAM,
                 extra: Callable[[int], dict[str, Any]] | None = None) -> None:
        self.url = url
        self.total = total
        self.rate = rate
        self.stream = stream
        self.extra = extra
        self.ids: list[tuple[str, float]] = []
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-producer", daemon=True)

    def start(self) -> BackgroundProducer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"producer still running after {timeout}s"

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def _run(self) -> None:
        client = sync_client(self.url, socket_timeout=2, socket_connect_timeout=1)
        t0 = time.monotonic()
        n = 0
        while n < self.total and not self._stop.is_set():
            due = t0 + n / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            extra = self.extra(n) if self.extra else {}
            try:
                rid = client.xadd(self.stream, {"sf:json": payload(n, **extra)})
            except redis.RedisError as exc:
                key = f"{type(exc).__name__}: {str(exc).split('.')[0][:80]}"
                self.errors[key] = self.errors.get(key, 0) + 1
                time.sleep(0.05)
                continue
            self.ids.append((rid.decode(), time.monotonic()))
            n += 1
        client.close()


class WorkerProc:
    """One worker subprocess."""

    def __init__(self, proc: subprocess.Popen[bytes], label: str, log: Path,
                 name: str | None) -> None:
        self.proc = proc
        self.label = label
        self.log = log
        self.name = name  # --consumer-name, when fixed
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def consumer(self) -> str | None:
        """The consumer name (from the worker_started log line)."""
        if self.name:
            return self.name
        for ev in self.events("worker_started"):
            return str(ev["consumer"])
        return None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Structured log events of this worker (optionally only ``name``)."""
        out: list[dict[str, Any]] = []
        for line in self.log_text().splitlines():
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if name is None or ev.get("event") == name:
                out.append(ev)
        return out

    def kill9(self) -> None:
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def term(self) -> None:
        if self.alive:
            os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if '"worker_started"' in text:
                return
            if not self.alive:
                raise AssertionError(f"worker {self.label} exited ({self.proc.returncode}):\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.label} not ready after {timeout}s:\n{text[-3000:]}")
            time.sleep(0.05)


class Workers:
    """Starts worker subprocesses and stops them (by PID) when the test ends."""

    def __init__(self, log_dir: Path, ledger_url: str) -> None:
        self.log_dir = log_dir
        self.ledger_url = ledger_url
        self.all: list[WorkerProc] = []
        self._n = 0

    def spawn(self, url: str, *, label: str | None = None, vis: float = 2.0,
              name: str | None = None, env: dict[str, str] | None = None, app: str = "app",
              args: Sequence[str] = (), ready: bool = True) -> WorkerProc:
        """Start ``streamflow run tests.chaos.apps:<app>`` (``args``: extra CLI options)."""
        self._n += 1
        label = label or f"w{self._n}"
        log = self.log_dir / f"worker-{self._n}-{label}.log"
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("STREAMFLOW_", "CHAOS_"))}
        full_env.update(BASE_ENV)
        full_env.update({"CHAOS_LEDGER_URL": self.ledger_url, "CHAOS_WORKER": label,
                         "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        cmd = [sys.executable, "-m", "streamflow", "run", f"tests.chaos.apps:{app}",
               "--redis-url", url, "--visibility-timeout", str(vis)]
        # Each process gets a name of its own unless a test gives one: these tests are about
        # what other workers do with a dead consumer's entries. (A worker restarted under
        # the default <host>-<slot> name takes its own entries back at once: tests/test_identity.py
        # and the same-name tests here.)
        name = name or f"chaos-{label}-{self._n}"
        cmd += ["--consumer-name", name]
        cmd += list(args)
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        w = WorkerProc(proc, label, log, name)
        self.all.append(w)
        if ready:
            w.wait_ready()
        return w

    def spawn_many(self, n: int, url: str, **kwargs: Any) -> list[WorkerProc]:
        ws = [self.spawn(url, ready=False, **kwargs) for _ in range(n)]
        for w in ws:
            w.wait_ready()
        return ws

    def alive(self) -> list[WorkerProc]:
        return [w for w in self.all if w.alive]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [ev for w in self.all for ev in w.events(name)]

    def logs(self, tail: int = 2000) -> str:
        return "\n".join(f"--- {w.label} (pid {w.pid}, rc {w.proc.returncode})\n{w.log_text()[-tail:]}"
                         for w in self.all)

    def stop_all(self, timeout: float = 5.0) -> None:
        for w in self.all:
            w.term()
        deadline = time.monotonic() + timeout
        for w in self.all:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            if w.alive:
                w.kill9()


# -- settling and the final check ----------------------------------------------------------


def id_tuple(raw: str | bytes) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def group_info(client: redis.Redis, stream: str = STREAM, group: str = GROUP) -> dict[str, Any] | None:
    """XINFO GROUPS row of ``group`` (str keys), or None when it does not exist."""
    try:
        rows = client.xinfo_groups(stream)
    except redis.ResponseError:
        return None
    for row in rows:
        info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in row.items()}
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return info
    return None


def quiescent(client: redis.Redis, last_id: str | None, stream: str = STREAM,
              group: str = GROUP) -> bool:
    """Every entry up to ``last_id`` delivered, and nothing pending."""
    try:
        info = group_info(client, stream, group)
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    if info is None:
        return False
    if int(info["pending"]) != 0:
        return False
    return last_id is None or id_tuple(info["last-delivered-id"]) >= id_tuple(last_id)


def settle(client: redis.Redis, produced: list[str], timeout: float, workers: Workers | None = None,
           stream: str = STREAM, group: str = GROUP) -> float:
    """Wait until the group is quiescent past the newest produced id; return the seconds.

    At full size the timeout is multiplied by 5."""
    last = max(produced, key=id_tuple) if produced else None
    if FULL:
        timeout *= 5

    def diagnose() -> str:
        info = group_info(client, stream, group)
        text = f"group: {info}"
        if workers is not None:
            text += "\n" + workers.logs()
        return text

    from .checker import wait_for

    return wait_for(lambda: quiescent(client, last, stream, group), timeout,
                    "every entry handled and acked", diagnose=diagnose)


def finish(fault: str, main: redis.Redis, ledger_client: redis.Redis, produced: list[str],
           *, stream: str = STREAM, group: str = GROUP, dlq: str = DLQ, **kwargs: Any) -> Any:
    """Run the checker on the final state, record the result row, return it."""
    from .checker import check, dlq_ids, pending_count, record
    from .ledger import read_counts, read_executions

    if kwargs.pop("count_mode", False):
        kwargs["counts"] = read_counts(ledger_client)
    else:
        kwargs["executions"] = read_executions(ledger_client)
    result = check(fault, produced, dead_letters=dlq_ids(main, dlq),
                   pending_end=pending_count(main, stream, group), **kwargs)
    return record(result)


class PelMonitor:
    """Polls XINFO CONSUMERS in a thread; records when each watched consumer's PEL hit 0
    (``cleared``) and when it disappeared from the group (``gone``), and every sample."""

    def __init__(self, url: str, stream: str = STREAM, group: str = GROUP,
                 interval: float = 0.05) -> None:
        self.client = sync_client(url, socket_timeout=2, socket_connect_timeout=1)
        self.stream = stream
        self.group = group
        self.interval = interval
        self.watched: dict[str, float] = {}  # name -> monotonic time watching began (the fault)
        self.cleared: dict[str, float] = {}  # name -> seconds from the fault until PEL 0
        self.gone: dict[str, float] = {}  # name -> seconds from the fault until deleted
        self.samples: dict[str, list[tuple[float, int | None]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pel-monitor", daemon=True)

    def start(self) -> PelMonitor:
        self._thread.start()
        return self

    def watch(self, name: str, since: float | None = None) -> None:
        self.samples.setdefault(name, [])
        self.watched[name] = time.monotonic() if since is None else since

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()

    def _run(self) -> None:
        from .checker import consumer_pending

        while not self._stop.is_set():
            try:
                pel = consumer_pending(self.client, self.stream, self.group)
            except redis.RedisError:
                time.sleep(self.interval)
                continue
            now = time.monotonic()
            for name, since in list(self.watched.items()):
                count = pel.get(name)
                self.samples[name].append((now - since, count))
                if count == 0 and name not in self.cleared:
                    self.cleared[name] = now - since
                if count is None and name not in self.gone:
                    self.gone[name] = now - since
                    self.cleared.setdefault(name, now - since)
            time.sleep(self.interval)


class Supervisor:
    """Keeps ``n`` workers alive (respawns the dead ones) until stopped, like a process manager."""

    def __init__(self, workers: Workers, n: int, url: str, **spawn: Any) -> None:
        self.workers = workers
        self.url = url
        self.spawn_kwargs = spawn
        self.current = workers.spawn_many(n, url, **spawn)
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, w in enumerate(self.current):
                if not w.alive and not self._stop.is_set():
                    self.restarts += 1
                    self.current[i] = self.workers.spawn(self.url, ready=False, **self.spawn_kwargs)
            time.sleep(0.1)
