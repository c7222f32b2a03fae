"""``streamflow dlq show``, ``dlq purge`` (confirmation, ``--yes``), ``--error-type`` on
``list`` / ``replay`` / ``purge``, and the progress of long dlq and ``info`` runs.

Records come from a real worker whose handler fails (``streamflow.testing.run_until``)
or, where many are needed, are written in the layout the worker writes
(:func:`streamflow.deadletter.build_record`). The command line runs in a subprocess
(``tests/cli_pty.py``), on pipes or on a pseudo-terminal that answers the prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
from cli_pty import CliResult, rich_installed, run_cli

from streamflow import App, Message, Retry
from streamflow.deadletter import build_record
from streamflow.testing import run_until


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client of the private server, with raw (bytes) stream replies."""
    c = redis.Redis.from_url(redis_url, socket_timeout=10)
    for command in ("XRANGE", "XREVRANGE"):
        c.set_response_callback(command, lambda r, **_: r)
    yield c
    c.close()


def sf(url: str, *args: str, **kw: Any) -> CliResult:
    """``streamflow ARGS --redis-url URL`` in a subprocess (see :func:`cli_pty.run_cli`)."""
    return run_cli(*args, "--redis-url", url, **kw)


def sf_json(url: str, *args: str, code: int = 0) -> Any:
    result = sf(url, *args, "--json")
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


def dlq_ids(c: redis.Redis, dlq: str = "orders:dlq") -> list[str]:
    return [i.decode() for i, _ in c.execute_command("XRANGE", dlq, "-", "+")]


async def _fail_orders(url: str) -> None:
    """A worker whose handler raises ValueError for even ``n`` and KeyError for odd, with
    one attempt: six orders, six dead letters (three of each type)."""
    app = App(name="dlq-cli-test")

    @app.handler("orders", group="billing", retry=Retry(max_attempts=1))
    async def bill(msg: Message) -> None:
        n = msg.payload["n"]
        if n % 2 == 0:
            raise ValueError(f"bad order {n}")
        raise KeyError(f"order {n}")

    async def feed() -> None:
        await app.publish_many("orders", [{"n": n} for n in range(6)])

    await run_until(app, url, finished=6, feed=feed)


@pytest.fixture
def failed(redis_url: str, client: redis.Redis) -> dict[str, list[str]]:
    """Six dead letters of ``orders`` from a real worker; their dlq ids by error type."""
    anyio.run(_fail_orders, redis_url)
    out: dict[str, list[str]] = {"ValueError": [], "KeyError": []}
    for dlq_id, raw in client.execute_command("XRANGE", "orders:dlq", "-", "+"):
        fields = dict(zip(raw[::2], raw[1::2], strict=True))
        out[fields[b"dlq:error_type"].decode()].append(dlq_id.decode())
    assert [len(v) for v in out.values()] == [3, 3], out
    return out


def add_records(c: redis.Redis, n: int, *, stream: str = "orders", group: str = "billing",
                error_type: str = "ValueError") -> list[str]:
    """``n`` records in the worker's layout, written with one pipeline."""
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("XADD", f"{stream}:dlq", "*", *build_record(
            stream=stream, raw_id=f"1-{i}".encode(), group=group, consumer="c", attempts=1,
            error_type=error_type, error="e", handler="h", raw_fields=[b"n", str(i).encode()]))
    return [i.decode() for i in pipe.execute()]


# -- show --------------------------------------------------------------------------------------


