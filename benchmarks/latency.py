"""Latency: publish at fixed rates; time from publish to handler start (p50 / p99 / p999).

For each rate (default 1k, 5k, 20k msg/s) and implementation (``streamflow`` with
its default concurrency 100, and the ``raw-1`` loop for reference) a fresh consumer
process starts on an empty stream; this process then publishes at the rate for
``--warmup`` + ``--duration`` seconds from a separate process (pipelined XADDs,
paced every ~0.2 ms). Every payload carries its publish time (``time.time()`` taken
just before its XADD was sent); the handler's first action is ``time.time()``, so
the latency covers XADD, the consumer's read, decoding and dispatch. Messages of the
warm-up are not counted. Both processes share the machine's clock.

    python benchmarks/latency.py [--rates 1000,5000,20000] [--duration 3] [--impls streamflow,raw-1]
"""

from __future__ import annotations

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
    SF_FIELD,
    Child,
    RawConnection,
    delete_keys,
    emit,
    load1,
    machine_info,
    make_parser,
    median,
    payload_bytes,
    percentiles_ms,
    preload,
    print_table,
    progress,
    redis_server,
    resp,
    sync_client,
    verify_group,
)
from benchmarks.raw_loop import Counter

IMPLS = ("streamflow", "raw-1")


# --------------------------------------------------------------------------- consumers (children)


class Recorder:
    """Latency samples of the non-warm-up messages; ``done`` once ``n`` messages arrived."""

    def __init__(self, n: int, warm: int) -> None:
        self.counter = Counter(n)
        self.warm = warm
        self.samples: list[float] = []

    def record(self, now: float, payload: bytes | Any) -> None:
        obj = json.loads(payload) if isinstance(payload, bytes | str) else payload
        if obj["id"] >= self.warm:
            self.samples.append(now - obj["ts"])
        self.counter.hit()


async def _signal_ready(url: str, stream: str) -> None:
    client = aioredis.Redis.from_url(url)
    await client.set(f"{stream}:ready", 1)
    await client.aclose()


async def latency_streamflow(params: dict[str, Any]) -> dict[str, Any]:
    """Child: a streamflow Worker whose handler records publish -> handler-start latency."""
    from streamflow import App, Message, Worker

    url, stream, group = params["url"], params["stream"], params["group"]
    rec = Recorder(params["n"], params["warm"])
    app = App(redis_url=url)

    async def handler(msg: Message) -> None:
        rec.record(time.time(), msg.payload)

    app.handler(stream, group=group, concurrency=int(params["concurrency"]), start_id="0")(handler)
    worker = Worker(app, app.settings(redis_url=url), handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.serve)
        await worker.ready.wait()
        await _signal_ready(url, stream)
        with anyio.move_on_after(params["timeout"]):
            await rec.counter.done.wait()
        await anyio.sleep(0.05)  # let the last acks flush before stopping
        worker.stop()
    return {"count": rec.counter.count, **percentiles_ms(rec.samples), "samples": len(rec.samples)}


async def latency_raw(params: dict[str, Any]) -> dict[str, Any]:
    """Child: the raw single loop (XREADGROUP COUNT 1000 BLOCK 1000, one XACK per batch)."""
    url, stream, group = params["url"], params["stream"], params["group"]
    rec = Recorder(params["n"], params["warm"])
    client = aioredis.Redis.from_url(url)

    async def handler(payload: bytes) -> None:
        rec.record(time.time(), payload)

    async def read_loop() -> None:
        while True:
            reply = await client.xreadgroup(group, "raw-0", {stream: ">"}, count=1000, block=1000)
            for _stream, entries in reply or ():
                for _id, fields in entries:
                    await handler(fields[SF_FIELD])
                if entries:
                    await client.xack(stream, group, *[e[0] for e in entries])

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_loop)
        await client.ping()
        await _signal_ready(url, stream)
        with anyio.move_on_after(params["timeout"]):
            await rec.counter.done.wait()
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    await client.aclose()
    return {"count": rec.counter.count, **percentiles_ms(rec.samples), "samples": len(rec.samples)}


TARGETS = {"streamflow": "benchmarks.latency:latency_streamflow", "raw-1": "benchmarks.latency:latency_raw"}


