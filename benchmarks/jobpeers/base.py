"""The driver of one job-queue measurement, and the Adapter every tool module implements.

The benchmark's parent process (jobs.py) runs each measurement in a fresh *driver* process
(:func:`run_driver`; ``benchmarks/common.py --child benchmarks.jobpeers.base:drive``, with
the tool's interpreter, ``sys.executable`` by default). The driver is the tool's client:

* J1 / J3 (:func:`_drain`): enqueue N jobs through the tool's API (not timed), start the
  tool's own worker CLI as a subprocess, poll the tool's state every ``poll_s`` until all N
  are complete (``Adapter.done``), then verify (``Adapter.verify``: counts from the tool's
  own keys, and results read back through its API for a sample of jobs). The time runs from
  the first job's start (the timestamp :func:`benchmarks.jobpeers.mark` writes, in the
  worker) until the poll saw completion, so worker start-up is not timed.
* J2 (:func:`_roundtrips`): start the worker, warm up, then enqueue one job and await its
  result through the tool's API, ``n`` times in a row; every job is verified afterwards.

The worker runs in its own process group; it is stopped with SIGTERM (SIGKILL for the group
after ``stop_timeout``), and the driver writes its pid to ``worker.pid`` so that the parent
can kill a worker left behind by a driver that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, child_env, percentiles_ms
from benchmarks.jobpeers import (
    ENV_CONCURRENCY,
    ENV_MARK,
    ENV_QUIET,
    ENV_THREADS,
    ENV_URL,
    KINDS,
    SLEEP_S,
    tool,
)


class Adapter:
    """A tool's client side. Subclasses set ``tool`` and implement the async methods.

    ``handles`` are whatever the tool's enqueue returns (job objects or ids), in order.
    ``done`` must be cheap (one or two commands): it is polled every few ms during the run.
    ``verify`` returns ``{"verified": bool, ...counts...}`` and ``"why"`` when not verified.
    """

    tool = "?"

    def __init__(self, url: str, params: dict[str, Any]) -> None:
        self.url = url
        self.params = params
        self.client_poll = float(params.get("client_poll", 0.001))

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def worker_argv(self, kind: str) -> list[str]:
        """The worker command after the interpreter (``[-m, cli, ...]``)."""
        raise NotImplementedError

    def settings(self, kind: str) -> dict[str, Any]:
        """The worker settings that matter for the numbers (reported with each run)."""
        return {}

    async def enqueue(self, kind: str, n: int) -> list[Any]:
        raise NotImplementedError

    async def roundtrip(self, wait_s: float) -> Any:
        """Enqueue one no-op job, await its result (at most ``wait_s``) through the tool's API;
        return its handle."""
        raise NotImplementedError

    async def done(self, kind: str, handles: list[Any]) -> bool:
        raise NotImplementedError

    async def verify(self, kind: str, handles: list[Any], sample: Sequence[int]) -> dict[str, Any]:
        raise NotImplementedError


# --------------------------------------------------------------------------- helpers for adapters


def sample_indices(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices of ``range(n)`` (all when ``k >= n``), first and last included."""
    if n <= 0:
        return []
    if k >= n:
        return list(range(n))
    k = max(k, 2)
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def verdict(checks: dict[str, Any], ok: bool, why: str | None = None) -> dict[str, Any]:
    out = {"verified": bool(ok), **checks}
    if not ok:
        out["why"] = why or json.dumps(checks, default=str)
    return out


class PrefixPoll:
    """Completion by result keys when a tool keeps no count: EXISTS on the first missing key.

    ``exists(keys) -> int`` (a pipelined EXISTS of the tool's result keys) is called with one
    key while the oldest unfinished job is still unfinished, and with the next ``chunk`` keys
    once it is done, so a poll costs one command most of the time whatever N is.
    """

    def __init__(self, keys: list[str], chunk: int = 256) -> None:
        self.keys = keys
        self.pos = 0
        self.chunk = chunk

    async def done(self, exists: Any) -> bool:
        while self.pos < len(self.keys):
            if not await exists(self.keys[self.pos:self.pos + 1]):
                return False
            self.pos += 1
            batch = self.keys[self.pos:self.pos + self.chunk]
            if batch and await exists(batch) == len(batch):
                self.pos += len(batch)
        return True


# --------------------------------------------------------------------------- the worker process