def test_show_one_record_in_full(
    client: redis.Redis, redis_url: str, failed: dict[str, list[str]]
) -> None:
    """dlq show prints every part of one record (human and --json, payload decoded), with
    or without the stream named; an unknown or malformed id is a one-line error, exit 2."""
    dlq_id = failed["ValueError"][0]
    doc = sf_json(redis_url, "dlq", "show", "orders", dlq_id)
    assert doc["dlq"] == "orders:dlq" and doc["dlq_id"] == dlq_id
    assert doc["stream"] == "orders" and doc["group"] == "billing"
    assert doc["error_type"] == "ValueError" and doc["error"] == "bad order 0"
    assert doc["attempts"] == 1 and doc["failed_at"].endswith("Z")
    assert doc["handler"].endswith("bill")
    assert "raise ValueError" in doc["traceback"]
    assert doc["payload"] == {"n": 0} and doc["payload_error"] is None
    assert json.loads(doc["fields"]["sf:json"]) == {"n": 0}
    entry_id = doc["id"]

    human = sf(redis_url, "dlq", "show", dlq_id)  # found without naming the stream
    assert human.returncode == 0, human.stderr
    for text in (f"dead-letter record {dlq_id} in orders:dlq", "stream      orders",
                 f"entry id    {entry_id}", "group       billing", "attempts    1",
                 "error type  ValueError", "error       bad order 0", "traceback:",
                 "raise ValueError", "fields (1):", "sf:json", "payload:", '"n": 0'):
        assert text in human.stdout, f"{text!r} missing from:\n{human.stdout}"

    missing = sf(redis_url, "dlq", "show", "orders", "1-0")
    assert missing.returncode == 2 and "no dead-letter record 1-0 in orders:dlq" in missing.stderr
    nowhere = sf(redis_url, "dlq", "show", "1-0")
    assert nowhere.returncode == 2 and "in any dead-letter stream" in nowhere.stderr
    bad = sf(redis_url, "dlq", "show", "orders", "12")
    assert bad.returncode == 2 and "invalid id '12'" in bad.stderr


# -- --error-type --------------------------------------------------------------------------


def test_replay_and_list_by_error_type(
    client: redis.Redis, redis_url: str, failed: dict[str, list[str]]
) -> None:
    """--error-type narrows list and replay to records of that exception type (combined with
    --group); --id of another type is skipped, with the reason."""
    listed = sf_json(redis_url, "dlq", "list", "orders", "--error-type", "KeyError")
    assert [r["dlq_id"] for r in listed["records"]] == failed["KeyError"]
    assert listed["error_types"] == ["KeyError"]

    other = sf_json(redis_url, "dlq", "replay", "orders", "--id", failed["ValueError"][0],
                    "--error-type", "KeyError", code=1)
    assert other["replayed"] == []
    assert other["skipped"][0]["reason"] == "record of error type 'ValueError', not 'KeyError'"

    none = sf_json(redis_url, "dlq", "replay", "orders", "--all", "--error-type", "KeyError",
                   "--group", "shipping")
    assert none["replayed"] == []
    doc = sf_json(redis_url, "dlq", "replay", "orders", "--all", "--error-type", "KeyError",
                  "--group", "billing")
    assert [r["dlq_id"] for r in doc["replayed"]] == failed["KeyError"]
    assert dlq_ids(client) == failed["ValueError"]
    replayed = client.execute_command("XRANGE", "orders:replay:billing", "-", "+")
    assert sorted(json.loads(f[1])["n"] for _, f in replayed) == [1, 3, 5]


# -- purge -------------------------------------------------------------------------------------


def test_purge_with_yes_and_filters(
    client: redis.Redis, redis_url: str, failed: dict[str, list[str]]
) -> None:
    """purge --yes deletes exactly the records selected (--id, or --all with filters);
    ids not there make exit 1; the records of other types stay."""
    first = failed["ValueError"][0]
    doc = sf_json(redis_url, "dlq", "purge", "orders", "--id", first, "--id", "1-0", "--yes",
                  code=1)
    assert doc["deleted"] == 1 and doc["not_found"] == ["1-0"]
    result = sf(redis_url, "dlq", "purge", "orders", "--all", "--error-type", "ValueError",
                "--yes")
    assert result.returncode == 0, result.stderr
    assert "deleted 2 records of orders from orders:dlq" in result.stdout
    assert dlq_ids(client) == failed["KeyError"]
    empty = sf(redis_url, "dlq", "purge", "orders", "--all", "--error-type", "ValueError")
    assert empty.returncode == 0 and "deleted 0 records" in empty.stdout  # nothing to ask


