"""Tests for the operator commands ``streamflow info`` and ``streamflow dlq list|replay``."""

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

from streamflow import App, Reject, scripts
from streamflow.cli import main
from streamflow.deadletter import build_record
from streamflow.embedded import free_port
from streamflow.keys import RETRY_CONSUMER
from streamflow.testing import running_worker, wait_until

ROOT = Path(__file__).resolve().parents[1]

#: Original fields of the dead-lettered entry: not UTF-8, NUL bytes, repeated-looking names.
BINARY_FIELDS = [b"sf:json", b'{"order_id": 1}', b"blob", b"\xff\x00\xfe raw", b"empty", b""]


def _raw(response: Any, **_: Any) -> Any:
    return response


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client on the flushed private server whose stream replies are left raw."""
    c = redis.Redis.from_url(redis_url, socket_timeout=10)
    for command in ("XRANGE", "XREVRANGE", "XREADGROUP", "XCLAIM", "XPENDING"):
        c.set_response_callback(command, _raw)
    yield c
    c.close()


def sf(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streamflow ARGS`` and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if k != "STREAMFLOW_REDIS_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streamflow", *args], capture_output=True, text=True,
        timeout=30, cwd=ROOT, env=full_env, check=False,
    )


def dead_letter(
    c: redis.Redis, stream: str, group: str, raw_id: bytes, fields: list[bytes], error: str
) -> bytes:
    """Dead-letter pending entry ``raw_id`` the way a consumer does; return the record id."""
    record = build_record(
        stream=stream, raw_id=raw_id, group=group, consumer="worker-1", attempts=5,
        error_type="ValueError", error=error, handler="tests.handler", raw_fields=fields,
        traceback="Traceback (most recent call last):\nValueError: boom\n",
    )
    dlq_id = c.eval(scripts.DEAD_LETTER, 2, stream, f"{stream}:dlq", group, raw_id, *record)
    assert dlq_id, "entry was not pending"
    return bytes(dlq_id)


def make_orders(c: redis.Redis, *, dead: int = 1) -> dict[str, Any]:
    """Stream ``orders`` (6 entries) whose group ``billing`` read 3 + ``dead`` entries: two
    pending on ``worker-1``, one parked on the retry consumer, ``dead`` dead-lettered with
    :data:`BINARY_FIELDS`; plus a group-less stream ``emails``."""
    ids = [c.xadd("orders", {"sf:json": f'{{"n": {i}}}'}) for i in range(6 - dead)]
    ids += [c.execute_command("XADD", "orders", "*", *BINARY_FIELDS) for _ in range(dead)]
    c.xgroup_create("orders", "billing", id="0")
    c.execute_command("XREADGROUP", "GROUP", "billing", "worker-1", "COUNT", 3 + dead,
                      "STREAMS", "orders", ">")
    c.execute_command("XCLAIM", "orders", "billing", RETRY_CONSUMER, 0, ids[1], "JUSTID")
    dlq_ids = [
        dead_letter(c, "orders", "billing", ids[3 + k], BINARY_FIELDS, f"boom {k} " + "x" * 200)
        for k in range(dead)
    ]
    c.xadd("emails", {"to": "a@example.com"})
    return {"ids": ids, "dlq_ids": dlq_ids}


def test_info_json_reports_groups_pending_retry_lag_and_dlq(
    client: redis.Redis, redis_url: str
) -> None:
    """``info --json`` lists every stream (DLQ folded in) with group pending, retry, lag, consumers."""
    made = make_orders(client)
    result = sf("info", "--json", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    streams = {s["name"]: s for s in doc["streams"]}
    assert set(streams) == {"orders", "emails"}  # orders:dlq is reported under orders
    orders = streams["orders"]
    assert orders["exists"] is True
    assert orders["length"] == 6
    assert orders["first_id"] == made["ids"][0].decode()
    assert orders["last_id"] == made["ids"][-1].decode()
    assert orders["dlq"] == {"name": "orders:dlq", "length": 1}
    (group,) = orders["groups"]
    assert group["name"] == "billing"
    assert group["consumer_count"] == 1  # worker-1: the retry pseudo-consumer is no consumer
    assert group["pending"] == 3  # 4 delivered, 1 dead-lettered (acked)
    assert group["waiting_for_retry"] == 1
    assert group["in_progress"] == 2
    assert group["lag"] == 2  # 6 entries, 4 delivered
    assert group["last_delivered_id"] == made["ids"][3].decode()
    oldest = group["oldest_pending"]
    assert oldest["id"] == made["ids"][0].decode()
    assert oldest["consumer"] == "worker-1"
    assert oldest["deliveries"] == 1
    assert oldest["age_ms"] >= 0
    assert oldest["idle_ms"] >= 0
    consumers = {c["name"]: c for c in group["consumers"]}
    assert consumers["worker-1"]["pending"] == 2
    assert consumers["worker-1"]["waiting_for_retry"] is False
    assert consumers[RETRY_CONSUMER]["pending"] == 1
    assert consumers[RETRY_CONSUMER]["waiting_for_retry"] is True
    assert streams["emails"]["groups"] == []
    assert streams["emails"]["dlq"]["length"] == 0


def test_info_human_table_names_streams_groups_and_consumers(
    client: redis.Redis, redis_url: str
) -> None:
    """The human ``info`` output is a table naming the stream, group, consumers and the DLQ."""
    make_orders(client)
    result = sf("info", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("STREAM", "GROUP", "CONSUMER", "orders", "emails", "billing", "worker-1",
                 RETRY_CONSUMER, "waiting for retry", "orders:dlq"):
        assert text in out, f"{text!r} missing from:\n{out}"
    orders_line = next(line for line in out.splitlines() if line.startswith("orders  "))
    assert "orders:dlq" in orders_line
    assert not any(line.startswith("orders:dlq") for line in out.splitlines())


def test_info_named_stream_and_env_url(client: redis.Redis, redis_url: str) -> None:
    """``info STREAM`` shows only that stream, using STREAMFLOW_REDIS_URL when no URL is given."""
    make_orders(client)
    result = sf("info", "orders", "--json", env={"STREAMFLOW_REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [s["name"] for s in doc["streams"]] == ["orders"]
    assert doc["server"]["url"] == redis_url


def test_info_without_streams_says_so(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On an empty server ``info`` exits 0 and says there are no streams."""
    assert main(["info", "--redis-url", redis_url]) == 0
    assert "no streams" in capsys.readouterr().out


