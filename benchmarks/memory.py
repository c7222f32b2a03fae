"""Memory: peak RSS of a worker with a 1M-message backlog and slow handlers, vs an empty stream.

Preloads ``--messages`` (default 1,000,000) entries, then runs the real CLI
(``python -m streamflow run benchmarks.apps:slow_app``: handlers ``sleep`` 10 ms,
concurrency 100) as a subprocess for ``--duration`` seconds (default 12), sampling its
``VmRSS`` every 100 ms from ``/proc/<pid>/status`` and reading ``VmHWM`` (the kernel's
peak) at the end; then SIGTERM (graceful drain) and checks that the group has nothing
pending (lag is the unconsumed backlog, as intended). The same worker on an empty stream
gives the baseline. Memory must not grow with the backlog: the worker never holds
more than ``concurrency`` entries.

    python benchmarks/memory.py [--messages 1000000] [--duration 12] [--concurrency 100]
"""

from __future__ import annotations

import contextlib
import json
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
    read_rss_kb,
    redis_server,
    stop_process,
    sync_client,
)


def run_sampled(url: str, stream: str, backlog: int, args: Any) -> dict[str, Any]:
    """Run the slow-handler worker on ``stream`` for ``args.duration`` s; return RSS figures."""
    env = child_env({"BENCH_STREAM": stream, "BENCH_GROUP": GROUP, "BENCH_SLEEP": str(args.sleep),
                     "BENCH_CONCURRENCY": str(args.concurrency),
                     "STREAMFLOW_LOOP": "uvloop" if args.uvloop else "asyncio"})
    cmd = [sys.executable, "-m", "streamflow", "run", "benchmarks.apps:slow_app", "--redis-url", url,
           "--log-format", "json", "--log-level", "info"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        max_rss = 0
        hwm = 0
        samples = 0
        t0 = time.monotonic()
        died = False
        while time.monotonic() - t0 < args.duration:
            status = read_rss_kb(proc.pid)
            if proc.poll() is not None:
                died = True
                break
            max_rss = max(max_rss, status.get("VmRSS", 0))
            hwm = max(hwm, status.get("VmHWM", 0))
            samples += 1
            time.sleep(0.1)
        end = read_rss_kb(proc.pid)
        hwm = max(hwm, end.get("VmHWM", 0))
        elapsed = time.monotonic() - t0
        rc = stop_process(proc)
        log.seek(0)
        output = log.read().decode(errors="replace")
    handled = None
    for line in output.splitlines():
        if '"worker_stopped"' in line:
            with contextlib.suppress(ValueError):
                handled = json.loads(line).get("handled")
    client = sync_client(url)
    try:
        row = group_state(client, stream, GROUP) or {}
    finally:
        client.close()
    pending = row.get("pending")
    valid = not died and rc == 0 and pending == 0 and (backlog == 0 or bool(handled))
    result = {
        "rss_peak_mb": round(hwm / 1024, 1), "rss_max_sampled_mb": round(max_rss / 1024, 1),
        "rss_end_mb": round(end.get("VmRSS", 0) / 1024, 1), "samples": samples,
        "seconds": round(elapsed, 2), "handled": handled,
        "rate": round(handled / elapsed) if handled else None, "pending_after_stop": pending,
        "exit_code": rc, "valid": valid,
    }
    if not valid:
        result["why"] = "worker died" if died else f"exit={rc} pending={pending} handled={handled}"
        progress("--- worker output ---\n" + "\n".join(output.splitlines()[-25:]))
    return result


def main() -> int:
    p = make_parser(__doc__.splitlines()[0], messages=1_000_000, runs=1)
    p.add_argument("--duration", type=float, default=12.0, help="seconds the worker runs (default 12)")
    p.add_argument("--concurrency", type=int, default=100, help="handler concurrency (default 100)")
    p.add_argument("--sleep", type=float, default=0.01, help="handler sleep, seconds (default 0.01)")
    args = p.parse_args()

    results: dict[str, list[dict[str, Any]]] = {"empty": [], "backlog": []}
    with redis_server(args.redis_url) as url:
        emit(machine_info(url))
        for run in range(1, args.runs + 1):
            for case, n in (("empty", 0), ("backlog", args.messages)):
                stream = f"bench:memory:{case}:{run}"
                progress(f"[memory] {case} ({n:,} entries) run {run}/{args.runs}: preloading")
                pre = preload(url, stream, n)
                progress(f"[memory] preloaded in {pre:.1f}s; running the worker for {args.duration:g}s")
                res = run_sampled(url, stream, n, args)
                delete_keys(url, stream)
                line = {"bench": "memory", "case": case, "backlog": n, "run": run,
                        "concurrency": args.concurrency, "handler_sleep_s": args.sleep, **res,
                        "loop": "uvloop" if args.uvloop else "asyncio", "load1": load1()}
                emit(line)
                results[case].append(line)
    rows = []
    for case, lines in results.items():
        ok = [r for r in lines if r["valid"]]
        peak = median(r["rss_peak_mb"] for r in ok)
        emit({"bench": "memory", "summary": True, "case": case, "backlog": lines[0]["backlog"],
              "valid_runs": len(ok), "rss_peak_mb": peak, "rate": median(r["rate"] for r in ok)})
        rows.append([case, lines[0]["backlog"], f"{len(ok)}/{len(lines)}", peak,
                     median(r["rss_end_mb"] for r in ok), median(r["rate"] for r in ok)])
    print_table(f"memory: worker RSS, MB (slow handlers: sleep {args.sleep:g}s, concurrency "
                f"{args.concurrency})", ["case", "backlog", "valid", "peak RSS", "end RSS", "msg/s"],
                rows, args.json_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
