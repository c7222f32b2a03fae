"""The hand-written redis.asyncio consumer streamflow is measured against.

What a careful user writes without a framework: ``XREADGROUP COUNT 1000 BLOCK 1000``,
run the handler for every entry of the batch (sequentially, or ``asyncio.gather`` for
the sleep scenario), then one ``XACK`` for the whole batch. Variants:

* ``raw-1``: one read loop;
* ``raw-4``: 4 concurrent read loops in one process (distinct consumer names);
* ``raw-4-nocb``: 4 loops with redis-py's XREADGROUP response callback replaced by the
  identity (no per-entry tuple/dict building: the handler gets ``fields[1]``).

The handler receives the payload bytes (the ``sf:json`` value) and does the scenario's
work: ``noop`` nothing, ``json`` a JSON decode + sum over a 20-element list (``orjson.loads``
when installed, as streamflow's decoder, else ``json.loads``),
``sleep`` ``await anyio.sleep(0.001)``. Each handler call counts towards the target.

Run alone: ``python benchmarks/raw_loop.py [--messages N] [--runs K] [--variants raw-1,raw-4]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repo root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import anyio
import redis.asyncio as aioredis

from benchmarks.common import (
    GROUP,
    SCENARIOS,
    SF_FIELD,
    cpu_work,
    emit,
    machine_info,
    make_parser,
    redis_server,
    wait_group_done,
)
from benchmarks.measure import measure_all

VARIANTS: dict[str, dict[str, Any]] = {
    "raw-1": {"loops": 1, "nocb": False},
    "raw-4": {"loops": 4, "nocb": False},
    "raw-4-nocb": {"loops": 4, "nocb": True},
}


class Counter:
    """Counts handled messages; ``done`` is set when ``n`` were handled."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.n:
            self.done.set()


def make_handler(scenario: str, counter: Counter) -> Any:
    """``async def handler(payload: bytes)`` doing the scenario's work."""
    hit = counter.hit
    loads = json_loads()

    if scenario == "noop":
        async def handler(payload: bytes) -> None:
            hit()
    elif scenario == "json":
        async def handler(payload: bytes) -> None:
            cpu_work(loads(payload))
            hit()
    elif scenario == "sleep":
        async def handler(payload: bytes) -> None:
            await anyio.sleep(0.001)
            hit()
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    return handler


def json_loads() -> Any:
    """The fastest JSON decoder installed: what a careful hand-written consumer would use."""
    try:
        import orjson
    except ImportError:
        return json.loads
    return orjson.loads


def _identity(response: Any, **_: Any) -> Any:
    return response


async def consume(params: dict[str, Any]) -> dict[str, Any]:
    """Child process: consume ``n`` preloaded entries with the raw loop; return timings."""
    url, stream, group, n = params["url"], params["stream"], params.get("group", GROUP), params["n"]
    scenario, loops, nocb = params["scenario"], int(params["loops"]), bool(params["nocb"])
    counter = Counter(n)
    handler = make_handler(scenario, counter)
    gather = scenario == "sleep"
    reads = 0

    t0 = time.perf_counter()
    client = aioredis.Redis.from_url(url)
    if nocb:
        client.set_response_callback("XREADGROUP", _identity)

    async def read_loop(consumer: str) -> None:
        nonlocal reads
        while True:
            reply = await client.xreadgroup(group, consumer, {stream: ">"}, count=1000, block=1000)
            if not reply:
                continue
            reads += 1
            items = reply.items() if isinstance(reply, dict) else reply
            for _stream, entries in items:
                if not entries:
                    continue
                if nocb:
                    if gather:
                        await asyncio.gather(*[handler(e[1][1]) for e in entries])
                    else:
                        for e in entries:
                            await handler(e[1][1])
                else:
                    if gather:
                        await asyncio.gather(*[handler(f[SF_FIELD]) for _i, f in entries])
                    else:
                        for _i, fields in entries:
                            await handler(fields[SF_FIELD])
                await client.xack(stream, group, *[e[0] for e in entries])

    async with anyio.create_task_group() as tg:
        for i in range(loops):
            tg.start_soon(read_loop, f"raw-{i}")
        await counter.done.wait()
        t_handled = time.perf_counter()
        acked = await wait_group_done(url, stream, group)
        t_acked = time.perf_counter()
        tg.cancel_scope.cancel()
    await client.aclose()
    return {"handled": counter.count, "seconds": t_acked - t0, "handled_seconds": t_handled - t0,
            "acked": acked, "reads": reads}


def raw_impl(variant: str) -> dict[str, Any]:
    """Implementation spec for :func:`benchmarks.measure.measure`."""
    return {"impl": variant, "target": "benchmarks.raw_loop:consume", "params": dict(VARIANTS[variant])}


def main() -> int:
    p = make_parser(__doc__.splitlines()[0], messages=200_000, runs=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = p.parse_args()
    impls = [raw_impl(v) for v in args.variants.split(",") if v]
    with redis_server(args.redis_url) as url:
        emit(machine_info(url))
        measure_all(url, impls, args.scenarios.split(","), args, bench="raw_loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
