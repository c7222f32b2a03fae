"""``streamflow info`` on live and stopped consumers, parked retries and restricted ACL users.

Against private servers, with real workers in-process and ``python -m streamflow info``
subprocesses; ACL users are created through the default user and deleted afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from failapps.support import raw_client
from structlog.testing import capture_logs

from streamflow import App, Message, Retry, Worker
from streamflow.keys import RETRY_CONSUMER
from streamflow.permissions import ADMIN_COMMANDS, acl_rules
from streamflow.testing import fast_settings, serving, wait_until

ROOT = Path(__file__).resolve().parents[1]


def sf(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streamflow ARGS`` against ``url`` (given in the environment)."""
    env = {**os.environ, "STREAMFLOW_REDIS_URL": url}
    return subprocess.run([sys.executable, "-m", "streamflow", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT, env=env, check=False)


def info_json(url: str, *streams: str) -> dict[str, Any]:
    """``info --json`` as a document (the command must succeed)."""
    result = sf("info", "--json", *streams, url=url)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def group_of(doc: dict[str, Any], stream: str = "jobs") -> dict[str, Any]:
    (s,) = [s for s in doc["streams"] if s["name"] == stream]
    (g,) = s["groups"]
    return dict(g)


@pytest.fixture
def users(redis_url: str) -> Iterator[Any]:
    """``make(name, rules) -> url`` for ACL users on the private server, deleted afterwards."""
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    made: list[str] = []

    def make(name: str, rules: list[str]) -> str:
        admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">pw-{name}", *rules)
        made.append(name)
        return redis_url.replace("redis://", f"redis://{name}:pw-{name}@", 1)

    yield make
    for name in made:
        admin.execute_command("ACL", "DELUSER", name)
    admin.close()


@pytest.mark.anyio
async def test_info_tells_live_consumers_from_stopped_ones(redis_url: str) -> None:
    """``info`` marks the consumers of serving workers live (one that handled an entry, and one
    that has not been delivered anything yet) and a consumer that left pending entries without
    a running process stopped: in the STATE column and as ``state`` in --json."""
    apps = [App(redis_url=redis_url), App(redis_url=redis_url)]
    for app in apps:

        @app.handler("jobs", group="g")
        async def work(msg: Message) -> None: ...

    w1, w2 = (Worker(a, fast_settings(a, redis_url, visibility_timeout=30), handle_signals=False)
              for a in apps)
    async with raw_client(redis_url) as client:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        await client.xadd("jobs", {"i": "1"})
        await client.execute_command("XREADGROUP", "GROUP", "g", "old-worker", "COUNT", 1,
                                     "STREAMS", "jobs", ">")
        async with serving(w1):
            await client.xadd("jobs", {"i": "2"})
            await wait_until(lambda: w1.handled == 1, what="w1 handling an entry")
            async with serving(w2):
                doc = await anyio.to_thread.run_sync(info_json, redis_url)
                text = (await anyio.to_thread.run_sync(lambda: sf("info", url=redis_url))).stdout
    g = group_of(doc)
    states = {c["name"]: c["state"] for c in g["consumers"]}
    assert states == {w1.name: "live", w2.name: "live", "old-worker": "stopped"}
    assert g["live_consumers"] == 2 and g["consumer_count"] == 3
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if "STATE" in line.split())
    rows = {line.split()[2]: line.split()[3] for line in lines[header + 1:header + 4]}
    assert rows == states, text
    assert "nothing delivered yet" in lines[header + 1 + sorted(states).index(w2.name)]


def test_info_does_not_count_the_retry_consumer(redis_url: str) -> None:
    """A group with one consumer and an entry parked on ``streamflow:retry`` has a consumer count
    of 1; the parked entry shows as waiting for retry, its pseudo-consumer without a state."""
    c = redis.Redis.from_url(redis_url)
    c.xgroup_create("jobs", "g", id="$", mkstream=True)
    ids = [c.xadd("jobs", {"i": str(i)}) for i in range(2)]
    c.execute_command("XREADGROUP", "GROUP", "g", "worker-1", "STREAMS", "jobs", ">")
    c.xclaim("jobs", "g", RETRY_CONSUMER, 0, [ids[0]], justid=True)
    c.close()
    g = group_of(info_json(redis_url))
    assert g["consumer_count"] == 1
    assert g["waiting_for_retry"] == 1
    assert {c["name"]: c["state"] for c in g["consumers"]} == {"worker-1": "stopped",
                                                              RETRY_CONSUMER: None}
    text = sf("info", url=redis_url).stdout
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["STREAM", "GROUP",
                                                                              "CONSUMERS"])
    assert lines[header + 1].split()[:3] == ["jobs", "g", "1"], text  # CONSUMERS


