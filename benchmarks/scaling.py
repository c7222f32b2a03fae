"""Scaling: worker processes (the real CLI, ``run --processes N``) draining a preloaded
stream on one server and on a local 3-master Redis Cluster, side by side in one run.

Targets (``--targets``, each with its process counts):

* ``single``: one redis-server, a plain stream (``benchmarks.apps:noop_app``);
* ``single-partitioned``: one redis-server, the stream in ``--partitions`` partitions
  (``benchmarks.apps:partitioned_app``: what the same code does before a move);
* ``cluster``: a private cluster of 3 masters (no replicas: on a small machine they would
  take the masters' CPU), the stream in ``--partitions`` partitions spread over them.

For each run: preload ``--messages`` noop entries (spread evenly over the partitions), start
the workers and wait until each is gated in its start-up hook, open the gate, and time until
every partition's group has pending 0 and lag 0. The CPU time of every server process and of
every worker process is read from ``/proc/<pid>/stat`` before the gate opens and after the
drain: per message, per shard (server CPU of a master / entries that master served), and
the shard's utilisation (its CPU / the wall time). Those per-shard costs are what
docs/scaling.md projects larger clusters from.

On a 2-core machine the servers and the workers share two cores: absolute rates do not
scale here; the CPU per message does not depend on it.

    python benchmarks/scaling.py [--messages 200000] [--runs 3] [--targets single:1,2;cluster:1,2,3]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repo root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import redis

from benchmarks.common import (
    GROUP,
    REPO_ROOT,
    SF_FIELD,
    child_env,
    emit,
    load1,
    machine_info,
    make_parser,
    median,
    payload_bytes,
    print_table,
    progress,
    stop_process,
    xadd_many,
)
from streamflow.clustering import key_slot
from streamflow.embedded import LocalCluster, ServerProcess, find_server_binary, system_redis_binary
from streamflow.partitions import partition_keys

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


class Target:
    """Where a run goes: its URL, the stream keys and, per key, the server (pid, url)."""

    def __init__(self, name: str, url: str, app: str, keys: list[str],
                 servers: dict[str, tuple[int, str]]) -> None:
        self.name = name
        self.url = url  # what the workers get
        self.app = app  # benchmarks.apps:<app>
        self.keys = keys  # stream keys read
        self.servers = servers  # key -> (server pid, plain url of that server)

    def client(self) -> Any:
        any_url = next(iter(self.servers.values()))[1]
        if self.url.startswith("redis+cluster://"):
            return redis.RedisCluster.from_url(any_url, socket_timeout=30)
        return redis.Redis.from_url(any_url, socket_timeout=30)

    @property
    def pids(self) -> dict[int, str]:
        return {pid: url for pid, url in self.servers.values()}


@contextmanager
def single_server() -> Iterator[ServerProcess]:
    binary = system_redis_binary() or find_server_binary("redis")
    server = ServerProcess(binary, args=["--save", "", "--appendonly", "no"])
    server.start()
    progress(f"started private {server.kind} {'.'.join(map(str, server.version))} at {server.url}")
    try:
        yield server
    finally:
        server.stop()


def targets(names: list[str], partitions: int, server: ServerProcess,
            cluster: LocalCluster | None, stream: str) -> dict[str, Target]:
    out: dict[str, Target] = {}
    assert server.pid is not None
    if "single" in names:
        out["single"] = Target("single", server.url, "noop_app", [stream],
                               {stream: (server.pid, server.url)})
    keys = list(partition_keys(stream, partitions))
    if "single-partitioned" in names:
        out["single-partitioned"] = Target("single-partitioned", server.url, "partitioned_app", keys,
                                           {k: (server.pid, server.url) for k in keys})
    if "cluster" in names and cluster is not None:
        servers = {}
        for k in keys:
            node = cluster.master_of_slot(key_slot(k))
            assert node.pid is not None
            servers[k] = (node.pid, node.url)
        out["cluster"] = Target("cluster", cluster.url, "partitioned_app", keys, servers)
    return out


def preload(target: Target, n: int) -> None:
    for key in target.keys:
        plain = redis.Redis.from_url(target.servers[key][1])
        plain.delete(key)
        share = n // len(target.keys) + (1 if target.keys.index(key) < n % len(target.keys) else 0)
        xadd_many(target.servers[key][1], key, ((SF_FIELD, payload_bytes(i)) for i in range(share)))
        plain.xgroup_create(key, GROUP, id="0", mkstream=True)
        plain.close()


def drained(target: Target) -> tuple[bool, dict[str, Any]]:
    """Every key's group: pending 0 and lag 0?"""
    total_pending, total_lag = 0, 0
    for key in target.keys:
        plain = _clients.setdefault(target.servers[key][1],
                                    redis.Redis.from_url(target.servers[key][1]))
        rows = [r for r in plain.xinfo_groups(key) if r["name"] in (GROUP, GROUP.encode())]
        if not rows:
            return False, {"why": f"no group on {key}"}
        total_pending += rows[0]["pending"]
        total_lag += rows[0]["lag"] if rows[0]["lag"] is not None else 1
    return total_pending == 0 and total_lag == 0, {"pending": total_pending, "lag": total_lag}


