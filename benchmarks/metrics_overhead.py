"""Metrics overhead: throughput with the metrics exporter off and on, side by side in one run.

Implementations (each run in a fresh process, runs interleaved, see measure.py):

* ``streamflow``: the in-process ``Worker`` of throughput.py, metrics off (the slots read
  no clock);
* ``streamflow-metrics``: the same with ``metrics_port`` set: the slots fill the duration
  and latency histograms, the poller reads the groups every ``--interval`` seconds, and a
  scraper process (outside the measured one, like Prometheus) GETs ``/metrics`` every
  ``--scrape-every`` seconds (default 1 s: 15 times Prometheus's default rate).

The ratio line ``streamflow/streamflow-metrics`` is off / on: 1.02 means metrics cost 2 %
of the throughput. An ``overhead`` line per scenario gives it in percent.

    python benchmarks/metrics_overhead.py [--messages 200000] [--runs 3] [--scenarios noop,json]
        [--scrape-every 1] [--interval 1] [--uvloop] [--json-only]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repo root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import SCENARIOS, emit, machine_info, make_parser, median, progress, redis_server
from benchmarks.measure import measure_all
from benchmarks.throughput import consume_streamflow, streamflow_impl

#: The scraper: GET /metrics every ``every`` seconds until killed (errors are counted).
_SCRAPER = """
import sys, time, urllib.request
port, every = int(sys.argv[1]), float(sys.argv[2])
while True:
    time.sleep(every)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        pass
"""


async def consume_with_metrics(params: dict[str, Any]) -> dict[str, Any]:
    """Child process: throughput.py's streamflow consumer with the exporter on and scraped."""
    from streamflow.embedded.probe import free_port
    from streamflow.metrics import exporter  # noqa: F401  (imported before the clock starts:
    # prometheus-client's import, ~50-100 ms, is a start-up cost, not a per-message one)

    port = free_port()
    settings = {**params.get("settings", {}), "metrics_port": port, "metrics_host": "127.0.0.1",
                "metrics_interval": float(params["interval"])}
    # (started once, before the clock starts: a blocking call is fine here)
    scraper = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", _SCRAPER, str(port), str(params["scrape_every"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import anyio

        await anyio.sleep(0.5)  # the scraper's interpreter start-up is done before the clock starts
        return await consume_streamflow({**params, "settings": settings})
    finally:
        scraper.kill()  # our own child, by its handle
        scraper.wait()


def main() -> int:
    p = make_parser(__doc__.splitlines()[0], messages=200_000, runs=3)
    p.add_argument("--scenarios", default="noop,json", help="comma-separated: noop,sleep,json")
    p.add_argument("--concurrency", type=int, default=1000, help="handler concurrency (default 1000)")
    p.add_argument("--scrape-every", type=float, default=1.0,
                   help="seconds between two scrapes of /metrics (default 1)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="metrics_interval: seconds between two polls of the groups (default 1)")
    args = p.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {bad}")

    off = streamflow_impl(args.concurrency)
    on = {"impl": "streamflow-metrics", "target": "benchmarks.metrics_overhead:consume_with_metrics",
          "params": {"concurrency": args.concurrency, "settings": {},
                     "scrape_every": args.scrape_every, "interval": args.interval}}
    with redis_server(args.redis_url) as url:
        emit(machine_info(url))
        progress(f"metrics on: scrape every {args.scrape_every} s, poll every {args.interval} s")
        results = measure_all(url, [off, on], scenarios, args, bench="metrics_overhead")
    for scenario in scenarios:
        rate = {impl: median(r["rate"] for r in results
                             if r["scenario"] == scenario and r["impl"] == impl and r["valid"])
                for impl in ("streamflow", "streamflow-metrics")}
        off_rate, on_rate = rate["streamflow"], rate["streamflow-metrics"]
        if off_rate and on_rate:
            emit({"bench": "metrics_overhead", "scenario": scenario,
                  "overhead_pct": round((off_rate - on_rate) / off_rate * 100, 2),
                  "off_rate": off_rate, "on_rate": on_rate, "scrape_every": args.scrape_every,
                  "interval": args.interval})
    return 0


if __name__ == "__main__":
    sys.exit(main())
