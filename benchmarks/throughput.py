"""Throughput: consume + ack N preloaded messages; streamflow vs the raw loop vs the peers.

Scenarios (the handler's work per message):

* ``noop``: nothing;
* ``sleep``: ``await anyio.sleep(0.001)`` (streamflow concurrency 1000; raw loop gathers per batch);
* ``json``: decode the JSON payload and sum a 20-element list from it.

Implementations: ``streamflow`` (per-message handler, in-process ``Worker``),
``raw-1`` / ``raw-4`` / ``raw-4-nocb`` (see raw_loop.py), and when installed
``faststream`` / ``faststream-batch`` / ``taskiq`` (see peers.py; capped at
``--peer-messages``, they run at a few thousand msg/s). ``bare`` is no consumer at all:
the scenario's handler work alone, N times, without Redis (``concurrency`` tasks looping
for ``sleep``): the ceiling no consumer in one process can pass.

After the table, the issue's targets are checked against the medians and printed as
``met`` / ``NOT met`` (JSON lines with ``"target"``).

Every run: preload the stream (not timed), start a fresh process that consumes until
its handler ran N times and the group shows pending 0 and lag 0 (timed: ``seconds`` is
from before the consumer connects until then), then the parent verifies the group
again; a run that does not verify is ``valid: false`` and left out of the medians
(see measure.py).

    python benchmarks/throughput.py [--messages 200000] [--runs 3] [--scenarios noop,sleep,json]
        [--impls streamflow,raw-1,raw-4,...] [--peer-messages 20000] [--uvloop] [--json-only]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repo root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import anyio

from benchmarks.common import (
    GROUP,
    SCENARIOS,
    cpu_work,
    emit,
    machine_info,
    make_parser,
    payload_bytes,
    progress,
    redis_server,
    wait_group_done,
)
from benchmarks.measure import measure_all
from benchmarks.peers import PEERS, peer_impls
from benchmarks.raw_loop import VARIANTS, Counter, raw_impl

DEFAULT_IMPLS = ("streamflow", *VARIANTS, *PEERS, "bare")


# --------------------------------------------------------------------------- streamflow


async def consume_streamflow(params: dict[str, Any]) -> dict[str, Any]:
    """Child process: consume ``n`` preloaded entries with a streamflow Worker (in-process)."""
    from streamflow import App, Message, Worker

    url, stream, group, n = params["url"], params["stream"], params.get("group", GROUP), params["n"]
    scenario = params["scenario"]
    counter = Counter(n)
    hit = counter.hit
    app = App(redis_url=url)

    if scenario == "noop":
        async def handler(msg: Message) -> None:
            hit()
    elif scenario == "json":
        async def handler(msg: Message) -> None:
            cpu_work(msg.payload)
            hit()
    elif scenario == "sleep":
        async def handler(msg: Message) -> None:
            await anyio.sleep(0.001)
            hit()
    else:
        raise ValueError(f"unknown scenario {scenario!r}")

    app.handler(stream, group=group, concurrency=int(params["concurrency"]), start_id="0")(handler)
    settings = app.settings(redis_url=url, **params.get("settings", {}))
    worker = Worker(app, settings, handle_signals=False)
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.serve)
        await counter.done.wait()
        t_handled = time.perf_counter()
        acked = await wait_group_done(url, stream, group)
        t_acked = time.perf_counter()
        worker.stop()
    stats = worker.stats()
    return {"handled": counter.count, "seconds": t_acked - t0, "handled_seconds": t_handled - t0,
            "acked": acked, "reads": stats.reads, "high_water": stats.high_water,
            "ack_flushes": stats.ack_flushes}


async def consume_bare(params: dict[str, Any]) -> dict[str, Any]:
    """Child process: the scenario's handler work ``n`` times with no Redis and no framework."""
    from streamflow.codec import loads

    n, scenario, concurrency = params["n"], params["scenario"], int(params["concurrency"])
    payloads = [payload_bytes(i) for i in range(1000)]
    t0 = time.perf_counter()
    if scenario == "noop":
        async def noop() -> None:
            pass

        for _ in range(n):
            await noop()
    elif scenario == "json":
        async def decode(data: bytes) -> None:
            cpu_work(loads(data))

        for i in range(n):
            await decode(payloads[i % 1000])
    elif scenario == "sleep":
        left = n

        async def sleeper() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(sleeper)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    seconds = time.perf_counter() - t0
    return {"handled": n, "seconds": seconds, "acked": True}


