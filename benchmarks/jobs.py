"""Job queues side by side: streamflow's jobs vs streaq, saq, taskiq, arq, dramatiq, Celery, rq.

Each tool runs the way its users run it: its own worker CLI in a subprocess (one worker
process, the tool's defaults except where a scenario needs a concurrency), results stored,
against one private redis-server (``--save "" --appendonly no``, a free loopback port,
FLUSHALL before every run). See benchmarks/jobpeers/ for each tool's setup and how its
completion is verified.

Scenarios:

* ``J1``: N no-op jobs with results, preloaded through the tool's API (not timed); the
  worker starts; timed from the first job's start (a timestamp the job writes) until the
  tool's own state shows all N complete (polled every ``--poll-ms``). Reports jobs/s.
* ``J2``: with the worker running, enqueue one job and await its result through the tool's
  API, ``--roundtrips`` times in a row (after ``--warmup``). Reports p50/p99 ms.
* ``J3a``: ``--sleep-jobs`` jobs doing ``await asyncio.sleep(0.01)`` at concurrency
  ``--async-concurrency`` (100): async-capable tools. Ideal: 10,000 jobs/s.
* ``J3b``: the same number of jobs doing ``time.sleep(0.01)`` on ``--threads`` (32) worker
  threads: tools with threaded workers. Ideal: 3,200 jobs/s.

Every run is verified through the tool's own state (counts in its keys, results read back
through its API); a run that does not verify is ``valid: false`` and left out of the
medians. Runs are interleaved (run 1 of every tool, then run 2, ...). A tool that is not
installed, or a scenario it cannot run, gets a ``skipped`` line.

    python benchmarks/jobs.py [--tools streamflow,arq,...] [--scenarios J1,J2,J3a,J3b] [--runs 3]
        [--n-streamflow 100000] [--n-peer 2000] [--n-tool TOOL=N] [--roundtrips 500]
        [--sleep-jobs 5000] [--python TOOL=PATH] [--table] [--json-only]

stdout: JSON lines only; the side-by-side table goes to stderr (``--table``: to stdout
after the JSON lines; ``--json-only``: nowhere).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repo root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import emit, load1, machine_info, median, progress, redis_server, sync_client, table
from benchmarks.jobpeers import KINDS, SCENARIOS, SLEEP_S, TOOL_NAMES, ToolSpec, tool
from benchmarks.jobpeers.base import probe, run_driver

SF_SKIP = "streamflow jobs API not available"


def _pairs(values: list[str], what: str, cast: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or name not in TOOL_NAMES:
            raise SystemExit(f"{what}: expected TOOL=VALUE (TOOL: {', '.join(TOOL_NAMES)}); got {item!r}")
        out[name] = cast(value)
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tools", default=",".join(TOOL_NAMES), help="comma-separated (default: all installed)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: J1,J2,J3a,J3b")
    p.add_argument("--runs", type=int, default=3, help="runs per tool and scenario (default 3)")
    p.add_argument("--n-streamflow", type=int, default=100_000, help="J1 jobs, streamflow (default 100000)")
    p.add_argument("--n-peer", type=int, default=2_000, help="J1 jobs for each peer (default 2000)")
    p.add_argument("--n-tool", action="append", default=[], metavar="TOOL=N", help="J1 jobs for one tool")
    p.add_argument("--roundtrips", type=int, default=500,
                   help="J2 round trips (default 500; at most 100 for arq, 200 for rq-fork)")
    p.add_argument("--roundtrips-tool", action="append", default=[], metavar="TOOL=N",
                   help="J2 round trips for one tool")
    p.add_argument("--warmup", type=int, default=20, help="J2 untimed round trips first (default 20)")
    p.add_argument("--sleep-jobs", type=int, default=5_000, help="J3 jobs (default 5000)")
    p.add_argument("--async-concurrency", type=int, default=100, help="J3a concurrency (default 100)")
    p.add_argument("--threads", type=int, default=32, help="J3b worker threads (default 32)")
    p.add_argument("--peer-concurrency", type=int, default=None,
                   help="J1/J2 async concurrency of the async peers (default: each tool's own default)")
    p.add_argument("--python", action="append", default=[], metavar="TOOL=PATH",
                   help="interpreter (a venv's python) for one tool's driver and worker (default: this one)")
    p.add_argument("--poll-ms", type=float, default=2.0, help="completion poll interval, ms (default 2)")
    p.add_argument("--client-poll-ms", type=float, default=1.0,
                   help="J2 result poll, ms, where the tool's result API polls (saq, taskiq, arq; default 1)")
    p.add_argument("--verify-sample", type=int, default=1000,
                   help="jobs per run whose result is read back through the tool's API (default 1000)")
    p.add_argument("--worker-logs", choices=["quiet", "default"], default="quiet",
                   help="quiet (default): each worker's loggers at WARNING, no per-job lines; "
                        "default: the CLI's own default level")
    p.add_argument("--table", action="store_true", help="print the table on stdout (default: stderr)")
    p.add_argument("--json-only", action="store_true", help="no table")
    args = p.parse_args()
    args.tool_list = [t for t in args.tools.split(",") if t]
    args.scenario_list = [s for s in args.scenarios.split(",") if s]
    for name in args.tool_list:
        if name not in TOOL_NAMES:
            p.error(f"unknown tool {name!r}; choose from {', '.join(TOOL_NAMES)}")
    for s in args.scenario_list:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    args.n_by_tool = _pairs(args.n_tool, "--n-tool", int)
    args.roundtrips_by_tool = _pairs(args.roundtrips_tool, "--roundtrips-tool", int)
    args.python_by_tool = _pairs(args.python, "--python", str)
    return args


def run_params(spec: ToolSpec, scenario: str, args: argparse.Namespace, url: str) -> dict[str, Any]:
    """What the driver gets for one run: the size, the concurrency, the polls."""
    params: dict[str, Any] = {
        "tool": spec.name, "scenario": scenario, "url": url, "quiet": args.worker_logs == "quiet",
        "poll_s": args.poll_ms / 1000, "client_poll": args.client_poll_ms / 1000,
        "verify_sample": args.verify_sample, "warmup": args.warmup,
    }
    if scenario == "J1":  # an explicit --n-tool wins; a slow tool's own default only caps
        n = args.n_by_tool.get(spec.name) or (
            args.n_streamflow if not spec.peer else min(spec.n_default or args.n_peer, args.n_peer))
    elif scenario == "J2":
        n = args.roundtrips_by_tool.get(spec.name) or min(spec.roundtrips_default or args.roundtrips,
                                                          args.roundtrips)
    else:
        n = args.sleep_jobs
    params["n"] = n
    if scenario == "J3a":
        params["concurrency"] = args.async_concurrency
    elif scenario == "J3b":
        params["threads"] = args.threads
    elif spec.peer and args.peer_concurrency:
        params["concurrency"] = args.peer_concurrency
    params["timeout_s"] = 60 + n / 20
    return params


def measure(spec: ToolSpec, scenario: str, run: int, args: argparse.Namespace, url: str) -> dict[str, Any]:
    client = sync_client(url)
    try:
        client.flushall()  # the private server this script started, nothing else
    finally:
        client.close()
    params = run_params(spec, scenario, args, url)
    timeout = params["timeout_s"] + 120 if scenario != "J2" else 120 + params["n"] * 2
    res = run_driver(args.python_by_tool.get(spec.name, sys.executable), params, timeout)
    valid = "error" not in res and bool(res.get("verified"))
    line: dict[str, Any] = {"bench": "jobs", "scenario": scenario, "tool": spec.name, "run": run,
                            "n": res.get("n", params["n"])}
    if scenario == "J2":
        line.update({k: res.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")})
    else:
        line.update({k: res.get(k) for k in ("jobs_per_s", "seconds", "preload_s")})
        if scenario != "J1":
            line.update({k: res.get(k) for k in ("slots", "ideal_per_s", "pct_of_ideal")})
    line["valid"] = valid
    for key, value in res.items():
        if key not in line and key not in ("worker_log", "driver_log", "verified", "error", "why"):
            line[key] = value
    line["load1"] = load1()
    if not valid:
        line["why"] = res.get("error") or res.get("why") or "not verified"
        for key in ("worker_log", "driver_log"):
            if res.get(key):
                progress(f"--- {spec.name}/{scenario} {key.replace('_', ' ')} ---\n{res[key]}")
    emit(line)
    return line


def summarize(results: list[dict[str, Any]], tools: list[ToolSpec], scenarios: list[str],
              args: argparse.Namespace) -> list[list[Any]]:
    """Summary and ratio lines (JSON) and the table's rows."""
    rows: list[list[Any]] = []
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    for scenario in scenarios:
        for spec in tools:
            runs = [r for r in results if r["scenario"] == scenario and r["tool"] == spec.name]
            if not runs:
                continue
            ok = [r for r in runs if r["valid"]]
            s: dict[str, Any] = {"bench": "jobs", "summary": True, "scenario": scenario, "tool": spec.name,
                                 "n": runs[0]["n"], "runs": len(runs), "valid_runs": len(ok)}
            if scenario == "J2":
                s.update(p50_ms=median(r["p50_ms"] for r in ok), p99_ms=median(r["p99_ms"] for r in ok))
            else:
                s.update(jobs_per_s=median(r["jobs_per_s"] for r in ok),
                         jobs_per_s_min=min((r["jobs_per_s"] for r in ok), default=None),
                         jobs_per_s_max=max((r["jobs_per_s"] for r in ok), default=None))
                if scenario != "J1":
                    s["pct_of_ideal"] = median(r["pct_of_ideal"] for r in ok if r.get("pct_of_ideal"))
            summaries[(scenario, spec.name)] = s
            emit(s)
    for scenario in scenarios:
        sf = summaries.get((scenario, "streamflow"))
        for spec in tools:
            s = summaries.get((scenario, spec.name))
            if s is None:
                continue
            advantage = None
            if sf and spec.name != "streamflow":
                if scenario == "J2" and sf["p50_ms"] and s["p50_ms"]:
                    advantage = s["p50_ms"] / sf["p50_ms"]
                    emit({"bench": "jobs", "scenario": scenario, "ratio": f"{spec.name}/streamflow",
                          "metric": "p50_ms", "value": round(advantage, 3),
                          "p99_value": round(s["p99_ms"] / sf["p99_ms"], 3) if sf["p99_ms"] else None})
                elif scenario != "J2" and sf["jobs_per_s"] and s["jobs_per_s"]:
                    advantage = sf["jobs_per_s"] / s["jobs_per_s"]
                    emit({"bench": "jobs", "scenario": scenario, "ratio": f"streamflow/{spec.name}",
                          "metric": "jobs_per_s", "value": round(advantage, 3)})
            if scenario == "J2":
                metric = f"{_fmt(s['p50_ms'])} / {_fmt(s['p99_ms'])} ms"
            else:
                metric = f"{_fmt(s['jobs_per_s'])} jobs/s"
            rows.append([scenario, spec.name, s["n"], f"{s['valid_runs']}/{s['runs']}", metric,
                         f"{s['pct_of_ideal']:.0f}%" if s.get("pct_of_ideal") else "",
                         f"{advantage:.1f}x" if advantage else ""])
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def main() -> int:
    args = parse_args()
    specs = [tool(name) for name in args.tool_list]
    with redis_server(None) as url:  # always a private server: every run starts with FLUSHALL
        emit(machine_info(url))
        tools: list[ToolSpec] = []
        for spec in specs:
            python = args.python_by_tool.get(spec.name, sys.executable)
            attrs = ["streamflow:App.task"] if spec.name == "streamflow" else []
            info = probe(python, spec.imports, spec.dists, attrs)
            if info.get("error") or info.get("missing"):
                why = SF_SKIP if spec.name == "streamflow" and info.get("missing") else \
                    f"not installed: {info.get('error')}"
                emit({"bench": "jobs", "tool": spec.name, "skipped": why})
                progress(f"skipping {spec.name}: {why}")
                continue
            emit({"bench": "jobs", "tool": spec.name, "versions": info.get("versions"),
                  "python": info.get("python"), "interpreter": python})
            tools.append(spec)
        results: list[dict[str, Any]] = []
        for scenario in args.scenario_list:
            runnable = []
            for spec in tools:
                if scenario in spec.unsupported:
                    emit({"bench": "jobs", "scenario": scenario, "tool": spec.name,
                          "skipped": spec.unsupported[scenario]})
                else:
                    runnable.append(spec)
            for run in range(1, args.runs + 1):
                for spec in runnable:
                    progress(f"[jobs] {scenario} ({KINDS[scenario]}) {spec.name} run {run}/{args.runs}")
                    results.append(measure(spec, scenario, run, args, url))
        rows = summarize(results, tools, args.scenario_list, args)
    if not args.json_only and rows:
        text = table(["scenario", "tool", "n", "valid", "median", "% ideal", "streamflow advantage"], rows)
        title = (f"jobs: J1/J3 jobs/s (first job started -> all complete), J2 round trip p50 / p99; "
                 f"advantage = streamflow/peer for jobs/s, peer/streamflow for p50; J3 ideal = slots / "
                 f"{SLEEP_S * 1000:.0f} ms")
        print(f"\n{title}\n{text}", file=sys.stdout if args.table else sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
