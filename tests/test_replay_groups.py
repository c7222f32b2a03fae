"""dlq replay reaches only the group that dead-lettered an entry, never the other groups."""

from __future__ import annotations

import json
import os
import sys

import anyio
import pytest

from streamflow import App, Message, Reject, Retry
from streamflow.testing import passes, running_worker, wait_until

pytestmark = pytest.mark.anyio



async def _cli(*args: str) -> dict[str, object]:
    result = await anyio.run_process(
        [sys.executable, "-m", "streamflow", *args, "--json"], check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stderr.decode()
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


async def test_replay_reaches_only_the_failed_group(any_redis_url: str) -> None:
    """One stream, two groups: billing dead-letters, email succeeds; `dlq replay --all` runs the
    entries again for billing only: email never handles them twice."""
    app = App(any_redis_url)
    billing: list[tuple[str, str, bool]] = []
    email: list[str] = []
    fail = {"on": True}

    @app.handler("orders", group="billing", retry=Retry(max_attempts=1))
    async def bill(msg: Message) -> None:
        billing.append((msg.stream, msg.payload["n"], msg.replayed))
        if fail["on"]:
            raise Reject("card declined")

    @app.handler("orders", group="email")
    async def send(msg: Message) -> None:
        email.append(msg.payload["n"])

    async with running_worker(app, any_redis_url) as worker:
        await app.publish_many("orders", [{"n": f"o{i}"} for i in range(3)])
        await wait_until(lambda: worker.stats().handler("bill").dead_lettered == 3
                    and len(email) == 3, what="3 dead letters and 3 emails")
        fail["on"] = False
        doc = await _cli("dlq", "replay", "orders", "--all", "--redis-url", any_redis_url)
        assert doc["groups"] == {"billing": {"to": "orders:replay:billing", "replayed": 3}}
        await wait_until(lambda: worker.stats().handler("bill").handled == 3, what="the 3 replays")
        # The email group reads the stream the replay did not touch: a few more passes of
        # its reader, and nothing new arrives there.
        await passes(worker, read=4)
    assert sorted(email) == ["o0", "o1", "o2"]
    replays = [b for b in billing if b[2]]
    assert sorted(n for _, n, _ in replays) == ["o0", "o1", "o2"]
    assert all(stream == "orders" for stream, _, _ in replays)  # the stream the handler knows


async def test_a_replayed_entry_that_fails_again_is_dead_lettered_again(redis_url: str) -> None:
    """A replayed entry that fails again goes back to the dead-letter stream under its original
    stream and group, and can be replayed once more."""
    app = App(redis_url)
    attempts: list[bool] = []

    @app.handler("jobs", group="g", retry=Retry(max_attempts=1))
    async def work(msg: Message) -> None:
        attempts.append(msg.replayed)
        raise Reject("still broken")

    async with running_worker(app, redis_url) as worker:
        await app.publish("jobs", {"x": 1})
        await wait_until(lambda: worker.stats().dead_lettered == 1, what="first dead letter")
        await _cli("dlq", "replay", "jobs", "--all", "--redis-url", redis_url)
        await wait_until(lambda: worker.stats().dead_lettered == 2, what="second dead letter")
        listed = await _cli("dlq", "list", "jobs", "--redis-url", redis_url)
        (record,) = listed["records"]  # type: ignore[misc]
        assert record["stream"] == "jobs" and record["group"] == "g"
        again = await _cli("dlq", "replay", "jobs", "--all", "--group", "g", "--redis-url",
                           redis_url)
        assert again["groups"] == {"g": {"to": "jobs:replay:g", "replayed": 1}}
        await wait_until(lambda: worker.stats().dead_lettered == 3, what="third dead letter")
    assert attempts == [False, True, True]


async def test_info_shows_replay_streams_with_their_group(redis_url: str) -> None:
    """`streamflow info` lists no replay stream as a stream of its own: it shows it with the
    group it belongs to, with what that group has yet to handle of it."""
    app = App(redis_url)

    @app.handler("jobs", group="g", retry=Retry(max_attempts=1))
    async def work(msg: Message) -> None:
        raise Reject("no")

    async with running_worker(app, redis_url) as worker:
        await app.publish("jobs", {"x": 1})
        await wait_until(lambda: worker.stats().dead_lettered == 1, what="a dead letter")
    await _cli("dlq", "replay", "jobs", "--all", "--redis-url", redis_url)  # no worker now
    doc = await _cli("info", "--redis-url", redis_url)
    streams = doc["streams"]
    assert [s["name"] for s in streams] == ["jobs"]  # type: ignore[index]
    (group,) = streams[0]["groups"]  # type: ignore[index]
    assert group["replay"] == {"name": "jobs:replay:g", "length": 1, "pending": 0, "lag": 1}
    text = await anyio.run_process([sys.executable, "-m", "streamflow", "info", "--redis-url",
                                    redis_url], check=True)
    assert "jobs:replay:g" in text.stdout.decode()