_clients: dict[str, redis.Redis] = {}


def measure(target: Target, procs: int, run: int, args: Any) -> dict[str, Any]:
    n = args.messages
    gate = f"bench:scaling:gate:{target.name}:{procs}:{run}"
    preload(target, n)
    env = child_env({"BENCH_STREAM": args.stream, "BENCH_GROUP": GROUP, "BENCH_GATE": gate,
                     "BENCH_CONCURRENCY": str(args.concurrency),
                     "BENCH_PARTITIONS": str(args.partitions),
                     "STREAMFLOW_LOOP": "uvloop" if args.uvloop else "asyncio"})
    cmd = [sys.executable, "-m", "streamflow", "run", f"benchmarks.apps:{target.app}",
           "--redis-url", target.url, "--log-level", "warning", "--log-format", "console"]
    if procs > 1:
        cmd += ["--processes", str(procs)]
    client = target.client()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    seconds = None
    why = None
    cpu: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 60
        while int(client.get(f"{gate}:ready") or 0) < procs:
            if time.monotonic() > deadline or proc.poll() is not None:
                why = "workers did not start"
                break
            time.sleep(0.01)
        if why is None:
            workers = children(proc.pid) if procs > 1 else [proc.pid]
            servers0 = {pid: cpu_seconds(pid) for pid in target.pids}
            workers0 = sum(cpu_seconds(p) for p in workers)
            t0 = time.perf_counter()
            client.set(f"{gate}:go", 1)
            deadline = time.monotonic() + 120 + n / 1000
            while True:
                ok, state = drained(target)
                if ok:
                    seconds = time.perf_counter() - t0
                    break
                if time.monotonic() > deadline:
                    why = f"not drained in time: {state}"
                    break
                time.sleep(0.005)
            cpu["servers"] = sum(cpu_seconds(pid) - c for pid, c in servers0.items())
            cpu["workers"] = sum(cpu_seconds(p) for p in workers) - workers0
            per_server = {pid: cpu_seconds(pid) - c for pid, c in servers0.items()}
    finally:
        code = stop_process(proc)
        if code not in (0, None) or why:
            log.seek(0)
            progress("--- worker output ---\n" + log.read().decode(errors="replace")[-3000:])
        log.close()
        client.delete(f"{gate}:ready", f"{gate}:go")
        client.close()
    valid = seconds is not None and code == 0
    line: dict[str, Any] = {
        "bench": "scaling", "target": target.name, "processes": procs, "run": run, "msgs": n,
        "shards": len(target.pids), "partitions": len(target.keys),
        "seconds": round(seconds, 4) if seconds else None,
        "rate": round(n / seconds) if seconds else None, "valid": valid, "exit_code": code,
        "concurrency": args.concurrency, "loop": "uvloop" if args.uvloop else "asyncio",
        "load1": load1(),
    }
    if seconds:
        per_shard_msgs = {pid: 0 for pid in target.pids}
        for key in target.keys:
            per_shard_msgs[target.servers[key][0]] += n // len(target.keys)
        line["server_cpu_us_per_msg"] = round(cpu["servers"] / n * 1e6, 3)
        line["worker_cpu_us_per_msg"] = round(cpu["workers"] / n * 1e6, 3)
        line["shards_cpu_us_per_msg"] = [round(per_server[pid] / max(1, per_shard_msgs[pid]) * 1e6, 3)
                                         for pid in sorted(target.pids)]
        line["shards_utilisation"] = [round(per_server[pid] / seconds, 3)
                                      for pid in sorted(target.pids)]
    if not valid:
        line["why"] = why or f"exit code {code}"
    emit(line)
    return line


