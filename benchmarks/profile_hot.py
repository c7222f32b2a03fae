"""Where the time goes: one throughput run under py-spy, summarised per function.

Preloads ``--messages`` entries, runs one consumer child process (the same code as
throughput.py) under ``py-spy record --format raw`` and prints the functions with the
most samples: ``self`` (the function itself was on top of the stack) and ``total``
(anywhere on the stack), as a share of the samples taken inside the event loop (start-up
imports are left out; idle time is not sampled). The collapsed stacks are kept in
``--output`` for a flame graph (e.g. https://www.speedscope.app or flamegraph.pl).

    pip install py-spy
    python benchmarks/profile_hot.py [--impl streamflow|raw-1|raw-4|raw-4-nocb] [--scenario noop]
        [--messages 200000] [--top 25] [--output /tmp/streamflow-noop.collapsed]
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repo root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import (
    GROUP,
    SCENARIOS,
    Child,
    delete_keys,
    emit,
    machine_info,
    make_parser,
    preload,
    print_table,
    progress,
    redis_server,
    verify_group,
)
from benchmarks.raw_loop import VARIANTS, raw_impl
from benchmarks.throughput import streamflow_impl

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")
_LOOP_MARKERS = ("_run_once", "run_until_complete")


def _label(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['func']} ({path})"


def summarise(collapsed: str) -> tuple[int, Counter[str], Counter[str]]:
    """Samples inside the event loop, and per-function self and total sample counts."""
    total = 0
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        frames = stack.split(";")
        if not any(m in f for f in frames for m in _LOOP_MARKERS):
            continue  # imports and start-up
        count = int(count_s)
        total += count
        labels = [_label(f) for f in frames]
        own[labels[-1]] += count
        for lab in set(labels):
            anywhere[lab] += count
    return total, own, anywhere


def main() -> int:
    p = make_parser(__doc__.splitlines()[0], messages=200_000, runs=1)
    p.add_argument("--impl", default="streamflow", choices=["streamflow", *VARIANTS])
    p.add_argument("--scenario", default="noop", choices=list(SCENARIOS))
    p.add_argument("--concurrency", type=int, default=1000, help="streamflow concurrency (default 1000)")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second (default 1000)")
    p.add_argument("--top", type=int, default=25, help="functions to list (default 25)")
    p.add_argument("--output", default=None, help="keep the collapsed stacks here")
    args = p.parse_args()
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        p.error("py-spy is not installed (pip install py-spy)")
    impl: dict[str, Any] = (streamflow_impl(args.concurrency) if args.impl == "streamflow"
                            else raw_impl(args.impl))
    output = Path(args.output or tempfile.mkstemp(prefix=f"{args.impl}-{args.scenario}-",
                                                  suffix=".collapsed")[1])
    n = args.messages
    with redis_server(args.redis_url) as url:
        emit(machine_info(url))
        stream = f"bench:profile:{args.impl}:{args.scenario}"
        preload(url, stream, n)
        params = {**impl["params"], "url": url, "stream": stream, "group": GROUP, "n": n,
                  "scenario": args.scenario, "uvloop": bool(args.uvloop)}
        prefix = [pyspy, "record", "--rate", str(args.rate), "--format", "raw", "--output", str(output), "--"]
        progress(f"[profile] {args.impl} {args.scenario}: {n:,} messages under py-spy")
        res = Child(impl["target"], params, prefix=prefix).start().wait(timeout=120 + n / 1000)
        check = verify_group(url, stream, GROUP, n)
        delete_keys(url, stream)
    if "error" in res:
        progress(f"child failed: {res['error']}\n{res.get('log', '')}")
        return 1
    total, own, anywhere = summarise(output.read_text())
    seconds = res.get("seconds")
    emit({"bench": "profile", "impl": args.impl, "scenario": args.scenario, "msgs": n,
          "rate_under_profiler": round(n / seconds) if seconds else None, "valid": check["valid"],
          "samples": total, "collapsed": str(output)})
    rows = []
    for func, count in own.most_common(args.top):
        line = {"bench": "profile", "impl": args.impl, "scenario": args.scenario, "function": func,
                "self_pct": round(100 * count / total, 1),
                "total_pct": round(100 * anywhere[func] / total, 1)}
        emit(line)
        rows.append([func, line["self_pct"], line["total_pct"]])
    print_table(f"profile: {args.impl} / {args.scenario}, {total:,} samples in the event loop "
                f"(% of samples; collapsed stacks: {output})", ["function (self time order)", "self %",
                "total %"], rows, args.json_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
