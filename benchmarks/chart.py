"""Draw docs/benchmarks.png from the JSON lines the benchmark scripts print.

    python benchmarks/throughput.py --json-only > /tmp/throughput.jsonl
    python benchmarks/chart.py /tmp/throughput.jsonl --out docs/benchmarks.png

Needs matplotlib (``pip install -e '.[benchmarks]'``). One group of bars per scenario,
one bar per implementation (median msg/s over the valid runs), log scale so the
peers' few thousand msg/s stay visible next to a few hundred thousand.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def load(path: Path) -> dict[str, dict[str, float]]:
    """scenario -> impl -> median rate, from the ``summary`` lines of a throughput run."""
    rates: dict[str, dict[str, float]] = defaultdict(dict)
    for raw in path.read_text().splitlines():
        text = raw.strip()
        if not text.startswith("{"):
            continue
        obj = json.loads(text)
        if obj.get("bench") == "throughput" and obj.get("summary") and obj.get("rate_median"):
            rates[obj["scenario"]][obj["impl"]] = float(obj["rate_median"])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="JSON lines from throughput.py")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = load(args.results)
    scenarios = [s for s in ("noop", "sleep", "json") if s in rates]
    impls = sorted({i for s in scenarios for i in rates[s]}, key=lambda i: (i != "streamflow", i))
    width = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(10, 5))
    for k, impl in enumerate(impls):
        xs = [n + k * width for n in range(len(scenarios))]
        ys = [rates[s].get(impl, 0) for s in scenarios]
        ax.bar(xs, ys, width, label=impl)
    ax.set_xticks([n + width * (len(impls) - 1) / 2 for n in range(len(scenarios))])
    ax.set_xticklabels(["no-op handler", "1 ms sleep handler", "JSON decode + CPU"][: len(scenarios)]
                       if scenarios == ["noop", "sleep", "json"] else scenarios)
    ax.set_yscale("log")
    ax.set_ylabel("messages per second (median, log scale)")
    ax.set_title("Consume + ack of preloaded messages, one process (higher is better)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
