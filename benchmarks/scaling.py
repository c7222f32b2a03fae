"""Scaling: 1 vs 2 worker processes (the real CLI) draining the same preloaded stream.

For each process count: preload ``--messages`` entries, start the workers
(``python -m streamflow run benchmarks.apps:<scenario>_app``, one consumer group, a
consumer per process), wait until every worker is connected and gated in its startup
hook, then open the gate and time until the group has pending 0 and lag 0 (polled
every 2 ms). Process start-up is not timed. Workers are stopped with SIGTERM after.

On a 2-core machine the Redis server needs one of the cores, so two workers compete
with it: expect well under 2x there.

    python benchmarks/scaling.py [--messages 200000] [--runs 3] [--processes 1,2] [--scenario noop|json]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repo root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import (
    GROUP,
    REPO_ROOT,
    child_env,
    delete_keys,
    emit,
    group_state,
    load1,
    machine_info,
    make_parser,
    median,
    preload,
    print_table,
    progress,
    redis_server,
    stop_process,
    sync_client,
    verify_group,
)


def measure(url: str, procs: int, run: int, args: Any) -> dict[str, Any]:
    n = args.messages
    stream = f"bench:scaling:{procs}:{run}"
    gate = f"{stream}:gate"
    preload(url, stream, n)
    env = child_env({"BENCH_STREAM": stream, "BENCH_GROUP": GROUP, "BENCH_GATE": gate,
                     "BENCH_CONCURRENCY": str(args.concurrency),
                     "STREAMFLOW_LOOP": "uvloop" if args.uvloop else "asyncio"})
    cmd = [sys.executable, "-m", "streamflow", "run", f"benchmarks.apps:{args.scenario}_app",
           "--redis-url", url, "--log-level", "warning", "--log-format", "console"]
    client = sync_client(url)
    workers: list[tuple[subprocess.Popen[bytes], Any]] = []
    seconds = None
    why = None
    try:
        for _ in range(procs):
            log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
            workers.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                             cwd=REPO_ROOT), log))
        deadline = time.monotonic() + 60
        while int(client.get(f"{gate}:ready") or 0) < procs:
            if time.monotonic() > deadline or any(p.poll() is not None for p, _ in workers):
                why = "workers did not start"
                break
            time.sleep(0.01)
        if why is None:
            t0 = time.perf_counter()
            client.set(f"{gate}:go", 1)
            deadline = time.monotonic() + 60 + n / 1000
            while True:
                row = group_state(client, stream, GROUP) or {}
                if row.get("pending") == 0 and row.get("lag") == 0:
                    seconds = time.perf_counter() - t0
                    break
                if time.monotonic() > deadline:
                    why = f"not drained in time: {row}"
                    break
                time.sleep(0.002)
    finally:
        codes = [stop_process(p) for p, _ in workers]
        for p, log in workers:
            if p.returncode not in (0, None) or why:
                log.seek(0)
                progress("--- worker output ---\n" + log.read().decode(errors="replace")[-3000:])
            log.close()
        client.close()
    check = verify_group(url, stream, GROUP, n)
    delete_keys(url, stream, f"{gate}:ready", f"{gate}:go")
    valid = seconds is not None and check["valid"] and all(c == 0 for c in codes)
    line: dict[str, Any] = {
        "bench": "scaling", "scenario": args.scenario, "processes": procs, "run": run, "msgs": n,
        "seconds": round(seconds, 4) if seconds else None, "rate": round(n / seconds) if seconds else None,
        "valid": valid, "exit_codes": codes, "concurrency": args.concurrency,
        "loop": "uvloop" if args.uvloop else "asyncio", "load1": load1(),
    }
    if not valid:
        line["why"] = why or check.get("why") or f"exit codes {codes}"
    emit(line)
    return line


def main() -> int:
    p = make_parser(__doc__.splitlines()[0], messages=200_000, runs=3)
    p.add_argument("--processes", default="1,2", help="process counts, comma-separated (default 1,2)")
    p.add_argument("--scenario", default="noop", choices=["noop", "json"])
    p.add_argument("--concurrency", type=int, default=1000, help="handler concurrency (default 1000)")
    args = p.parse_args()
    counts = [int(c) for c in args.processes.split(",") if c]
    results = []
    with redis_server(args.redis_url) as url:
        emit(machine_info(url))
        for run in range(1, args.runs + 1):
            for procs in counts:
                progress(f"[scaling] {procs} process(es) run {run}/{args.runs}")
                results.append(measure(url, procs, run, args))
    medians = {c: median(r["rate"] for r in results if r["processes"] == c and r["valid"]) for c in counts}
    base = medians.get(counts[0])
    rows = []
    for c in counts:
        ok = sum(1 for r in results if r["processes"] == c and r["valid"])
        ratio = medians[c] / base if medians[c] and base else None
        emit({"bench": "scaling", "summary": True, "scenario": args.scenario, "processes": c,
              "valid_runs": ok, "rate_median": medians[c],
              "ratio_vs_first": round(ratio, 3) if ratio else None})
        rows.append([c, f"{ok}/{args.runs}", medians[c], f"{ratio:.2f}x" if ratio else ""])
    print_table(f"scaling: {args.scenario} handlers, msg/s consumed + acked by N worker processes",
                ["processes", "valid", "median msg/s", f"vs {counts[0]}"], rows, args.json_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