@pytest.mark.anyio
async def test_info_shows_when_parked_retries_are_due(redis_url: str) -> None:
    """With a live worker, ``info`` says when a parked retry runs again from that worker's retry
    policy and reclaim interval; with none, it says "after backoff" and shows the idle time."""
    app = App(redis_url=redis_url)

    @app.handler("jobs", group="g", retry=Retry(max_attempts=3, backoff=20, jitter=0))
    async def work(msg: Message) -> None:
        raise RuntimeError("fails")

    w = Worker(app, fast_settings(app, redis_url, reclaim_interval=0.2), handle_signals=False)
    async with raw_client(redis_url) as client, serving(w):
        await client.xadd("jobs", {"i": "1"})
        await wait_until(lambda: w.stats().retried == 1, what="the entry parked for retry")
        live = await anyio.to_thread.run_sync(info_json, redis_url)
        live_text = (await anyio.to_thread.run_sync(lambda: sf("info", url=redis_url))).stdout
    stopped = info_json(redis_url)
    stopped_text = sf("info", url=redis_url).stdout

    (r,) = group_of(live)["retries"]
    assert r["attempt"] == 1 and r["policy_known"] is True
    assert 15_000 < r["due_in_ms"] <= 20_000 - r["idle_ms"] + 5
    assert r["due_by_ms"] - r["due_in_ms"] == 200  # the worker's reclaim interval
    assert "PARKED RETRY" in live_text and "in 1" in live_text
    (r2,) = group_of(stopped)["retries"]
    assert r2["policy_known"] is False and r2["due_in_ms"] is None and r2["idle_ms"] >= 0
    assert "after backoff (no live worker: policy unknown)" in stopped_text


def test_info_without_names_for_a_user_who_may_not_scan_says_to_name_the_streams(
    redis_url: str, users: Any
) -> None:
    """``info`` without stream names, for a Redis user without SCAN, exits 2 with one line saying
    to name the streams; naming them works."""
    c = redis.Redis.from_url(redis_url)
    c.xadd("orders", {"i": "1"})
    c.close()
    url = users("sf-noscan", acl_rules([x for x in ADMIN_COMMANDS if x != "scan"],
                                       ["orders", "orders:dlq", "streamflow:consumers:orders:*"]))
    result = sf("info", url=url)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "may not list the server's keys (SCAN" in lines[0]
    assert "name the streams to show instead: streamflow info STREAM" in lines[0]
    assert sf("info", "orders", url=url).returncode == 0


def test_info_without_names_for_a_key_restricted_user_leaves_out_what_it_may_not_read(
    redis_url: str, users: Any
) -> None:
    """``info`` without stream names, for a user who may SCAN but read only ``orders``, shows
    ``orders`` and names the streams left out, saying to name streams instead."""
    c = redis.Redis.from_url(redis_url)
    c.xadd("orders", {"i": "1"})
    c.xadd("payments", {"i": "1"})
    c.close()
    url = users("sf-orders", acl_rules(ADMIN_COMMANDS, ["orders", "orders:dlq"]))
    result = sf("info", url=url)
    assert result.returncode == 0, result.stderr
    assert "orders" in result.stdout
    assert "1 stream(s) not shown: this Redis user may not read them (payments)" in result.stdout
    assert "name the streams to show instead" in result.stdout
    doc = info_json(url)
    assert [s["name"] for s in doc["streams"]] == ["orders"]
    assert doc["hidden_streams"] == ["payments"]


@pytest.mark.anyio
async def test_handler_failed_log_says_when_the_retry_runs(redis_url: str) -> None:
    """The ``handler_failed`` event's ``retry_in`` is the entry's backoff with its own jitter (as
    the reclaimer computes it), and ``retry_by`` adds the reclaim interval."""
    retry = Retry(max_attempts=3, backoff=10, jitter=0.5)
    app = App(redis_url=redis_url)

    @app.handler("jobs", group="g", retry=retry)
    async def work(msg: Message) -> None:
        raise RuntimeError("fails")

    w = Worker(app, fast_settings(app, redis_url, reclaim_interval=0.2), handle_signals=False)
    with capture_logs() as logs:
        async with raw_client(redis_url) as client, serving(w):
            raw_id = await client.xadd("jobs", {"i": "1"})
            await wait_until(lambda: w.stats().retried == 1, what="the entry parked for retry")
    (event,) = [e for e in logs if e["event"] == "handler_failed"]
    delay = retry.delay(1, raw_id)
    assert event["retry_in"] == round(delay, 3) != retry.base_delay(1)
    assert event["retry_by"] == round(delay + 0.2, 3)
