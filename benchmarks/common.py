"""Shared benchmark plumbing: private server, fast preload, verification, child processes, output.

Every benchmark script prints one JSON object per line (machine info, one line per
measured run, one line per summary/ratio) and, unless ``--json-only``, a short human
table at the end. Progress goes to stderr.

Each measurement runs in a fresh Python process (:func:`run_child`), so no
implementation inherits a warm heap, imported modules or a patched event loop from
another one. The child writes its result to a file; the parent verifies the group
afterwards (:func:`verify_group`): pending 0 and lag 0, else the run is ``valid: false``.

This file is also the child entry point: ``python benchmarks/common.py --child
module:function --params JSON --result-file PATH`` runs ``await function(params)``
under ``anyio.run`` (with uvloop when ``params["uvloop"]``) and writes its return value.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path and sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(REPO_ROOT)  # run as a script: import from the repo root, not benchmarks/
elif str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402

from streamflow.embedded import ServerProcess, find_server_binary, system_redis_binary  # noqa: E402

# --------------------------------------------------------------------------- payloads

#: The field ``App.publish`` writes; ``Message.payload`` decodes it as JSON.
SF_FIELD = b"sf:json"
GROUP = "bench"
SCENARIOS = ("noop", "sleep", "json")
VALUES = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]
_VALUES_JSON = json.dumps(VALUES, separators=(",", ":")).encode()
_TEMPLATE = (
    b'{"id":%d,"ts":%.6f,"user":"user-%08d","kind":"order.created","values":' + _VALUES_JSON + b"}"
)
FIXED_TS = 1732312345.123456


def payload_bytes(i: int, ts: float = FIXED_TS) -> bytes:
    """The ~130-byte compact JSON used by every benchmark (``ts``: publish time, seconds)."""
    return _TEMPLATE % (i, ts, i)


def payload_obj(i: int, ts: float = FIXED_TS) -> dict[str, Any]:
    """The same payload as a dict (for peers whose publishers serialise themselves)."""
    return json.loads(payload_bytes(i, ts))


def cpu_work(obj: dict[str, Any]) -> int:
    """Scenario (c)'s small CPU work on a decoded payload."""
    return sum(obj["values"])


# --------------------------------------------------------------------------- arguments


def make_parser(description: str, *, messages: int, runs: int) -> argparse.ArgumentParser:
    """The options every script shares; scripts add their own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--redis-url", default=None,
                   help="use this server (default: start a private redis-server on a free port)")
    p.add_argument("--messages", type=int, default=messages, help=f"messages per run (default {messages})")
    p.add_argument("--runs", type=int, default=runs, help=f"runs per measurement, median reported "
                   f"(default {runs})")
    p.add_argument("--json-only", action="store_true", help="print only the JSON lines, no table")
    p.add_argument("--uvloop", action="store_true", help="run every consumer process on uvloop")
    return p


def progress(text: str) -> None:
    """A progress line on stderr (stdout stays JSON + the final table)."""
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- server


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """Yield ``url``, or start a private redis-server (no persistence) and yield its URL."""
    if url:
        yield url
        return
    binary = system_redis_binary() or find_server_binary("redis")
    server = ServerProcess(binary, args=["--save", "", "--appendonly", "no"])
    server.start()
    progress(f"started private {server.kind} {'.'.join(map(str, server.version))} at {server.url}")
    try:
        yield server.url
    finally:
        server.stop()


def sync_client(url: str) -> redis.Redis:
    """A plain redis-py client (bytes replies)."""
    return redis.Redis.from_url(url, protocol=2)


# --------------------------------------------------------------------------- preload


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class RawConnection:
    """A blocking socket speaking RESP, replies parsed by hiredis: pipelines ~10x redis-py's."""

    def __init__(self, url: str) -> None:
        import hiredis

        parts = urlsplit(url)
        if parts.scheme == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(parts.path)
            db = 0
        elif parts.scheme == "redis":
            self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            db = int(parts.path.strip("/") or 0)
        else:
            raise ValueError(f"unsupported scheme {parts.scheme!r}")
        self.reader = hiredis.Reader()
        if parts.password:
            user = unquote(parts.username or "default").encode()
            self.call_many([resp(b"AUTH", user, unquote(parts.password).encode())])
        if db:
            self.call_many([resp(b"SELECT", str(db).encode())])

    def call_many(self, commands: Sequence[bytes]) -> list[Any]:
        self.sock.sendall(b"".join(commands))
        replies: list[Any] = []
        while len(replies) < len(commands):
            reply = self.reader.gets()
            if reply is False:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.reader.feed(data)
                continue
            if isinstance(reply, Exception):
                raise reply
            replies.append(reply)
        return replies

    def close(self) -> None:
        self.sock.close()


