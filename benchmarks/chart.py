"""Draw docs/benchmarks.png from the JSON lines the benchmark scripts print.

    python benchmarks/throughput.py --json-only > /tmp/asyncio.jsonl
    python benchmarks/throughput.py --json-only --uvloop > /tmp/uvloop.jsonl
    python benchmarks/chart.py /tmp/asyncio.jsonl /tmp/uvloop.jsonl --out docs/benchmarks.png

Needs matplotlib (``pip install -e '.[benchmarks]'``). One panel per results file (the
event loop it ran on), one group of bars per scenario, one bar per implementation (median
msg/s over the valid runs), log scale so the peers' few thousand msg/s stay visible next
to a few hundred thousand. The ``bare`` ceiling (no Redis) is left out.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def load(path: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """(event loop, scenario -> impl -> median rate) from the lines of a throughput run."""
    rates: dict[str, dict[str, float]] = defaultdict(dict)
    loop = "asyncio"
    for raw in path.read_text().splitlines():
        text = raw.strip()
        if not text.startswith("{"):
            continue
        obj = json.loads(text)
        if obj.get("bench") == "throughput" and obj.get("loop"):
            loop = obj["loop"]
        summary = obj.get("bench") == "throughput" and obj.get("summary") and obj.get("rate_median")
        if summary and obj["impl"] != "bare":
            rates[obj["scenario"]][obj["impl"]] = float(obj["rate_median"])
    return loop, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="JSON lines from throughput.py runs")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load(path) for path in args.results]
    labels = {"noop": "no-op handler", "sleep": "1 ms sleep handler", "json": "JSON decode + CPU"}
    fig, axes = plt.subplots(1, len(runs), figsize=(7 * len(runs), 5), squeeze=False, sharey=True)
    for ax, (loop, rates) in zip(axes[0], runs, strict=True):
        scenarios = [s for s in ("noop", "sleep", "json") if s in rates]
        impls = sorted({i for s in scenarios for i in rates[s]}, key=lambda i: (i != "streamflow", i))
        width = 0.8 / max(1, len(impls))
        for k, impl in enumerate(impls):
            xs = [n + k * width for n in range(len(scenarios))]
            ys = [rates[s].get(impl, 0) for s in scenarios]
            ax.bar(xs, ys, width, label=impl)
        ax.set_xticks([n + width * (len(impls) - 1) / 2 for n in range(len(scenarios))])
        ax.set_xticklabels([labels[s] for s in scenarios])
        ax.set_yscale("log")
        ax.set_title(f"{loop} event loop")
        ax.legend(fontsize=8, ncol=2)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("messages per second (median, log scale)")
    fig.suptitle("Consume + ack of 200k preloaded messages, one process (higher is better)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
