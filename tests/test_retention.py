"""Retention: ``Reclaimer.trim`` / ``safe_trim_floor`` never trim an entry some group still
needs (pending or not yet delivered), and keep fully acknowledged streams bounded.

Property-based (hypothesis, derandomized) on Redis 7 and Valkey 9, plus fixed cases for
``max_len``, ``max_age`` and a running worker.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from failapps.support import make_consumer, raw_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamflow import App, Message, Retention
from streamflow.keys import parse_id
from streamflow.runtime.maintenance import safe_trim_floor
from streamflow.testing import fast_settings, passes, running_worker, wait_until

# One macro node of a stream holds at most stream-node-max-entries (100 by default on
# both servers) entries; approximate (~) trimming removes whole nodes only, so up to one
# node's worth of trimmable entries may survive a trim.
NODE_SLACK = 100

Id = tuple[int, int]


@dataclass
class GroupCase:
    """One consumer group of a generated case."""

    at_end: bool  # created with "$" between the two publish phases, else with "0"
    delivered: int  # entries delivered to it (clamped to what it can see)
    ack_ratio: float  # share of delivered entries acked
    seed: int  # which ones are acked


@dataclass
class Case:
    """A generated retention scenario."""

    before: int  # entries published before the groups are created
    after: int  # entries published after
    step_ms: int  # 0: ids from the server clock; else explicit ids step_ms apart, in the past
    groups: list[GroupCase]
    max_len: int | None
    max_age: float | None
    trims: int  # trim calls in a row


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Random streams, groups, deliveries, acks and retention policies."""
    before = draw(st.integers(0, 250))
    after = draw(st.integers(0, 250))
    groups = draw(st.lists(
        st.builds(GroupCase, at_end=st.booleans(), delivered=st.integers(0, 500),
                  ack_ratio=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
                  seed=st.integers(0, 2**16)),
        min_size=1, max_size=3,
    ))
    max_len = draw(st.none() | st.integers(0, 150))
    max_age = draw(st.none() | st.floats(0.5, 150.0) if max_len is not None
                   else st.floats(0.5, 150.0))
    return Case(before=before, after=after, step_ms=draw(st.sampled_from([0, 1, 300])),
                groups=groups, max_len=max_len, max_age=max_age,
                trims=draw(st.integers(1, 3)))


def _successor(entry: Id) -> Id:
    return entry[0], entry[1] + 1


async def _publish(client: Any, n: int, first_ms: int | None, step_ms: int,
                   offset: int) -> list[Id]:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        entry = "*" if first_ms is None else f"{first_ms + (offset + i) * step_ms}-{offset + i}"
        pipe.execute_command("XADD", "s", entry, "i", offset + i)
    return [parse_id(r) for r in await pipe.execute()]


def _retention_app(url: str, policy: Retention) -> App:
    app = App(redis_url=url)

    @app.handler("s", group="g0", retention=policy)
    async def noop(msg: Message) -> None:
        pass

    return app


async def _run_case(url: str, case: Case) -> None:
    policy = Retention(max_len=case.max_len, max_age=case.max_age)
    async with raw_client(url) as client:
        await client.flushall()
        first_ms = None
        if case.step_ms:
            span = (case.before + case.after) * case.step_ms
            first_ms = int(time.time() * 1000) - span - 1000
        ids = await _publish(client, case.before, first_ms, case.step_ms, 0)
        starts: list[int] = []  # index of the first entry each group can see
        for j, g in enumerate(case.groups):
            await client.execute_command("XGROUP", "CREATE", "s", f"g{j}",
                                         "$" if g.at_end else "0", "MKSTREAM")
            starts.append(case.before if g.at_end else 0)
        ids += await _publish(client, case.after, first_ms, case.step_ms, case.before)

        needed: set[Id] = set()  # pending or undelivered for some group
        floors: list[Id] = []
        for j, g in enumerate(case.groups):
            visible = ids[starts[j]:]
            delivered = visible[:min(g.delivered, len(visible))]
            if delivered:
                await client.execute_command("XREADGROUP", "GROUP", f"g{j}", "c", "COUNT",
                                             len(delivered), "STREAMS", "s", ">")
            rng = random.Random(g.seed)
            acked = [e for e in delivered if rng.random() < g.ack_ratio]
            if acked:
                await client.execute_command("XACK", "s", f"g{j}",
                                             *[f"{ms}-{seq}" for ms, seq in acked])
            pending = set(delivered) - set(acked)
            needed |= pending | set(visible[len(delivered):])
            last = delivered[-1] if delivered else (
                ids[starts[j] - 1] if starts[j] > 0 else (0, 0))
            floors.append(min([_successor(last), *pending]))

        assert await safe_trim_floor(client, "s") == min(floors)

        app = _retention_app(url, policy)
        consumer = make_consumer(app, client, fast_settings(app, url))
        reclaimer = consumer.maintenance
        # Model of what the policy may drop, computed before trimming so that it never
        # asks for less than the real (later) age cutoff: keep the entries from index keep_from.
        keep_from = 0
        if case.max_len is not None and len(ids) > case.max_len:
            keep_from = len(ids) - case.max_len
        if case.max_age is not None:
            cutoff = (int(time.time() * 1000 - case.max_age * 1000), 0)
            keep_from = max(keep_from, sum(1 for e in ids if e < cutoff))
        floor_index = sum(1 for e in ids if e < min(floors))
        for _ in range(case.trims):
            await reclaimer.trim("s")

        rows = await client.execute_command("XRANGE", "s", "-", "+")
        remaining = {parse_id(r[0]) for r in rows or []}
        assert needed <= remaining, sorted(needed - remaining)[:5]
        assert remaining >= set(ids[floor_index:])  # nothing at or above the floor goes
        assert len(remaining) <= len(ids) - min(keep_from, floor_index) + NODE_SLACK


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
def test_trim_never_drops_pending_or_undelivered(any_redis_url: str, case: Case) -> None:
    """For random deliveries, acks and policies, trimming keeps every pending and undelivered entry
    and stays within one node of the policy."""
    anyio.run(_run_case, any_redis_url, case)


