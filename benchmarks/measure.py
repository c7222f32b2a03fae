"""Measuring consumers: one run (preload, consume in a child process, verify) and a whole set.

:func:`measure` preloads a stream, runs an implementation's consumer in a fresh process
(:func:`benchmarks.common.run_child`) and verifies the group afterwards; :func:`measure_all`
runs every scenario x implementation x run (interleaved) and prints the summaries, the
``streamflow/impl`` ratios and the table. Used by throughput.py and raw_loop.py.

An implementation is a dict: ``impl`` (its name), ``target`` (``module:function`` the
child runs), ``params``, and optionally ``entries`` (a peer's wire format), ``peer``
(capped at ``--peer-messages``) and ``no_redis`` (the ``bare`` ceiling).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from benchmarks.common import (
    GROUP,
    delete_keys,
    emit,
    load1,
    median,
    preload,
    print_table,
    progress,
    run_child,
    verify_group,
)

#: ``targets(summaries, ratios, scenarios) -> [[target, value, wanted, met], ...]``.
Targets = Callable[
    [dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], float], list[str]], list[list[Any]]
]

#: A peer's entries in its wire format, built once per (peer family, n) for every run.
_entry_cache: dict[tuple[str, int], Any] = {}


def measure(url: str, impl: dict[str, Any], scenario: str, n: int, run: int, args: argparse.Namespace,
            bench: str) -> dict[str, Any]:
    """Preload, consume in a child process, verify; return the result line (also emitted).

    An implementation marked ``no_redis`` (the ``bare`` ceiling) skips the preload and the
    group check: it is valid when its child did the work ``n`` times.
    """
    name = impl["impl"]
    no_redis = bool(impl.get("no_redis"))
    params = {**impl["params"], "n": n, "scenario": scenario, "uvloop": bool(args.uvloop)}
    redis_fields: dict[str, Any] = {"no_redis": True}
    if not no_redis:
        stream = f"bench:{bench}:{name}:{scenario}:{run}"
        entry = None
        if impl.get("entries") is not None:
            key = (name.split("-")[0], n)
            if key not in _entry_cache:
                _entry_cache[key] = impl["entries"](n)
            entry = _entry_cache[key]
        preload_s = preload(url, stream, n, entry=entry)
        params.update(url=url, stream=stream, group=GROUP)
    res = run_child(impl["target"], params, timeout=90 + n / 1000)
    check: dict[str, Any] = {"valid": True}
    if not no_redis:
        check = verify_group(url, stream, GROUP, n)
        delete_keys(url, stream)
        redis_fields = {"pending": check.get("pending"), "lag": check.get("lag"),
                        "preload_rate": round(n / preload_s)}
    valid = bool("error" not in res and res.get("acked") and res.get("handled") == n and check["valid"])
    seconds = res.get("seconds")
    line: dict[str, Any] = {
        "bench": bench, "scenario": scenario, "impl": name, "msgs": n, "run": run,
        "seconds": round(seconds, 4) if seconds else None,
        "rate": round(n / seconds) if seconds else None, "valid": valid, **redis_fields,
        "loop": "uvloop" if args.uvloop else "asyncio", "load1": load1(),
    }
    for k in ("handled_seconds", "first_seconds", "reads", "high_water", "ack_flushes"):
        if res.get(k) is not None:
            line[k] = round(res[k], 4) if isinstance(res[k], float) else res[k]
    if "concurrency" in impl["params"]:
        line["concurrency"] = impl["params"]["concurrency"]
    if not valid:
        line["why"] = res.get("error") or check.get("why") or f"handled={res.get('handled')}"
        if res.get("log"):
            progress(f"--- {name}/{scenario} child output ---\n{res['log']}")
    emit(line)
    return line


def measure_all(url: str, impls: list[dict[str, Any]], scenarios: list[str], args: argparse.Namespace,
                bench: str, targets: Targets | None = None) -> list[dict[str, Any]]:
    """Every scenario x implementation x run (runs interleaved); summaries, ratios and the table.

    ``targets(summaries, ratios, scenarios)``, when given, returns ``[target, value, wanted,
    met]`` rows, printed as a last table (throughput.py's issue targets).
    """
    results: list[dict[str, Any]] = []
    for scenario in scenarios:
        for run in range(1, args.runs + 1):
            for impl in impls:
                n = args.messages
                if impl.get("peer"):
                    n = min(n, args.peer_messages)
                progress(f"[{bench}] {scenario} {impl['impl']} run {run}/{args.runs} ({n:,} msgs)")
                results.append(measure(url, impl, scenario, n, run, args, bench))

    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    for scenario in scenarios:
        for impl in impls:
            rows = [r for r in results if r["scenario"] == scenario and r["impl"] == impl["impl"]]
            rates = [r["rate"] for r in rows if r["valid"]]
            s = {"bench": bench, "summary": True, "scenario": scenario, "impl": impl["impl"],
                 "msgs": rows[0]["msgs"] if rows else None, "runs": len(rows), "valid_runs": len(rates),
                 "rate_median": median(rates), "rate_min": min(rates, default=None),
                 "rate_max": max(rates, default=None)}
            summaries[(scenario, impl["impl"])] = s
            emit(s)
    ratios: dict[tuple[str, str], float] = {}
    for scenario in scenarios:
        sf = summaries.get((scenario, "streamflow"))
        if not sf or not sf["rate_median"]:
            continue
        for impl in impls:
            other = summaries[(scenario, impl["impl"])]
            if impl["impl"] == "streamflow" or not other["rate_median"]:
                continue
            value = sf["rate_median"] / other["rate_median"]
            ratios[(scenario, impl["impl"])] = value
            emit({"bench": bench, "scenario": scenario, "ratio": f"streamflow/{impl['impl']}",
                  "value": round(value, 3)})

    rows_out = []
    for scenario in scenarios:
        for impl in impls:
            s = summaries[(scenario, impl["impl"])]
            ratio = ratios.get((scenario, impl["impl"]))
            rows_out.append([scenario, impl["impl"], s["msgs"], f"{s['valid_runs']}/{s['runs']}",
                             s["rate_median"], s["rate_min"], s["rate_max"],
                             f"{ratio:.2f}x" if ratio else ""])
    print_table(f"{bench}: msg/s consumed + acked (median of valid runs; "
                f"{'uvloop' if args.uvloop else 'asyncio'} loop)",
                ["scenario", "impl", "msgs", "valid", "median", "min", "max", "streamflow/impl"],
                rows_out, args.json_only)
    if targets is not None:
        print_table("targets (from the medians above)", ["target", "value", "wanted", "met"],
                    targets(summaries, ratios, scenarios), args.json_only)
    return results