def xadd_many(url: str, stream: str, entries: Iterable[Sequence[bytes]], *, chunk: int = 5000) -> int:
    """XADD every flat ``[field, value, ...]`` entry to ``stream`` (pipelined); return the count."""
    key = stream.encode()
    n = 0
    try:
        conn: RawConnection | None = RawConnection(url)
    except (ImportError, ValueError):
        conn = None
    if conn is None:  # TLS or no hiredis: plain redis-py pipelines
        client = sync_client(url)
        pipe = client.pipeline(transaction=False)
        for fields in entries:
            pipe.execute_command("XADD", key, "*", *fields)
            n += 1
            if n % chunk == 0:
                pipe.execute()
        pipe.execute()
        client.close()
        return n
    try:
        batch: list[bytes] = []
        for fields in entries:
            batch.append(resp(b"XADD", key, b"*", *fields))
            if len(batch) == chunk:
                conn.call_many(batch)
                n += len(batch)
                batch = []
        if batch:
            conn.call_many(batch)
            n += len(batch)
    finally:
        conn.close()
    return n


def preload(
    url: str,
    stream: str,
    n: int,
    *,
    group: str | None = GROUP,
    entry: Callable[[int], Sequence[bytes]] | None = None,
) -> float:
    """Delete ``stream``, add ``n`` entries (default: the ``sf:json`` payload), create ``group`` at 0.

    Returns the seconds the XADDs took.
    """
    client = sync_client(url)
    client.delete(stream)
    make = entry or (lambda i: (SF_FIELD, payload_bytes(i)))
    t0 = time.perf_counter()
    xadd_many(url, stream, (make(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    if group is not None:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    client.close()
    return elapsed


# --------------------------------------------------------------------------- verification


def group_state(client: redis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    """XINFO GROUPS row of ``group`` (keys: pending, lag, entries-read, ...), or None."""
    for row in client.xinfo_groups(stream):
        name = row["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return dict(row)
    return None


def verify_group(url: str, stream: str, group: str, expected: int) -> dict[str, Any]:
    """Check that ``group`` read all ``expected`` entries and acked them: pending 0 and lag 0."""
    client = sync_client(url)
    try:
        row = group_state(client, stream, group)
        if row is None:
            return {"valid": False, "why": "group missing"}
        pending, lag, read = row.get("pending"), row.get("lag"), row.get("entries-read")
        if lag is None:  # Redis cannot tell (e.g. after XDEL): compare ids instead
            last = client.xinfo_stream(stream)["last-generated-id"]
            lag = 0 if row["last-delivered-id"] == last else -1
        ok = pending == 0 and lag == 0 and (read is None or read >= expected)
        out: dict[str, Any] = {"valid": ok, "pending": pending, "lag": lag, "entries_read": read}
        if not ok:
            out["why"] = f"pending={pending} lag={lag} entries-read={read} expected={expected}"
        return out
    finally:
        client.close()


async def wait_group_done(url: str, stream: str, group: str, limit: float = 30.0) -> bool:
    """Poll (1 ms) until ``group`` has pending 0 and lag 0; False after ``limit`` seconds."""
    import anyio
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, protocol=2)
    deadline = time.monotonic() + limit
    try:
        while True:
            for row in await client.xinfo_groups(stream):
                name = row["name"]
                if (name.decode() if isinstance(name, bytes) else name) == group and \
                        row["pending"] == 0 and row.get("lag") == 0:
                    return True
            if time.monotonic() > deadline:
                return False
            await anyio.sleep(0.001)
    finally:
        await client.aclose()


def delete_keys(url: str, *keys: str) -> None:
    """Free the server's memory between measurements."""
    client = sync_client(url)
    try:
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# --------------------------------------------------------------------------- child processes


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes: the repo on PYTHONPATH (``benchmarks.*`` importable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


class Child:
    """``await target(params)`` in a fresh Python process (see :func:`_child_main`)."""

    def __init__(self, target: str, params: dict[str, Any], prefix: Sequence[str] = ()) -> None:
        self.target = target
        self.params = params
        self.prefix = list(prefix)  # e.g. a profiler: ["py-spy", "record", ..., "--"]
        self._tmp = tempfile.TemporaryDirectory(prefix="sf-bench-")
        self.result_file = Path(self._tmp.name) / "result.json"
        self.log_file = Path(self._tmp.name) / "output.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        cmd = [*self.prefix, sys.executable, str(Path(__file__).resolve()), "--child", self.target,
               "--params", json.dumps(self.params), "--result-file", str(self.result_file)]
        with open(self.log_file, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(),
                                         cwd=REPO_ROOT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> dict[str, Any]:
        """The child's result, or ``{"error": ..., "log": <tail of its output>}``."""
        assert self.proc is not None
        try:
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our own child, by its Popen handle
                self.proc.wait()
                return {"error": f"timed out after {timeout:.0f}s", "log": _tail(self.log_file)}
            if rc != 0 or not self.result_file.exists():
                return {"error": f"child exited with {rc}", "log": _tail(self.log_file)}
            result: dict[str, Any] = json.loads(self.result_file.read_text())
            return result
        finally:
            self._tmp.cleanup()


def run_child(target: str, params: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run ``await target(params)`` in a fresh Python process and return its result dict.

    On a crash or timeout the result is ``{"error": ..., "log": <tail of its output>}``.
    """
    return Child(target, params).start().wait(timeout)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM a process we started (by its handle), SIGKILL it after ``timeout``; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def read_rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid`` in kB from /proc/<pid>/status ({} if gone)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


def percentiles_ms(samples: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/p999/max/mean of latencies given in seconds, in milliseconds."""
    if not samples:
        return {k: None for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")}
    v = sorted(samples)

    def pct(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * len(v)))] * 1000, 3)

    return {"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
            "max_ms": round(v[-1] * 1000, 3), "mean_ms": round(sum(v) / len(v) * 1000, 3)}


def _child_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--child", required=True)
    p.add_argument("--params", required=True)
    p.add_argument("--result-file", required=True)
    args = p.parse_args(argv)
    params = json.loads(args.params)
    import anyio

    from streamflow.logging import configure_logging

    configure_logging(params.get("log_level", "warning"), "console")
    module_name, func_name = args.child.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    options = {"use_uvloop": True} if params.get("uvloop") else {}
    result = anyio.run(func, params, backend="asyncio", backend_options=options)
    Path(args.result_file).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- results


def median(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def emit(obj: dict[str, Any]) -> None:
    """Print one result as one JSON line on stdout."""
    print(json.dumps(obj, separators=(", ", ": ")), flush=True)


def load1() -> float | None:
    """The 1-minute load average (other work on the machine skews every number)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(url: str) -> dict[str, Any]:
    """CPU, cores, Python, library versions and the server's version (for the report)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    client = sync_client(url)
    try:
        info = client.info("server")
    finally:
        client.close()
    server = f"{info.get('server_name', 'redis')} {info.get('valkey_version') or info.get('redis_version')}"
    return {
        "bench": "machine", "cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
        "python": platform.python_version(), "redis_py": _version("redis"),
        "hiredis": _version("hiredis"), "anyio": _version("anyio"), "uvloop": _version("uvloop"),
        "orjson": _version("orjson"),
        "streamflow": _version("streamflow-redis"), "faststream": _version("faststream"),
        "taskiq_redis": _version("taskiq-redis"), "server": server, "load1": load1(),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) or
               all(str(row[i]).endswith("x") and str(row[i])[:-1].replace(".", "").isdigit()
                   for row in rows if row[i]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], json_only: bool) -> None:
    """Print the human table (skipped with ``--json-only``)."""
    if json_only:
        return
    print()
    print(title)
    print(table(headers, rows))


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
