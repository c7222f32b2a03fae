"""The checker every chaos test ends with, and the probes behind the invariants.

:func:`check` sorts every id XADD returned into the categories of Jepsen's queue checker:

* **handled**: at least one execution completed (an ``end`` record in the ledger);
* **dead-lettered**: never completed, and a dead-letter record names it;
* **lost**: neither (and not removed from the stream on purpose by the fault itself);
* **duplicated**: handled, with more than one completed execution (a subset of handled).

Invariants (asserted by :meth:`ChaosResult.assert_invariants`, figures kept in the result):

* I1 no loss: ``lost == 0`` and XPENDING is 0 at the end;
* I2 duplicates counted, and at most the in-flight window the fault could cut
  (measured by the test, e.g. the dead consumer's PEL at the moment of a kill);
* I3 recovery: measured by the test (:func:`wait_for` returns seconds) and bounded there;
* I4 no busy loop: :func:`idle_call_rate` (``INFO commandstats``) and :func:`cpu_fraction`;
* I5 memory bounded: :func:`rss_bytes` of worker processes, ``used_memory`` of the server.

Each result is appended as one JSON line to ``$STREAMFLOW_CHAOS_RESULTS`` when set (the
figures of docs/reliability.md come from there).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from streamflow.testing import wait_until_blocking

from .ledger import Execution

__all__ = [
    "FULL",
    "ChaosResult",
    "check",
    "consumer_pending",
    "cpu_fraction",
    "dlq_ids",
    "idle_call_rate",
    "pending_count",
    "record",
    "rss_bytes",
    "wait_for",
]

FULL = os.environ.get("STREAMFLOW_CHAOS_FULL", "") == "1"
RESULTS_ENV = "STREAMFLOW_CHAOS_RESULTS"


@dataclass
class ChaosResult:
    """The figures of one fault run."""

    fault: str
    produced: int
    handled: int
    dead_lettered: int
    lost: int
    duplicated: int  # ids completed more than once
    extra_completions: int  # completions beyond the first, over all ids
    unexpected: int  # ids completed that the producer never got back from XADD
    pending_end: int  # XPENDING count at the end
    overlaps: int  # ids with two completed executions overlapping in time
    removed_by_fault: int = 0  # ids the fault deleted from Redis on purpose (excluded)
    recovery_s: float | None = None
    in_flight_window: int | None = None  # most duplicates the fault could cause (I2)
    size: str = field(default_factory=lambda: "full" if FULL else "reduced")
    notes: dict[str, Any] = field(default_factory=dict)
    lost_sample: list[str] = field(default_factory=list)

    def assert_invariants(self, *, allow_overlap: bool = False) -> None:
        """I1 (no loss, empty PEL) and I2 (duplicates within the in-flight window)."""
        assert self.lost == 0, f"I1: {self.lost} lost, e.g. {self.lost_sample}: {self.summary()}"
        assert self.pending_end == 0, f"I1: XPENDING is {self.pending_end} at the end: {self.summary()}"
        if self.in_flight_window is not None:
            assert self.duplicated <= self.in_flight_window, (
                f"I2: {self.duplicated} duplicates > in-flight window {self.in_flight_window}: "
                f"{self.summary()}"
            )
        if not allow_overlap:
            assert self.overlaps == 0, f"{self.overlaps} ids ran twice at the same time: {self.summary()}"

    def summary(self) -> str:
        keys = ("fault", "produced", "handled", "dead_lettered", "lost", "duplicated",
                "unexpected", "pending_end", "overlaps", "removed_by_fault", "recovery_s",
                "in_flight_window")
        data = asdict(self)
        text = ", ".join(f"{k}={data[k]}" for k in keys)
        return f"{text}, notes={self.notes}"


def check(
    fault: str,
    produced: Iterable[str],
    *,
    executions: list[Execution] | None = None,
    counts: dict[str, int] | None = None,
    dead_letters: Iterable[str] = (),
    pending_end: int = 0,
    removed: Iterable[str] = (),
    recovery_s: float | None = None,
    in_flight_window: int | None = None,
    notes: dict[str, Any] | None = None,
) -> ChaosResult:
    """Classify every produced id (see the module doc) and compute the figures."""
    produced_set = set(produced)
    removed_set = set(removed) & produced_set
    completions: Counter[str] = Counter()
    completed_runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    if executions is not None:
        for ex in executions:
            if ex.end is not None:
                completions[ex.id] += 1
                completed_runs[ex.id].append((ex.start or ex.end, ex.end))
    if counts is not None:
        for key, n in counts.items():
            completions[key] += n
    dlq = Counter(dead_letters)
    handled = {i for i in produced_set if completions[i] > 0}
    dead = {i for i in produced_set - handled if dlq[i] > 0}
    lost = sorted(produced_set - handled - dead - removed_set)
    duplicated = [i for i in handled if completions[i] > 1]
    overlaps = 0
    for runs in completed_runs.values():
        if len(runs) > 1:
            runs.sort()
            if any(b[0] < a[1] for a, b in pairwise(runs)):
                overlaps += 1
    extra_notes = dict(notes or {})
    twice_dead = sum(1 for i in produced_set if dlq[i] > 1)
    if twice_dead:
        extra_notes["dead_lettered_twice"] = twice_dead
    both = len({i for i in handled if dlq[i] > 0})
    if both:
        extra_notes["handled_and_dead_lettered"] = both
    return ChaosResult(
        fault=fault,
        produced=len(produced_set),
        handled=len(handled),
        dead_lettered=len(dead),
        lost=len(lost),
        duplicated=len(duplicated),
        extra_completions=sum(completions[i] - 1 for i in duplicated),
        unexpected=len([i for i in completions if i not in produced_set]),
        pending_end=pending_end,
        overlaps=overlaps,
        removed_by_fault=len(removed_set),
        recovery_s=None if recovery_s is None else round(recovery_s, 3),
        in_flight_window=in_flight_window,
        notes=extra_notes,
        lost_sample=lost[:20],
    )


def record(result: ChaosResult) -> ChaosResult:
    """Append ``result`` as a JSON line to ``$STREAMFLOW_CHAOS_RESULTS`` (when set)."""
    path = os.environ.get(RESULTS_ENV)
    if path:
        row = {**asdict(result), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row, sort_keys=True) + "\n")
    return result


# -- Redis probes (sync client) -------------------------------------------------------------


def _nogroup(exc: Exception) -> bool:
    text = str(exc)
    return "NOGROUP" in text or "no such key" in text.lower()


def pending_count(client: Any, stream: str, group: str) -> int:
    """XPENDING summary count (0 when the group or stream does not exist)."""
    try:
        return int(client.xpending(stream, group)["pending"])
    except Exception as exc:
        if _nogroup(exc):
            return 0
        raise


def consumer_pending(client: Any, stream: str, group: str) -> dict[str, int]:
    """Pending entries per consumer name (XINFO CONSUMERS)."""
    try:
        rows = client.xinfo_consumers(stream, group)
    except Exception as exc:
        if _nogroup(exc):
            return {}
        raise
    out: dict[str, int] = {}
    for row in rows or []:
        info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in row.items()}
        name = info["name"]
        out[name.decode() if isinstance(name, bytes) else name] = int(info["pending"])
    return out


def pending_ids(client: Any, stream: str, group: str, consumer: str | None = None) -> list[str]:
    """Ids pending in ``group`` (optionally only those of ``consumer``)."""
    try:
        rows = client.xpending_range(stream, group, "-", "+", 1_000_000, consumername=consumer)
    except Exception as exc:
        if _nogroup(exc):
            return []
        raise
    out = []
    for r in rows or []:
        mid = r["message_id"]
        out.append(mid.decode() if isinstance(mid, bytes) else mid)
    return out


def dlq_ids(client: Any, dlq: str) -> list[str]:
    """Original ids named by the records of dead-letter stream ``dlq`` (one per record)."""
    out: list[str] = []
    start = "-"
    while True:
        rows = client.xrange(dlq, start, "+", count=10_000)
        if not rows:
            return out
        for _rid, fields in rows:
            value = fields.get(b"dlq:id") or fields.get("dlq:id")
            out.append(value.decode() if isinstance(value, bytes) else value)
        if len(rows) < 10_000:
            return out
        start = "(" + rows[-1][0].decode()


def dlq_error_types(client: Any, dlq: str) -> Counter[str]:
    """How many dead-letter records per ``dlq:error_type``."""
    out: Counter[str] = Counter()
    for _rid, fields in client.xrange(dlq, "-", "+"):
        out[fields[b"dlq:error_type"].decode()] += 1
    return out


def command_calls(client: Any) -> dict[str, int]:
    """``INFO commandstats``: calls per command."""
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def idle_call_rate(client: Any, seconds: float, exclude: tuple[str, ...] = ("info",)) -> float:
    """Commands per second the server executed during ``seconds`` (our INFO calls excluded)."""
    before = command_calls(client)
    time.sleep(seconds)
    after = command_calls(client)
    total = sum(n - before.get(k, 0) for k, n in after.items() if k not in exclude)
    return total / seconds


def _proc_times(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / ticks  # utime + stime


def cpu_fraction(pid: int, seconds: float) -> float:
    """Share of one core process ``pid`` used during the next ``seconds``."""
    t0, c0 = time.monotonic(), _proc_times(pid)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), _proc_times(pid)
    return (c1 - c0) / (t1 - t0)


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (from /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05, diagnose: Callable[[], str] | None = None) -> float:
    """:func:`streamflow.testing.wait_until_blocking`, returning the seconds it took (I3)."""
    t0 = time.monotonic()
    wait_until_blocking(predicate, timeout=timeout, interval=interval, what=what, detail=diagnose)
    return time.monotonic() - t0