def parse_targets(text: str) -> list[tuple[str, list[int]]]:
    out = []
    for part in text.split(";"):
        name, _, counts = part.partition(":")
        out.append((name.strip(), [int(c) for c in counts.split(",") if c] or [1]))
    return out


def main() -> int:
    p = make_parser(__doc__.splitlines()[0], messages=200_000, runs=3)
    p.add_argument("--targets", default="single:1,2;single-partitioned:1;cluster:1,2,3",
                   help="TARGET:COUNTS;... (default single:1,2;single-partitioned:1;cluster:1,2,3)")
    p.add_argument("--partitions", type=int, default=12, help="partitions of the stream (default 12)")
    p.add_argument("--concurrency", type=int, default=1000, help="handler concurrency (default 1000)")
    p.add_argument("--stream", default="bench:scaling", help="stream name (default bench:scaling)")
    args = p.parse_args()
    plan = parse_targets(args.targets)
    names = [name for name, _ in plan]
    results = []
    with single_server() as server:
        emit(machine_info(server.url))
        cluster = LocalCluster(masters=3, replicas=0, name="streamflow-bench-cluster") \
            if "cluster" in names else None
        try:
            if cluster is not None:
                cluster.start()
                progress(f"started a 3-master cluster ({cluster.kind}) at {cluster.url}")
            where = targets(names, args.partitions, server, cluster, args.stream)
            for run in range(1, args.runs + 1):
                for name, counts in plan:
                    for procs in counts:
                        progress(f"[scaling] {name}: {procs} process(es), run {run}/{args.runs}")
                        results.append(measure(where[name], procs, run, args))
        finally:
            if cluster is not None:
                cluster.stop()
    rows = []
    base = None
    for name, counts in plan:
        for c in counts:
            mine = [r for r in results if r["target"] == name and r["processes"] == c and r["valid"]]
            rate = median(r["rate"] for r in mine)
            srv = median(r["server_cpu_us_per_msg"] for r in mine)
            wrk = median(r["worker_cpu_us_per_msg"] for r in mine)
            shard = median(max(r["shards_cpu_us_per_msg"]) for r in mine)
            base = base or rate
            ratio = rate / base if rate and base else None
            emit({"bench": "scaling", "summary": True, "target": name, "processes": c,
                  "valid_runs": len(mine), "rate_median": rate, "ratio_vs_first": ratio and round(ratio, 3),
                  "server_cpu_us_per_msg": srv, "worker_cpu_us_per_msg": wrk,
                  "max_shard_cpu_us_per_msg": shard})
            rows.append([name, c, f"{len(mine)}/{args.runs}", rate, f"{ratio:.2f}x" if ratio else "",
                         srv, shard, wrk])
    print_table("scaling: noop handlers, msg/s consumed + acked; CPU us per message",
                ["target", "processes", "valid", "median msg/s", "vs first", "server us/msg",
                 "shard us/msg (max)", "worker us/msg"], rows, args.json_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