def bare_impl(concurrency: int) -> dict[str, Any]:
    return {"impl": "bare", "target": "benchmarks.throughput:consume_bare", "no_redis": True,
            "params": {"concurrency": concurrency}}


def streamflow_impl(concurrency: int, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"impl": "streamflow", "target": "benchmarks.throughput:consume_streamflow",
            "params": {"concurrency": concurrency, "settings": settings or {}}}


# --------------------------------------------------------------------------- targets

#: Per-message peers: streamflow must do >= 50x their rate.
PER_MESSAGE_PEERS = ("faststream", "taskiq")


def check_targets(summaries: dict[tuple[str, str], dict[str, Any]],
                  ratios: dict[tuple[str, str], float], scenarios: list[str]) -> list[list[Any]]:
    """The issue's targets that this run measured: [target, value, wanted, met] rows."""
    rows: list[list[Any]] = []

    def add(target: str, value: float | None, wanted: str, met: bool) -> None:
        rows.append([target, value, wanted, "met" if met else "NOT met"])
        emit({"bench": "throughput", "target": target, "value": value, "wanted": wanted, "met": met})

    for scenario in scenarios:
        if (value := ratios.get((scenario, "raw-1"))) is not None:
            add(f"{scenario}: streamflow / raw-1", round(value, 2), ">= 1.2", value >= 1.2)
        for peer in PER_MESSAGE_PEERS:
            if (value := ratios.get((scenario, peer))) is not None:
                add(f"{scenario}: streamflow / {peer}", round(value, 1), ">= 50", value >= 50)
        if (value := ratios.get((scenario, "faststream-batch"))) is not None:
            add(f"{scenario}: streamflow / faststream-batch", round(value, 2), "> 1", value > 1)
    sleep = summaries.get(("sleep", "streamflow"))
    if sleep and sleep["rate_median"]:
        add("sleep: streamflow msg/s", sleep["rate_median"], ">= 80,000", sleep["rate_median"] >= 80_000)
    return rows


def main() -> int:
    p = make_parser(__doc__.splitlines()[0], messages=200_000, runs=3)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: noop,sleep,json")
    p.add_argument("--impls", default=",".join(DEFAULT_IMPLS),
                   help="comma-separated (default: all; peers only when installed)")
    p.add_argument("--peer-messages", type=int, default=20_000, help="message cap for peers (default 20000)")
    p.add_argument("--concurrency", type=int, default=1000,
                   help="streamflow handler concurrency in every scenario (default 1000)")
    p.add_argument("--no-peers", action="store_true", help="skip FastStream and taskiq")
    p.add_argument("--peers-quiet", action="store_true",
                   help="FastStream without its per-message INFO logging (logger=None)")
    args = p.parse_args()

    wanted = [i for i in args.impls.split(",") if i]
    if args.no_peers:
        wanted = [i for i in wanted if i not in PEERS]
    unknown = [i for i in wanted if i not in DEFAULT_IMPLS]
    if unknown:
        p.error(f"unknown implementation(s) {unknown}; choose from {', '.join(DEFAULT_IMPLS)}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {bad}")

    peers, skipped = peer_impls([i for i in wanted if i in PEERS])
    if args.peers_quiet:
        for peer in peers:
            if peer["impl"].startswith("faststream"):
                peer["params"]["quiet"] = True
    by_name: dict[str, dict[str, Any]] = {i["impl"]: i for i in peers}
    impls: list[dict[str, Any]] = []
    for name in wanted:
        if name == "streamflow":
            impls.append(streamflow_impl(args.concurrency))
        elif name in VARIANTS:
            impls.append(raw_impl(name))
        elif name == "bare":
            impls.append(bare_impl(args.concurrency))
        elif name in by_name:
            impls.append(by_name[name])

    with redis_server(args.redis_url) as url:
        emit(machine_info(url))
        for name, why in skipped.items():
            emit({"bench": "throughput", "impl": name, "skipped": why})
            progress(f"skipping {name}: {why}")
        measure_all(url, impls, scenarios, args, bench="throughput", targets=check_targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