def test_unknown_stream_gives_a_clear_error(client: redis.Redis, redis_url: str) -> None:
    """Naming a stream that does not exist (or a non-stream key) exits 2 with one clear line."""
    client.set("plain", "value")
    result = sf("info", "nope", "--redis-url", redis_url)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"streamflow: error: stream 'nope' does not exist (nor 'nope:dlq') at {redis_url}"
    )
    assert result.stdout == ""
    result = sf("info", "plain", "--redis-url", redis_url)
    assert result.returncode == 2
    assert "'plain' is a string, not a stream" in result.stderr
    result = sf("dlq", "list", "nope", "--redis-url", redis_url)
    assert result.returncode == 2
    assert "stream 'nope' does not exist" in result.stderr
    result = sf("dlq", "replay", "nope", "--all", "--redis-url", redis_url)
    assert result.returncode == 2
    assert "stream 'nope' does not exist" in result.stderr


def test_dlq_list_human_and_json(client: redis.Redis, redis_url: str) -> None:
    """``dlq list`` shows records in a table (error truncated) and in full with ``--json``."""
    made = make_orders(client)
    dlq_id = made["dlq_ids"][0].decode()
    original_id = made["ids"][3].decode()

    human = sf("dlq", "list", "orders", "--redis-url", redis_url)
    assert human.returncode == 0, human.stderr
    for text in ("DLQ ID", "ERROR TYPE", dlq_id, original_id, "billing", "ValueError", "boom 0",
                 "..."):
        assert text in human.stdout, f"{text!r} missing from:\n{human.stdout}"
    assert "x" * 200 not in human.stdout

    result = sf("dlq", "list", "orders", "--json", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["dlq"] == "orders:dlq"
    assert doc["dlq_length"] == 1
    (record,) = doc["records"]
    assert record["dlq_id"] == dlq_id
    assert record["id"] == original_id
    assert record["stream"] == "orders"
    assert record["group"] == "billing"
    assert record["consumer"] == "worker-1"
    assert record["attempts"] == 5
    assert record["error_type"] == "ValueError"
    assert record["error"] == "boom 0 " + "x" * 200
    assert record["failed_at"].endswith("Z")
    assert "ValueError: boom" in record["traceback"]
    assert record["fields"] == {
        "sf:json": '{"order_id": 1}', "blob": "\ufffd\x00\ufffd raw", "empty": "",
    }


def test_dlq_list_limit_and_empty(
    client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--limit`` caps the records shown; a stream without dead letters lists none, exit 0."""
    made = make_orders(client, dead=2)
    assert main(["dlq", "list", "orders", "--limit", "1", "--json", "--redis-url", redis_url]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["dlq_id"] for r in doc["records"]] == [made["dlq_ids"][0].decode()]
    assert doc["more"] is True
    assert doc["dlq_length"] == 2
    assert main(["dlq", "list", "emails", "--redis-url", redis_url]) == 0
    assert "no dead-letter records" in capsys.readouterr().out


def test_dlq_replay_by_id_round_trip(client: redis.Redis, redis_url: str) -> None:
    """``dlq replay --id`` re-adds the exact original fields to the replay stream of the group
    that dead-lettered it (not to the stream other groups read) and removes the record."""
    made = make_orders(client, dead=2)
    first, second = (i.decode() for i in made["dlq_ids"])
    length_before = client.xlen("orders")

    result = sf("dlq", "replay", "orders", "--id", first, "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    assert "replayed 1 record of orders from orders:dlq" in result.stdout
    assert "group billing: 1 record -> orders:replay:billing" in result.stdout
    assert client.xlen("orders:dlq") == 1
    assert client.xlen("orders") == length_before
    assert client.xlen("orders:replay:billing") == 1
    (new_id, fields), = client.execute_command(
        "XREVRANGE", "orders:replay:billing", "+", "-", "COUNT", 1)
    assert fields == BINARY_FIELDS  # byte for byte, in order
    assert new_id.decode() in result.stdout
    remaining = client.execute_command("XRANGE", "orders:dlq", "-", "+")
    assert [r[0].decode() for r in remaining] == [second]

    again = sf("dlq", "replay", "orders", "--id", first, "--json", "--redis-url", redis_url)
    assert again.returncode == 1
    doc = json.loads(again.stdout)
    assert doc["replayed"] == []
    assert doc["not_found"] == [first]
    assert client.xlen("orders:replay:billing") == 1


def test_dlq_replay_all_round_trip(client: redis.Redis, redis_url: str) -> None:
    """``dlq replay --all`` replays every record in order, byte-exact, and empties the DLQ."""
    made = make_orders(client, dead=3)
    before = client.execute_command("XRANGE", "orders:replay:billing", "-", "+")

    result = sf("dlq", "replay", "orders", "--all", "--json", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [r["dlq_id"] for r in doc["replayed"]] == [i.decode() for i in made["dlq_ids"]]
    assert [r["id"] for r in doc["replayed"]] == [i.decode() for i in made["ids"][3:]]
    assert doc["not_found"] == [] and doc["skipped"] == []
    assert client.xlen("orders:dlq") == 0
    assert doc["groups"] == {"billing": {"to": "orders:replay:billing", "replayed": 3}}
    after = client.execute_command("XRANGE", "orders:replay:billing", "-", "+")
    added = after[len(before):]
    assert [e[0].decode() for e in added] == [r["new_id"] for r in doc["replayed"]]
    assert all(fields == BINARY_FIELDS for _, fields in added)

    empty = sf("dlq", "replay", "orders", "--all", "--redis-url", redis_url)
    assert empty.returncode == 0
    assert "replayed 0 records" in empty.stdout


def test_dlq_replay_rejects_malformed_ids(
    client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed ``--id`` is refused before anything is replayed."""
    make_orders(client)
    assert main(["dlq", "replay", "orders", "--id", "12", "--redis-url", redis_url]) == 2
    assert "invalid id '12'" in capsys.readouterr().err
    assert client.xlen("orders:dlq") == 1


def test_worker_dead_letters_are_listed_and_replayed(
    redis_url: str, client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records a real worker wrote (handler raising Reject, custom DLQ) list and replay correctly."""
    app = App(name="admin-test")
    seen: list[dict[str, str]] = []

    @app.handler("jobs", group="runner", start_id="0", dead_letter="dead.{stream}")
    async def run_job(msg: Any) -> None:
        seen.append(msg.fields)
        raise Reject("not today")

    async def produce_and_fail() -> None:
        async with running_worker(app, redis_url):
            await app.publish_fields("jobs", {"task": "square", "n": "4"})
            await wait_until(lambda: client.xlen("dead.jobs") >= 1, what="the dead letter")

    anyio.run(produce_and_fail)
    capsys.readouterr()  # drop the worker's log lines
    dlq = ["--dlq", "dead.{stream}"]
    assert main(["dlq", "list", "jobs", *dlq, "--json", "--redis-url", redis_url]) == 0
    (record,) = json.loads(capsys.readouterr().out)["records"]
    assert record["error_type"] == "Reject"
    assert record["group"] == "runner"
    assert record["fields"] == {"task": "square", "n": "4"}
    assert main(["dlq", "replay", "jobs", *dlq, "--all", "--redis-url", redis_url]) == 0
    assert client.xlen("dead.jobs") == 0
    (_, fields), = client.execute_command("XREVRANGE", "jobs:replay:runner", "+", "-", "COUNT", 1)
    assert fields == [b"task", b"square", b"n", b"4"]
    assert seen == [{"task": "square", "n": "4"}]


@pytest.mark.parametrize("command", [["info"], ["dlq", "list", "orders"],
                                     ["dlq", "replay", "orders", "--all"]])
def test_password_is_never_printed(command: list[str]) -> None:
    """When the server is unreachable the error names the URL with its password redacted."""
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    result = sf(*command, "--redis-url", url)
    assert result.returncode == 2
    assert "secret" not in result.stdout + result.stderr
    assert result.stderr.startswith("streamflow: error: ")
    assert "redis://user:***@127.0.0.1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_shared_dlq_is_filtered_by_stream(
    client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a DLQ shared by several streams, list and replay only touch records of STREAM."""
    def record(stream: str, value: bytes) -> str:
        fields = build_record(stream=stream, raw_id=b"1-0", group="g", consumer="c", attempts=1,
                              error_type="E", error="e", handler="h", raw_fields=[b"v", value])
        return bytes(client.execute_command("XADD", "shared", "*", *fields)).decode()

    a, b = record("alpha", b"1"), record("beta", b"2")
    shared = ["--dlq", "shared", "--redis-url", redis_url]
    assert main(["dlq", "list", "alpha", "--json", *shared]) == 0
    assert [r["dlq_id"] for r in json.loads(capsys.readouterr().out)["records"]] == [a]
    assert main(["dlq", "replay", "alpha", "--id", b, "--json", *shared]) == 1
    assert json.loads(capsys.readouterr().out)["skipped"][0]["dlq_id"] == b
    assert main(["dlq", "replay", "alpha", "--all", *shared]) == 0
    capsys.readouterr()
    assert [r[0].decode() for r in client.execute_command("XRANGE", "shared", "-", "+")] == [b]
    assert client.execute_command("XRANGE", "alpha:replay:g", "-", "+")[0][1] == [b"v", b"1"]
    assert not client.exists("beta")


def test_dlq_group_filter_lists_and_replays_one_group(
    client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--group`` limits dlq list and replay to one group's records; without it a replay says
    per group where each group's records went."""
    def record(group: str, value: bytes) -> str:
        fields = build_record(stream="orders", raw_id=b"1-0", group=group, consumer="c",
                              attempts=1, error_type="E", error="e", handler="h",
                              raw_fields=[b"v", value])
        return bytes(client.execute_command("XADD", "orders:dlq", "*", *fields)).decode()

    b1, e1, b2 = record("billing", b"1"), record("email", b"2"), record("billing", b"3")
    url = ["--redis-url", redis_url]
    assert main(["dlq", "list", "orders", "--group", "email", "--json", *url]) == 0
    assert [r["dlq_id"] for r in json.loads(capsys.readouterr().out)["records"]] == [e1]
    assert main(["dlq", "replay", "orders", "--id", e1, "--group", "billing", "--json", *url]) == 1
    assert "not 'billing'" in json.loads(capsys.readouterr().out)["skipped"][0]["reason"]
    assert main(["dlq", "replay", "orders", "--all", "--group", "billing", *url]) == 0
    out = capsys.readouterr().out
    assert "group billing: 2 records -> orders:replay:billing" in out
    assert [r[0].decode() for r in client.execute_command("XRANGE", "orders:dlq", "-", "+")] == [e1]
    assert main(["dlq", "replay", "orders", "--all", *url]) == 0
    assert "group email: 1 record -> orders:replay:email" in capsys.readouterr().out
    assert [f for _, f in client.execute_command("XRANGE", "orders:replay:billing", "-", "+")] == [
        [b"v", b"1"], [b"v", b"3"]]
    assert client.xlen("orders:replay:email") == 1
    assert client.exists("orders") == 0  # the stream every group reads got nothing
    del b1, b2