class WorkerProcess:
    """The tool's worker CLI, in its own process group, output to a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], tmp: Path) -> None:
        self.cmd = [sys.executable, *argv]
        self.env = child_env(env)
        self.log_path = tmp / "worker.log"
        self.pid_path = tmp / "worker.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=REPO_ROOT, process_group=0)
        self.pid_path.write_text(str(self.proc.pid))
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the worker, wait; SIGKILL its process group if it did not exit. Its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        kill_group(self.proc.pid)  # the worker's own children (pools, work horses), if any are left
        rc = self.proc.wait()
        self.pid_path.unlink(missing_ok=True)
        return rc

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def kill_group(pgid: int) -> None:
    """SIGKILL the process group a WorkerProcess created (its id is the worker's pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# --------------------------------------------------------------------------- the driver (child)


def _adapter(params: dict[str, Any]) -> Adapter:
    """Import the tool's module (after the environment it reads is set) and build its Adapter."""
    spec = tool(params["tool"])
    os.environ[ENV_URL] = params["url"]
    for key, env in (("concurrency", ENV_CONCURRENCY), ("threads", ENV_THREADS)):
        if params.get(key):
            os.environ[env] = str(params[key])
        else:
            os.environ.pop(env, None)
    os.environ[ENV_QUIET] = "1" if params.get("quiet", True) else "0"
    os.environ.pop(ENV_MARK, None)
    module = importlib.import_module(spec.module)
    adapter: Adapter = module.Adapter(params["url"], params)
    return adapter


def _worker_env(params: dict[str, Any], mark: Path | None) -> dict[str, str]:
    env = {ENV_URL: params["url"], ENV_QUIET: "1" if params.get("quiet", True) else "0"}
    if params.get("concurrency"):
        env[ENV_CONCURRENCY] = str(params["concurrency"])
    if params.get("threads"):
        env[ENV_THREADS] = str(params["threads"])
    if mark is not None:
        env[ENV_MARK] = str(mark)
    return env


async def drive(params: dict[str, Any]) -> dict[str, Any]:
    """Driver process entry point: one measurement of one tool; returns the result fields."""
    adapter = _adapter(params)
    kind = KINDS[params["scenario"]]
    tmp = Path(params["tmp"])
    out: dict[str, Any] = {"settings": adapter.settings(kind)}
    await adapter.open()
    worker: WorkerProcess | None = None
    try:
        if params["scenario"] == "J2":
            worker = WorkerProcess(adapter.worker_argv(kind), _worker_env(params, None), tmp)
            out.update(await _roundtrips(adapter, worker, params))
        else:
            mark = tmp / "first-start"
            worker = WorkerProcess(adapter.worker_argv(kind), _worker_env(params, mark), tmp)
            out.update(await _drain(adapter, worker, kind, mark, params))
    except Exception as exc:  # reported as an invalid run, with the worker's output
        out.setdefault("error", f"{type(exc).__name__}: {exc}")
    finally:
        if worker is not None:
            t_stop = time.monotonic()
            out["worker_exit"] = worker.stop(float(params.get("stop_timeout", 30)))
            out["worker_stop_s"] = round(time.monotonic() - t_stop, 2)
            if "error" in out or not out.get("verified"):
                out["worker_log"] = worker.log_tail()
        with contextlib.suppress(Exception):
            await adapter.close()
    return out


async def _wait(predicate: Any, worker: WorkerProcess, poll: float, deadline: float, what: str) -> None:
    while not await predicate():
        if not worker.alive():
            raise RuntimeError(f"worker exited ({worker.proc.returncode if worker.proc else None}) "
                               f"while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)


def _first_start(mark: Path) -> float | None:
    """The first job's start (time.time() in the worker), None before a job started."""
    try:
        text = mark.read_text()
    except FileNotFoundError:
        return None
    return float(text) if text else None  # empty: created, not yet written


async def _drain(adapter: Adapter, worker: WorkerProcess, kind: str, mark: Path,
                 params: dict[str, Any]) -> dict[str, Any]:
    n, poll = int(params["n"]), float(params.get("poll_s", 0.002))
    t0 = time.perf_counter()
    handles = await adapter.enqueue(kind, n)
    preload_s = time.perf_counter() - t0
    if len(handles) != n:
        raise RuntimeError(f"enqueued {len(handles)} of {n}")
    if await adapter.done(kind, handles):
        raise RuntimeError("completion check is true before the worker started (broken check)")
    worker.start()
    deadline = time.monotonic() + float(params.get("timeout_s", 120))

    async def marked() -> bool:
        return _first_start(mark) is not None

    await _wait(marked, worker, 0.01, deadline, "the first job to start")
    await _wait(lambda: adapter.done(kind, handles), worker, poll, deadline, f"{n} jobs to complete")
    t_done = time.time()
    t_first = _first_start(mark) or t_done
    seconds = t_done - t_first
    check = await adapter.verify(kind, handles, sample_indices(n, int(params.get("verify_sample", 1000))))
    out: dict[str, Any] = {"n": n, "seconds": round(seconds, 4), "jobs_per_s": round(n / seconds, 1),
                           "preload_s": round(preload_s, 3), **check}
    if kind != "noop":
        slots = int(params.get("threads") or params.get("concurrency") or 0)
        if slots:
            ideal = slots / SLEEP_S
            out.update(slots=slots, ideal_per_s=ideal, pct_of_ideal=round(100 * n / seconds / ideal, 1))
    return out


async def _roundtrips(adapter: Adapter, worker: WorkerProcess, params: dict[str, Any]) -> dict[str, Any]:
    n, warmup = int(params["n"]), int(params.get("warmup", 20))
    timeout = float(params.get("roundtrip_timeout", 10))
    worker.start()
    t_start = time.monotonic()
    await adapter.roundtrip(float(params.get("startup_timeout", 60)))  # waits out worker start-up
    startup_s = time.monotonic() - t_start
    for _ in range(warmup):
        await adapter.roundtrip(timeout)
    samples: list[float] = []
    handles: list[Any] = []
    for _ in range(n):
        if not worker.alive():
            raise RuntimeError("worker exited during the round trips")
        t0 = time.perf_counter()
        handles.append(await adapter.roundtrip(timeout))
        samples.append(time.perf_counter() - t0)
    # a result can be readable a moment before the tool's bookkeeping (ack) of its job is done
    await _wait(lambda: adapter.done("noop", handles), worker, 0.002, time.monotonic() + 10,
                "the last job's acknowledgement")
    check = await adapter.verify("noop", handles, range(n))
    return {"n": n, "warmup": warmup, "first_roundtrip_s": round(startup_s, 3), **percentiles_ms(samples),
            **check}


# --------------------------------------------------------------------------- the parent's side


def run_driver(python: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run :func:`drive` in a fresh ``python`` process; kill any worker it left behind."""
    with tempfile.TemporaryDirectory(prefix="sf-jobs-") as tmp_name:
        tmp = Path(tmp_name)
        result, log = tmp / "result.json", tmp / "driver.log"
        cmd = [python, str(REPO_ROOT / "benchmarks" / "common.py"),
               "--child", "benchmarks.jobpeers.base:drive",
               "--params", json.dumps({**params, "tmp": tmp_name}), "--result-file", str(result)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=REPO_ROOT)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its handle
            proc.wait()
            rc = None
        finally:
            pid_file = tmp / "worker.pid"
            if pid_file.exists():  # the driver died before stopping its worker
                with contextlib.suppress(ValueError):
                    kill_group(int(pid_file.read_text()))
        if rc == 0 and result.exists():
            res: dict[str, Any] = json.loads(result.read_text())
            return res
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        return {"error": "driver timed out" if rc is None else f"driver exited with {rc}", "driver_log": tail}


PROBE = """
import importlib, importlib.metadata as m, json, sys
mods, dists, attrs = (json.loads(a) for a in sys.argv[1:4])
out = {"python": sys.version.split()[0], "missing": []}
name = ""
try:
    for name in mods:
        importlib.import_module(name)
    for path in attrs:
        name, _, dotted = path.partition(":")
        obj = importlib.import_module(name)
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            out["missing"].append(path)
except Exception as exc:
    out["error"] = f"{name}: {type(exc).__name__}: {exc}"
versions = {}
for d in dists + ["redis"]:
    try:
        versions[d] = m.version(d)
    except m.PackageNotFoundError:
        versions[d] = None
out["versions"] = versions
print(json.dumps(out))
"""


def probe(python: str, imports: Sequence[str], dists: Sequence[str],
          attrs: Sequence[str] = ()) -> dict[str, Any]:
    """Whether ``imports`` import under ``python`` (in a subprocess: no side effects here), the
    versions of ``dists``, and which ``module:attr.path`` of ``attrs`` are ``missing``."""
    try:
        done = subprocess.run([python, "-c", PROBE, *(json.dumps(list(a)) for a in (imports, dists, attrs))],
                              capture_output=True, text=True, timeout=120, env=child_env(), cwd=REPO_ROOT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip()[-500:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
