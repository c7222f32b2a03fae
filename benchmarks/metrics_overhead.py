"""Metrics overhead: throughput with the metrics exporter off and on, side by side in one run.

First the hot path alone (``hot_path``, in this process, no Redis): ``--hot-messages``
entries through the real ``SlotPool`` with the scenario's handler, histograms off and on
alternated ``--hot-runs`` times; the medians in ns per entry and their difference. That
is the slots' own cost of the histograms, without the noise of a whole worker.

Then the end to end runs (each in a fresh process, runs interleaved, see measure.py):

* ``streamflow``: the in-process ``Worker`` of throughput.py, metrics off (the slots read
  no clock);
* ``streamflow-metrics``: the same with ``metrics_port`` set: the slots fill the duration
  and latency histograms (timing a sample once a handler runs more than 10,000 entries a
  second), the poller reads the groups every ``--interval`` seconds, and a scraper process
  (outside the measured one, like Prometheus) GETs ``/metrics`` every ``--scrape-every``
  seconds (default 1 s: 15 times Prometheus's default rate).

Both children import what they use and collect garbage before the clock starts, so that a
full collection of start-up garbage (25-35 ms here, as long as a whole 100,000-entry run's
tenth or more) does not land in one side's measured window and not the other's.

The ratio line ``streamflow/streamflow-metrics`` is off / on: 1.02 means metrics cost 2 %
of the throughput. An ``overhead`` line per scenario gives it in percent.

    python benchmarks/metrics_overhead.py [--messages 200000] [--runs 3] [--scenarios noop,json]
        [--scrape-every 1] [--interval 1] [--uvloop] [--json-only]
        [--hot-messages 200000] [--hot-runs 7] [--hot-path-only]
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repo root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import (
    SCENARIOS,
    cpu_work,
    emit,
    machine_info,
    make_parser,
    median,
    payload_bytes,
    print_table,
    progress,
    redis_server,
)
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


async def consume_off(params: dict[str, Any]) -> dict[str, Any]:
    """Child process: throughput.py's streamflow consumer, after a full garbage collection."""
    gc.collect()
    return await consume_streamflow(params)


async def consume_with_metrics(params: dict[str, Any]) -> dict[str, Any]:
    """Child process: throughput.py's streamflow consumer with the exporter on and scraped."""
    # Imported before the clock starts: prometheus-client's import (10-50 ms; the exporter
    # imports it lazily) is a start-up cost, not a per-message one.
    import prometheus_client  # noqa: F401

    from streamflow.embedded.probe import free_port
    from streamflow.metrics import collector, exporter  # noqa: F401

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
        gc.collect()
        return await consume_streamflow({**params, "settings": settings})
    finally:
        scraper.kill()  # our own child, by its handle
        scraper.wait()


# -- the hot path alone -------------------------------------------------------------------


async def _through_slots(scenario: str, histograms: bool, n: int, batch: int = 300) -> float:
    """ns per entry of ``n`` entries through a real SlotPool (no Redis; the acks are dropped).

    Only the slots' work is timed: each batch of entries is built before the clock runs.
    """
    from streamflow import Message
    from streamflow.runtime.acks import AckBuffer
    from streamflow.runtime.slots import SlotPool
    from streamflow.runtime.stop import StopSignal
    from streamflow.stats import Counters

    async def noop(msg: Message) -> None:
        return None

    async def decode(msg: Message) -> None:
        cpu_work(msg.payload)

    async def failed(msg: Message, exc: BaseException) -> None:
        raise RuntimeError(f"the {scenario} handler failed: {exc!r}")

    acker = AckBuffer(None)
    counters = Counters(histograms=histograms)
    pool = SlotPool(noop if scenario == "noop" else decode, concurrency=1000, acker=acker,
                    group="g", keys=("s",), counters=counters, stop=StopSignal(),
                    on_failure=failed)
    ms = int(time.time() * 1000)
    payloads = [payload_bytes(i) for i in range(1000)]
    acks = acker.bucket("s", "g")
    seconds = 0.0
    gc.collect()
    async with pool.open():
        for first in range(0, n - batch + 1, batch):
            entries = [Message(b"%d-%d" % (ms, i), [b"sf:json", payloads[i % 1000]], "s", "g",
                               key="s") for i in range(first, first + batch)]
            started = time.perf_counter()
            # A read loop's reserve, queue, release; then wait until every slot is free
            # again (as a read does, but for the entries just queued instead of a reply).
            promised = await pool.reserve(batch, batch)
            pool.submit(entries)
            pool.release(promised)
            pool.release(await pool.reserve(1000, 1000))
            seconds += time.perf_counter() - started
            acks.clear()
    return seconds / counters.handled * 1e9


def hot_path(scenarios: list[str], n: int, runs: int, json_only: bool) -> None:
    """Emit (and print) the slot loop's ns per entry, histograms off and on."""
    rows = []
    for scenario in (s for s in scenarios if s in ("noop", "json")):
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(runs):
            for on in (False, True):
                times[on].append(asyncio.run(_through_slots(scenario, on, n)))
        off_ns, on_ns = statistics.median(times[False]), statistics.median(times[True])
        emit({"bench": "metrics_overhead", "hot_path": True, "scenario": scenario, "entries": n,
              "runs": runs, "off_ns": round(off_ns, 1), "on_ns": round(on_ns, 1),
              "delta_ns": round(on_ns - off_ns, 1),
              "off_ns_min": round(min(times[False]), 1), "on_ns_min": round(min(times[True]), 1)})
        rows.append([scenario, f"{off_ns:.0f}", f"{on_ns:.0f}", f"{on_ns - off_ns:+.0f}",
                     f"{(on_ns - off_ns) / off_ns * 100:+.1f} %"])
    print_table(f"hot path: ns per entry through SlotPool, no Redis (medians of {runs})",
                ["scenario", "off", "on", "on - off", "of the slot loop"], rows, json_only)


def main() -> int:
    p = make_parser(__doc__.splitlines()[0], messages=200_000, runs=3)
    p.add_argument("--scenarios", default="noop,json", help="comma-separated: noop,sleep,json")
    p.add_argument("--concurrency", type=int, default=1000, help="handler concurrency (default 1000)")
    p.add_argument("--scrape-every", type=float, default=1.0,
                   help="seconds between two scrapes of /metrics (default 1)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="metrics_interval: seconds between two polls of the groups (default 1)")
    p.add_argument("--hot-messages", type=int, default=200_000,
                   help="entries per hot-path run (default 200000)")
    p.add_argument("--hot-runs", type=int, default=7, help="hot-path runs, off and on (default 7)")
    p.add_argument("--hot-path-only", action="store_true",
                   help="measure the hot path alone (no Redis), not the end to end runs")
    args = p.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {bad}")

    progress(f"hot path: {args.hot_messages:,} entries x {args.hot_runs} runs, off and on")
    hot_path(scenarios, args.hot_messages, args.hot_runs, args.json_only)
    if args.hot_path_only:
        return 0
    off = {**streamflow_impl(args.concurrency), "target": "benchmarks.metrics_overhead:consume_off"}
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
