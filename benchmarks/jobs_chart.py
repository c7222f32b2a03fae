"""Draw docs/benchmarks-jobs.png from the JSON lines ``benchmarks/jobs.py`` prints.

    python benchmarks/jobs.py --json-only > docs/bench-results/jobs.jsonl
    python benchmarks/jobs_chart.py docs/bench-results/jobs.jsonl --out docs/benchmarks-jobs.png

Needs matplotlib. Four panels: J1 (no-op jobs/s), J3a (async sleep jobs/s), J3b (sync sleep
jobs/s) on log scales, and J2 (round trip p50 and p99, ms). One bar per tool, from the
summary lines (medians over the valid runs); a tool without a valid run is left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

PANELS = [("J1", "no-op jobs with results (jobs/s)"), ("J3a", "async sleep(10 ms), 100 slots (jobs/s)"),
          ("J3b", "sync sleep(10 ms), 32 threads (jobs/s)"), ("J2", "enqueue -> result round trip (ms)")]


def load(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """scenario -> tool -> its summary line."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for raw in path.read_text().splitlines():
        if not raw.startswith("{"):
            continue
        obj = json.loads(raw)
        if obj.get("bench") == "jobs" and obj.get("summary") and obj.get("valid_runs"):
            out.setdefault(obj["scenario"], {})[obj["tool"]] = obj
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks-jobs.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load(args.results)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (scenario, title) in zip(axes.flat, PANELS, strict=True):
        rows = data.get(scenario, {})
        if scenario == "J2":
            tools = sorted(rows, key=lambda t: rows[t]["p50_ms"])
            x = range(len(tools))
            ax.bar([i - 0.2 for i in x], [rows[t]["p50_ms"] for t in tools], 0.4, label="p50")
            ax.bar([i + 0.2 for i in x], [rows[t]["p99_ms"] for t in tools], 0.4, label="p99")
            ax.legend()
        else:
            tools = sorted(rows, key=lambda t: -rows[t]["jobs_per_s"])
            x = range(len(tools))
            ax.bar(list(x), [rows[t]["jobs_per_s"] for t in tools],
                   color=["tab:green" if t == "streamflow" else "tab:gray" for t in tools])
        ax.set_yscale("log")
        ax.set_xticks(list(x), tools, rotation=30, ha="right")
        ax.set_title(f"{scenario}: {title}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
