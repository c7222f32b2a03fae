"""Metrics overhead: throughput with the metrics exporter off and on, side by side in one run.

First the hot path alone (``hot_path``, in this process, no Redis): ``timeit`` of the
slot's timing statements (an entry timed, one not timed, metrics off), then
``--hot-messages`` entries through the real ``SlotPool`` with the scenario's handler,
histograms off and on alternated ``--hot-runs`` times; the medians in ns per entry and
their difference. That is the slots' own cost of the histograms, without the noise of a
whole worker.

Then the end to end runs (each in a fresh process, runs interleaved, see measure.py), both
by :func:`consume` (throughput.py's in-process ``Worker`` consumer, plus the time to the
first handled entry):

* ``streamflow``: metrics off (the slots read no clock);
* ``streamflow-metrics``: ``metrics_port`` set: the slots fill the duration and latency
  histograms (timing a sample once a handler runs more than 10,000 entries a second), the
  poller reads the groups every ``--interval`` seconds, and a scraper process (outside the
  measured one, like Prometheus) GETs ``/metrics`` every ``--scrape-every`` seconds
  (default 1 s: 15 times Prometheus's default rate).

Both import what they use and collect garbage before the clock starts, so that a full
collection of start-up garbage (25-35 ms here, a tenth of a 100,000-entry run) does not
land in one side's measured window and not in the other's.

The ratio line ``streamflow/streamflow-metrics`` is off / on: 1.02 means metrics cost 2 %
of the throughput. An ``overhead`` line per scenario gives it in percent, for the whole
run (start-up included, as the ratio) and from the first entry handled to the last (the
per-entry cost), with the median time to the first entry of each side.

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
    wait_group_done,
)
from benchmarks.measure import measure_all

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


async def consume(params: dict[str, Any]) -> dict[str, Any]:
    """Child process: throughput.py's streamflow consumer, metrics off or on (``metrics``).

    As throughput.py's ``consume_streamflow`` (the clock runs from ``Worker.serve`` until
    the group has acked every entry), plus ``first_seconds``: until the first entry was
    handled, so that the start-up (with metrics: the exporter's listener and first poll)
    can be told from the per-entry cost. With metrics on, a scraper process (outside the
    measured one, like Prometheus) GETs ``/metrics`` every ``scrape_every`` seconds.
    """
    # Imported before the clock starts, as an app's imports would be: prometheus-client's
    # import (10-50 ms; the exporter imports it lazily) is a start-up cost, not a per-entry one.
    import anyio
    import prometheus_client  # noqa: F401

    from streamflow import App, Message, Worker
    from streamflow.embedded.probe import free_port
    from streamflow.metrics import collector, exporter  # noqa: F401

    url, stream, n, scenario = params["url"], params["stream"], params["n"], params["scenario"]
    settings: dict[str, Any] = {}
    scraper = None
    if params["metrics"]:
        port = free_port()
        settings = {"metrics_port": port, "metrics_host": "127.0.0.1",
                    "metrics_interval": float(params["interval"])}
        # (started once, before the clock starts: a blocking call is fine here)
        scraper = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-c", _SCRAPER, str(port), str(params["scrape_every"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        app = App(redis_url=url)
        count = 0
        first = 0.0
        done = anyio.Event()

        async def handler(msg: Message) -> None:
            nonlocal count, first
            if scenario == "json":
                cpu_work(msg.payload)
            elif scenario == "sleep":
                await anyio.sleep(0.001)
            count += 1
            if count == 1:
                first = time.perf_counter()
            if count >= n:
                done.set()

        app.handler(stream, group=params["group"], concurrency=int(params["concurrency"]),
                    start_id="0")(handler)
        worker = Worker(app, app.settings(redis_url=url, **settings), handle_signals=False)
        if scraper is not None:
            await anyio.sleep(0.5)  # the scraper's interpreter start-up is done before the clock
        # Both sides start from a collected heap: a full collection of start-up garbage
        # (25-35 ms here, a tenth of a 100,000-entry run) would otherwise land in one
        # side's measured window and not in the other's.
        gc.collect()
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.serve)
            await done.wait()
            t_handled = time.perf_counter()
            acked = await wait_group_done(url, stream, params["group"])
            t_acked = time.perf_counter()
            worker.stop()
    finally:
        if scraper is not None:
            scraper.kill()  # our own child, by its handle
            scraper.wait()
    stats = worker.stats()
    return {"handled": count, "seconds": t_acked - t0, "handled_seconds": t_handled - t0,
            "first_seconds": first - t0, "acked": acked, "reads": stats.reads,
            "high_water": stats.high_water, "ack_flushes": stats.ack_flushes}


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


#: The slot's statements per entry (slots.py ``_slot``), for timeit.
_UNTIMED = """
if timing is not None:
    left -= 1
    if not left:
        began = timing.start(raw_id, weight)
if not left and timing is not None:
    left = weight = timing.finish(began, weight)
"""


def _timeit_ns(stmt: str, setup: str, names: dict[str, Any], number: int = 500_000) -> float:
    """Best of 7 timeit runs of ``stmt`` less an empty statement, in ns per execution."""
    import timeit

    def best(code: str) -> float:
        return min(timeit.repeat(code, setup, globals=names, number=number, repeat=7))

    return (best(stmt) - best("pass")) / number * 1e9


def statement_costs() -> dict[str, float]:
    """timeit of the slot's own timing code: an entry timed, one not timed, metrics off."""
    from streamflow.stats import Timing

    names = {"Timing": Timing, "raw_id": b"%d-0" % int(time.time() * 1000)}
    return {
        # (weight 1: in this loop no untimed entries run between two timed ones)
        "timed_ns": _timeit_ns("left = timing.finish(timing.start(raw_id, 1), 1)",
                               "timing = Timing()", names),
        "untimed_ns": _timeit_ns(_UNTIMED, "timing = Timing(); left = 10**15; weight = 1; "
                                           "began = 0.0", names),
        "off_ns": _timeit_ns(_UNTIMED, "timing = None; left = weight = -1; began = 0.0", names),
    }


def hot_path(scenarios: list[str], n: int, runs: int, json_only: bool) -> None:
    """Emit (and print) the timing code's cost and the slot loop's ns per entry, off and on."""
    costs = statement_costs()
    emit({"bench": "metrics_overhead", "timeit": True, **{k: round(v, 1) for k, v in costs.items()}})
    if not json_only:
        print(f"timeit: a timed entry {costs['timed_ns']:.0f} ns, an untimed one "
              f"{costs['untimed_ns']:.1f} ns, metrics off {costs['off_ns']:.1f} ns")
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
    p.add_argument("--hot-runs", type=int, default=7,
                   help="hot-path runs, off and on (default 7; 0: skip the hot path)")
    p.add_argument("--hot-path-only", action="store_true",
                   help="measure the hot path alone (no Redis), not the end to end runs")
    args = p.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {bad}")

    if args.hot_runs > 0:
        progress(f"hot path: {args.hot_messages:,} entries x {args.hot_runs} runs, off and on")
        hot_path(scenarios, args.hot_messages, args.hot_runs, args.json_only)
    if args.hot_path_only:
        return 0
    common = {"target": "benchmarks.metrics_overhead:consume",
              "params": {"concurrency": args.concurrency, "scrape_every": args.scrape_every,
                         "interval": args.interval}}
    off = {**common, "impl": "streamflow", "params": {**common["params"], "metrics": False}}
    on = {**common, "impl": "streamflow-metrics", "params": {**common["params"], "metrics": True}}
    with redis_server(args.redis_url) as url:
        emit(machine_info(url))
        progress(f"metrics on: scrape every {args.scrape_every} s, poll every {args.interval} s")
        results = measure_all(url, [off, on], scenarios, args, bench="metrics_overhead")
    rows = []
    for scenario in scenarios:
        runs = {impl: [r for r in results if r["scenario"] == scenario and r["impl"] == impl
                       and r["valid"] and r.get("first_seconds") is not None]
                for impl in ("streamflow", "streamflow-metrics")}
        if not all(runs.values()):
            continue
        rate = {impl: median(r["rate"] for r in rs) for impl, rs in runs.items()}
        # From the first entry handled to the last: the per-entry cost without the start-up.
        steady = {impl: median(round((r["msgs"] - 1) / (r["handled_seconds"] - r["first_seconds"]))
                               for r in rs) for impl, rs in runs.items()}
        start_ms = {impl: median(r["first_seconds"] * 1e3 for r in rs) for impl, rs in runs.items()}
        line = {"bench": "metrics_overhead", "scenario": scenario,
                "overhead_pct": round((1 - rate["streamflow-metrics"] / rate["streamflow"]) * 100, 2),
                "off_rate": rate["streamflow"], "on_rate": rate["streamflow-metrics"],
                "steady_overhead_pct": round(
                    (1 - steady["streamflow-metrics"] / steady["streamflow"]) * 100, 2),
                "off_steady_rate": steady["streamflow"], "on_steady_rate": steady["streamflow-metrics"],
                "off_first_ms": round(start_ms["streamflow"], 1),
                "on_first_ms": round(start_ms["streamflow-metrics"], 1),
                "scrape_every": args.scrape_every, "interval": args.interval}
        emit(line)
        rows.append([scenario, f"{line['overhead_pct']:+.1f} %", f"{line['steady_overhead_pct']:+.1f} %",
                     f"{line['off_first_ms']:.1f}", f"{line['on_first_ms']:.1f}"])
    print_table("metrics overhead (medians): whole run, first to last entry handled, start-up",
                ["scenario", "whole run", "first to last", "first entry off (ms)", "on (ms)"],
                rows, args.json_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