# --------------------------------------------------------------------------- publisher (parent)


def publish_paced(url: str, stream: str, total: int, rate: float) -> float:
    """XADD ``total`` payloads at ``rate`` msg/s (each stamped when sent); return the achieved rate."""
    conn = RawConnection(url)
    key = stream.encode()
    sent = 0
    t0 = time.perf_counter()
    try:
        while sent < total:
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            if due > sent:
                now = time.time()
                conn.call_many([resp(b"XADD", key, b"*", SF_FIELD, payload_bytes(i, now))
                                for i in range(sent, due)])
                sent = due
            else:
                wait = min(0.0002, sent / rate - (time.perf_counter() - t0))
                if wait > 0:
                    time.sleep(wait)
    finally:
        conn.close()
    return total / (time.perf_counter() - t0)


def measure(url: str, impl: str, rate: int, run: int, args: Any) -> dict[str, Any]:
    stream = f"bench:latency:{impl}:{rate}:{run}"
    warm = int(rate * args.warmup)
    main_n = max(1, min(args.messages, int(rate * args.duration)))
    total = warm + main_n
    preload(url, stream, 0)  # empty stream + group at 0
    params = {"url": url, "stream": stream, "group": GROUP, "n": total, "warm": warm,
              "concurrency": args.concurrency, "uvloop": bool(args.uvloop),
              "timeout": total / rate + 30}
    child = Child(TARGETS[impl], params).start()
    client = sync_client(url)
    deadline = time.monotonic() + 60
    try:
        while not client.exists(f"{stream}:ready"):
            if not child.alive() or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        achieved = publish_paced(url, stream, total, rate) if child.alive() else None
    finally:
        client.close()
    res = child.wait(timeout=total / rate + 60)
    check = verify_group(url, stream, GROUP, total)
    delete_keys(url, stream, f"{stream}:ready")
    valid = bool("error" not in res and res.get("count") == total and check["valid"])
    line: dict[str, Any] = {
        "bench": "latency", "impl": impl, "rate": rate, "run": run, "msgs": main_n,
        "achieved_rate": round(achieved) if achieved else None,
        **{k: res.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")},
        "valid": valid, "loop": "uvloop" if args.uvloop else "asyncio", "load1": load1(),
    }
    if impl == "streamflow":
        line["concurrency"] = args.concurrency
    if not valid:
        line["why"] = res.get("error") or check.get("why") or f"count={res.get('count')}/{total}"
        if res.get("log"):
            progress(f"--- {impl} @ {rate}/s child output ---\n{res['log']}")
    emit(line)
    return line


def main() -> int:
    p = make_parser(__doc__.splitlines()[0], messages=1_000_000, runs=3)
    p.add_argument("--rates", default="1000,5000,20000", help="msg/s, comma-separated")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per rate (default 3)")
    p.add_argument("--warmup", type=float, default=0.5, help="uncounted seconds first (default 0.5)")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated: streamflow,raw-1")
    p.add_argument("--concurrency", type=int, default=100, help="streamflow concurrency (default 100)")
    args = p.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    impls = [i for i in args.impls.split(",") if i]
    if bad := [i for i in impls if i not in TARGETS]:
        p.error(f"unknown implementation(s) {bad}")

    results = []
    with redis_server(args.redis_url) as url:
        emit(machine_info(url))
        for rate in rates:
            for run in range(1, args.runs + 1):
                for impl in impls:
                    progress(f"[latency] {impl} at {rate}/s run {run}/{args.runs}")
                    results.append(measure(url, impl, rate, run, args))
    rows = []
    for rate in rates:
        for impl in impls:
            rs = [r for r in results if r["rate"] == rate and r["impl"] == impl and r["valid"]]
            summary = {"bench": "latency", "summary": True, "impl": impl, "rate": rate, "valid_runs": len(rs),
                       **{k: median(r[k] for r in rs) for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms")}}
            emit(summary)
            rows.append([rate, impl, f"{len(rs)}/{args.runs}", summary["p50_ms"], summary["p99_ms"],
                         summary["p999_ms"], summary["max_ms"]])
    print_table("latency: publish -> handler start, ms (median over runs)",
                ["rate/s", "impl", "valid", "p50", "p99", "p999", "max"], rows, args.json_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
