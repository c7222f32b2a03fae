"""Timing: the duration and latency histograms the slots fill, and how they sample.

The sampling rule is tested with a fake clock (rates the test machine need not reach);
the slot loop with the real :class:`~streamflow.runtime.slots.SlotPool` and a no-op
handler, no Redis (nothing is flushed: the acks stay in their bucket), fast enough that
its slots must sample.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from streamflow import stats
from streamflow.message import Message
from streamflow.runtime.acks import AckBuffer
from streamflow.runtime.slots import SlotPool
from streamflow.runtime.stop import StopSignal
from streamflow.stats import (
    DURATION_BUCKETS,
    LATENCY_BUCKETS,
    TIMED_PER_SECOND,
    Counters,
    HandlerStats,
    Histogram,
    Timing,
)


class FakeClock:
    """Stands in for the ``time`` module of :mod:`streamflow.stats`."""

    def __init__(self) -> None:
        self.now = 1000.0  # perf_counter
        self.wall = 1_700_000_000.0  # time

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(stats, "time", fake)
    return fake


def entry_id(wall: float, age: float) -> bytes:
    return b"%d-0" % int((wall - age) * 1000)


def run(timing: Timing, clock: FakeClock, entries: int, *, gap: float, took: float,
        age: float = 0.0, left: int = 1, weight: int = 1) -> tuple[int, int]:
    """What one slot does for ``entries`` entries ``gap`` s apart; its countdown after."""
    for _ in range(entries):
        clock.now += gap - took
        clock.wall += gap - took
        left -= 1
        if not left:
            began = timing.start(entry_id(clock.wall, age), weight)
        clock.now += took
        clock.wall += took
        if not left:
            left = weight = timing.finish(began, weight)
    return left, weight


def test_below_the_budget_every_entry_is_timed(clock: FakeClock) -> None:
    timing = Timing()
    # 5,000 entries a second (half the budget), each taking 30 ms: all timed, exact counts.
    run(timing, clock, 5000, gap=0.0002, took=0.03, age=3.0)
    assert timing.every == 1 and timing.timed == 5000
    d, lat = timing.durations.snapshot(), timing.latencies.snapshot()
    assert d.count == lat.count == 5000
    assert dict(zip((*DURATION_BUCKETS, "inf"), d.counts, strict=True))[0.05] == 5000
    assert dict(zip((*LATENCY_BUCKETS, "inf"), lat.counts, strict=True))[5.0] == 5000
    assert d.sum == pytest.approx(150.0)
    assert lat.sum == pytest.approx(15_000.0, rel=1e-3)  # ids have whole milliseconds


def test_above_the_budget_a_weighted_sample_stands_for_every_entry(clock: FakeClock) -> None:
    timing = Timing()
    n = 1_000_000  # one second of 1,000,000 entries a second (a 1 us handler): 100 x the budget
    left, weight = run(timing, clock, n, gap=1e-6, took=0.5e-6)
    assert timing.every == 100
    # At most ~the budget timed in that second (a few more while the rate was first measured).
    assert TIMED_PER_SECOND * 0.9 <= timing.timed <= TIMED_PER_SECOND * 1.1
    d = timing.durations.snapshot()
    # The weights add up to every entry but those since the last timed one.
    assert d.count == n - (weight - left)
    assert 0 <= n - d.count < timing.every
    assert d.counts[0] == d.count  # all of them under 0.5 ms
    assert d.sum == pytest.approx(d.count * 0.5e-6)
    assert timing.latencies.snapshot().count == d.count
    cumulative = [c for _, c in d.cumulative()]
    assert cumulative == sorted(cumulative) and cumulative[-1] == d.count


def test_the_interval_follows_the_rate_down_and_up(clock: FakeClock) -> None:
    timing = Timing()
    left, weight = run(timing, clock, 200_000, gap=1e-6, took=0.5e-6)
    assert timing.every == 100
    # The load drops to 10 entries a second: the next timed entry (at most 100 entries
    # later) sees a window of 10 s and 100 entries, and every entry is timed from then on.
    left, weight = run(timing, clock, 100, gap=0.1, took=0.01, left=left, weight=weight)
    assert timing.every == 1
    before = timing.timed
    left, weight = run(timing, clock, 50, gap=0.1, took=0.01, left=left, weight=weight)
    assert timing.timed == before + 50
    # ... and it rises again within 64 timed entries.
    run(timing, clock, 1000, gap=1e-5, took=1e-6, left=left, weight=weight)
    assert timing.every == 10


def test_a_clock_behind_the_server_counts_age_zero(clock: FakeClock) -> None:
    timing = Timing()
    run(timing, clock, 3, gap=0.01, took=0.001, age=-5.0)  # ids 5 s in the future
    lat = timing.latencies.snapshot()
    assert lat.counts[0] == 3 and lat.sum == 0.0


def test_weighted_observations() -> None:
    h = Histogram((0.1, 1.0))
    h.observe(0.05, 3)
    h.observe(0.5)
    h.observe(7.0, 2)
    snap = h.snapshot()
    assert snap.counts == (3, 1, 2) and snap.count == 6
    assert snap.sum == pytest.approx(0.15 + 0.5 + 14.0)
    assert snap.cumulative() == [(0.1, 3), (1.0, 4), (float("inf"), 6)]


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="budget"):
        Timing(budget=0)


def test_counters_without_metrics_have_no_timing() -> None:
    counters = Counters()
    assert counters.timing is None
    snap = HandlerStats.of(counters, handler="h", group="g", streams=("s",), concurrency=1,
                           in_flight=0, running=0, reserved=0)
    assert snap.durations is None and snap.latencies is None and snap.timed == 0


async def _through_slots(handler: Any, n: int, *, histograms: bool, age: float = 3.0,
                         batch: int = 50) -> Counters:
    """``n`` entries ``age`` s old through a real SlotPool of 50 slots; its counters."""
    acker = AckBuffer(None)
    counters = Counters(histograms=histograms)
    failures: list[BaseException] = []

    async def failed(msg: Message, exc: BaseException) -> None:
        failures.append(exc)
        counters.failed += 1

    pool = SlotPool(handler, concurrency=50, acker=acker, group="g", keys=("s",),
                    counters=counters, stop=StopSignal(), on_failure=failed)
    ms = int((time.time() - age) * 1000)
    acks = acker.bucket("s", "g")
    async with pool.open():
        for first in range(0, n, batch):  # as a read loop does: reserve, queue, release
            entries = [Message(b"%d-%d" % (ms, i), None, "s", "g", key="s")
                       for i in range(first, min(n, first + batch))]
            promised = await pool.reserve(len(entries), len(entries))
            pool.submit(entries)
            pool.release(promised)
            pool.release(await pool.reserve(50, 50))  # every slot free: the batch handled
            acks.clear()
    assert counters.handled + counters.failed == n
    return counters


@pytest.mark.anyio
async def test_slots_sample_a_fast_handler() -> None:
    async def noop(msg: Message) -> None:
        return None

    n = 200_000
    started = time.perf_counter()
    counters = await _through_slots(noop, n, histograms=True)
    seconds = time.perf_counter() - started
    timing = counters.timing
    assert timing is not None
    snap = HandlerStats.of(counters, handler="h", group="g", streams=("s",), concurrency=50,
                           in_flight=0, running=0, reserved=0)
    d, lat = snap.durations, snap.latencies
    assert d is not None and lat is not None
    # Far more than the budget a second: a sample was timed, within the budget (plus the
    # first window's 64 and each slot's first entry) ...
    assert n / seconds > 5 * TIMED_PER_SECOND, "too slow to test the sampling"
    assert timing.every > 1
    assert snap.timed <= TIMED_PER_SECOND * seconds * 1.5 + 64 + 50
    assert snap.timed < n / 4
    # ... standing for every entry but, per slot, fewer than ``every`` since its last one.
    assert d.count == lat.count
    assert 0 <= n - d.count < 50 * timing.every
    assert d.count > n * 0.9
    # A no-op takes well under 0.5 ms; entries 3 s old land in (2.5, 5].
    assert d.counts[0] == d.count
    assert dict(zip((*LATENCY_BUCKETS, "inf"), lat.counts, strict=True))[5.0] == lat.count
    assert 2.9 * lat.count <= lat.sum <= 4.0 * lat.count


@pytest.mark.anyio
async def test_slots_time_every_entry_of_a_slow_handler_and_failures_too() -> None:
    async def slow(msg: Message) -> None:
        await asyncio.sleep(0.01)
        if msg.raw_id.endswith(b"7"):
            raise ValueError("boom")

    counters = await _through_slots(slow, 300, histograms=True, age=0.0)
    timing = counters.timing
    assert timing is not None
    assert counters.failed == 30 and counters.handled == 270
    # 50 slots of 10 ms handlers: 5,000 a second, under the budget: all timed, exact.
    assert timing.every == 1 and timing.timed == 300
    d = timing.durations.snapshot()
    assert d.count == 300 == timing.latencies.snapshot().count
    assert dict(zip((*DURATION_BUCKETS, "inf"), d.counts, strict=True))[0.025] >= 290


@pytest.mark.anyio
async def test_slots_without_metrics_time_nothing() -> None:
    async def noop(msg: Message) -> None:
        return None

    counters = await _through_slots(noop, 1000, histograms=False)
    assert counters.timing is None and counters.handled == 1000