def test_purge_refuses_without_a_terminal_or_yes(
    client: redis.Redis, redis_url: str, failed: dict[str, list[str]]
) -> None:
    """Without --yes and with stdin not a terminal, purge deletes nothing, exit 2."""
    result = sf(redis_url, "dlq", "purge", "orders", "--all", stdin=b"y\n")
    assert result.returncode == 2
    assert ("not deleting 6 records from orders:dlq without confirmation: stdin is not a "
            "terminal; pass --yes") in result.stderr
    assert client.xlen("orders:dlq") == 6


def test_purge_asks_on_a_terminal(
    client: redis.Redis, redis_url: str, failed: dict[str, list[str]]
) -> None:
    """On a terminal purge asks 'Delete N records from orders:dlq? [y/N]': n (or Enter)
    keeps them (exit 1), y deletes them."""
    no = sf(redis_url, "dlq", "purge", "orders", "--all", "--error-type", "KeyError",
            tty=True, tty_stdin=True, answers=(b"n\n",))
    assert "Delete 3 records (error type KeyError) from orders:dlq? [y/N]" in no.tty
    assert no.returncode == 1 and "nothing deleted" in no.tty
    assert client.xlen("orders:dlq") == 6
    enter = sf(redis_url, "dlq", "purge", "orders", "--all", tty=True, tty_stdin=True,
               answers=(b"\n",))
    assert "Delete 6 records from orders:dlq? [y/N]" in enter.tty and enter.returncode == 1
    yes = sf(redis_url, "dlq", "purge", "orders", "--all", "--error-type", "KeyError",
             tty=True, tty_stdin=True, answers=(b"y\n",))
    assert yes.returncode == 0, yes.tty
    assert "deleted 3 records of orders from orders:dlq" in yes.stdout
    assert dlq_ids(client) == failed["ValueError"]


# -- progress ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rich", [
    pytest.param(False, id="plain"),
    pytest.param(True, id="rich", marks=pytest.mark.skipif(not rich_installed(),
                                                           reason="rich is not installed")),
])
def test_progress_of_replay_and_purge_on_a_terminal_only(
    client: redis.Redis, redis_url: str, rich: bool
) -> None:
    """replay --all and purge of many records draw progress on a terminal, not in a pipe."""
    add_records(client, 1200)
    other = add_records(client, 1, error_type="KeyError")
    replay = sf(redis_url, "dlq", "replay", "orders", "--all", "--error-type", "ValueError",
                tty=True, rich=rich)
    assert replay.returncode == 0, replay.tty
    assert "replaying orders:dlq" in replay.tty and "/1201" in replay.tty
    assert replay.stdout.startswith("replayed 1200 records of orders from orders:dlq")
    assert client.xlen("orders:replay:billing") == 1200

    add_records(client, 1200)
    piped = sf(redis_url, "dlq", "replay", "orders", "--all", "--error-type", "ValueError",
               rich=rich)
    assert piped.returncode == 0 and piped.stderr == ""
    add_records(client, 1200)
    purge = sf(redis_url, "dlq", "purge", "orders", "--all", "--error-type", "ValueError",
               "--yes", tty=True, tty_stdin=True, rich=rich)
    assert purge.returncode == 0, purge.tty
    assert "reading orders:dlq" in purge.tty and "deleting from orders:dlq" in purge.tty
    assert "/1200" in purge.tty
    assert dlq_ids(client) == other


def test_info_progress_over_many_streams(client: redis.Redis, redis_url: str) -> None:
    """info over many streams (>= 50) shows its progress on a terminal, and not on a pipe."""
    pipe = client.pipeline(transaction=False)
    for i in range(60):
        pipe.xadd(f"s{i:02d}", {"n": i})
    pipe.execute()
    shown = sf(redis_url, "info", tty=True, rich=False)
    assert shown.returncode == 0, shown.tty
    assert "reading streams" in shown.tty and "/60" in shown.tty
    assert "s59" in shown.stdout
    piped = sf(redis_url, "info", rich=False)
    assert piped.returncode == 0 and piped.stderr == "" and "s59" in piped.stdout