async def _consume_all(client: Any, group: str, *, ack: bool = True) -> list[bytes]:
    reply = await client.execute_command("XREADGROUP", "GROUP", group, "c", "COUNT", 100_000,
                                         "STREAMS", "s", ">")
    ids = [e[0] for _, entries in reply or [] for e in entries]
    if ack and ids:
        await client.execute_command("XACK", "s", group, *ids)
    return ids


@pytest.mark.anyio
async def test_max_len_bounds_fully_acked_stream(any_redis_url: str) -> None:
    """With every entry acked, Retention(max_len=100) trims a 1000-entry stream to between 100 and
    100 + one node."""
    async with raw_client(any_redis_url) as client:
        await client.execute_command("XGROUP", "CREATE", "s", "g0", "$", "MKSTREAM")
        ids = await _publish(client, 1000, None, 0, 0)
        assert len(await _consume_all(client, "g0")) == 1000
        app = _retention_app(any_redis_url, Retention(max_len=100))
        reclaimer = make_consumer(app, client, fast_settings(app, any_redis_url)).maintenance
        await reclaimer.trim("s")
        length = int(await client.execute_command("XLEN", "s"))
        assert 100 <= length <= 100 + NODE_SLACK
        rows = await client.execute_command("XRANGE", "s", "-", "+")
        assert [parse_id(r[0]) for r in rows] == ids[-length:]


@pytest.mark.anyio
async def test_max_age_trims_old_acked_entries_only(any_redis_url: str) -> None:
    """Retention(max_age=10) drops acked entries older than 10 s (whole nodes) and keeps recent ones
    and an old pending one."""
    async with raw_client(any_redis_url) as client:
        now = int(time.time() * 1000)
        await client.execute_command("XGROUP", "CREATE", "s", "g0", "0", "MKSTREAM")
        old = await _publish(client, 300, now - 60_000, 100, 0)  # 60 s .. 30 s ago
        new = await _publish(client, 20, None, 0, 300)
        await _consume_all(client, "g0")
        app = _retention_app(any_redis_url, Retention(max_age=10))
        reclaimer = make_consumer(app, client, fast_settings(app, any_redis_url)).maintenance
        await reclaimer.trim("s")
        remaining = [parse_id(r[0]) for r in await client.execute_command("XRANGE", "s", "-", "+")]
        assert set(new) <= set(remaining)
        assert len(set(old) & set(remaining)) < NODE_SLACK

        # A second group still holding an old entry pending protects it and all after it.
        await client.execute_command("DEL", "s")
        await client.execute_command("XGROUP", "CREATE", "s", "g0", "0", "MKSTREAM")
        await client.execute_command("XGROUP", "CREATE", "s", "g1", "0")
        old = await _publish(client, 300, now - 60_000, 100, 0)
        new = await _publish(client, 20, None, 0, 300)
        await _consume_all(client, "g0")
        delivered = await _consume_all(client, "g1", ack=False)
        await client.execute_command("XACK", "s", "g1", *delivered[:150], *delivered[151:])
        await reclaimer.trim("s")
        remaining = [parse_id(r[0]) for r in await client.execute_command("XRANGE", "s", "-", "+")]
        assert set(old[150:]) | set(new) <= set(remaining)
        assert len(set(old[:150]) & set(remaining)) < NODE_SLACK


@pytest.mark.anyio
async def test_worker_retention_waits_for_lagging_group(redis_url: str) -> None:
    """A worker with Retention(max_len=100) trims nothing while another group lags, then bounds the
    stream once it is gone."""
    handled: list[str] = []
    async with raw_client(redis_url) as client, App(redis_url=redis_url) as app:

        @app.handler("s", group="g0", retention=Retention(max_len=100))
        async def work(msg: Message) -> None:
            handled.append(msg.id)

        # dead_consumer_after=10 -> maintenance (prune + trim) every second.
        async with running_worker(app, redis_url, dead_consumer_after=10) as w:
            await client.execute_command("XGROUP", "CREATE", "s", "lagging", "$")
            await app.publish_many("s", [{"n": i} for i in range(1000)])
            await wait_until(lambda: len(handled) == 1000, what="every entry handled")
            await wait_until(lambda: w.stats().acked == 1000, what="every entry acked")
            # One whole maintenance pass after that, with the lagging group still there.
            await passes(w, maintenance=2)
            assert int(await client.execute_command("XLEN", "s")) == 1000
            await client.execute_command("XGROUP", "DESTROY", "s", "lagging")

            async def bounded() -> bool:
                return int(await client.execute_command("XLEN", "s")) <= 100 + NODE_SLACK
            await wait_until(bounded, timeout=5, what="the stream to be trimmed")
            assert int(await client.execute_command("XLEN", "s")) >= 100
