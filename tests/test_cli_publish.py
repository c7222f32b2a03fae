"""``streamflow publish``: fields, ``--json``, ``--file`` (a file, stdin), errors, progress.

The command line runs in a subprocess (``tests/cli_pty.py``: on pipes, or with stderr on
a pseudo-terminal to see the progress indicator) against the private Redis server of
the ``redis_url`` fixture; a real worker (``streamflow.testing.run_until``) checks what
handlers see of the entries published.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from cli_pty import CliResult, rich_installed, run_cli
from redis.exceptions import ResponseError

from streamflow import App, Message
from streamflow.admin import progress as progress_module
from streamflow.cli import main
from streamflow.codec import JSON_FIELD, encode_json
from streamflow.rawpipe import RawPipe
from streamflow.testing import run_until

#: Payloads of the bulk tests: objects, other JSON values, text that is not ASCII.
PAYLOADS: list[Any] = [{"n": i, "name": f"é-{i}"} for i in range(2000)] + [
    [1, 2], "text", 3.5, None, {"big": 12345678901234567890123},
]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client of the private server, with raw (bytes) stream replies."""
    c = redis.Redis.from_url(redis_url, socket_timeout=10)
    c.set_response_callback("XRANGE", lambda r, **_: r)
    yield c
    c.close()


def sf(url: str, *args: str, **kw: Any) -> CliResult:
    """``streamflow ARGS --redis-url URL`` in a subprocess (see :func:`cli_pty.run_cli`)."""
    return run_cli(*args, "--redis-url", url, **kw)


def error_line(result: CliResult, *needles: str) -> str:
    """The command failed with exit 2 and one ``streamflow: error:`` line naming ``needles``."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamflow: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def jsonl(payloads: list[Any]) -> bytes:
    """A JSON Lines text, with a blank line in the middle and a CRLF line ending."""
    lines = [json.dumps(p, ensure_ascii=False) for p in payloads]
    lines.insert(len(lines) // 2, "")
    lines[0] += "\r"
    return ("\n".join(lines) + "\n").encode()


def entries(c: redis.Redis, stream: str) -> list[tuple[str, list[bytes]]]:
    return [(i.decode(), f) for i, f in c.execute_command("XRANGE", stream, "-", "+")]


# -- one entry ---------------------------------------------------------------------------------


def test_fields_are_published_as_given(client: redis.Redis, redis_url: str) -> None:
    """KEY=VALUE fields make one entry with exactly those plain fields ('=' in a value and
    empty values kept); only the new id is printed; --quiet prints nothing."""
    result = sf(redis_url, "publish", "orders", "order_id=7", "note=a=b", "empty=", "city=Zürich")
    assert result.returncode == 0, result.stderr
    ((entry_id, fields),) = entries(client, "orders")
    assert result.stdout == entry_id + "\n"
    assert fields == [b"order_id", b"7", b"note", b"a=b", b"empty", b"",
                      b"city", "Zürich".encode()]
    quiet = sf(redis_url, "publish", "orders", "x=1", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    assert client.xlen("orders") == 2


def test_json_payload_is_what_app_publish_writes(client: redis.Redis, redis_url: str) -> None:
    """--json writes the sf:json layout, byte for byte what App.publish writes."""
    payload = {"order_id": 7, "items": ["a", "é"], "big": 12345678901234567890123}
    result = sf(redis_url, "publish", "orders", "--json", json.dumps(payload))
    assert result.returncode == 0, result.stderr
    ((entry_id, fields),) = entries(client, "orders")
    assert result.stdout.strip() == entry_id
    assert fields == [JSON_FIELD.encode(), encode_json(payload, 1 << 20)]


def test_maxlen_trims_the_stream(client: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    """--maxlen N caps the stream (approximately: whole nodes of 100 entries go)."""
    path = tmp_path / "many.jsonl"
    path.write_bytes(jsonl(list(range(300))))
    result = sf(redis_url, "publish", "orders", "--file", str(path), "--maxlen", "10")
    assert result.returncode == 0, result.stderr
    assert 10 <= client.xlen("orders") < 300


# -- many entries ------------------------------------------------------------------------------


async def _run_until(app: App, url: str, n: int) -> Any:
    return await run_until(app, url, finished=n)


def test_file_is_published_and_handlers_see_the_payloads(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """Every line of a file becomes one sf:json entry, in order (blank lines skipped); the
    summary names the count and the first and last ids; a handler's msg.payload is the
    line's JSON value."""
    path = tmp_path / "orders.jsonl"
    path.write_bytes(jsonl(PAYLOADS))
    result = sf(redis_url, "publish", "orders", "--file", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # stderr is a pipe: no progress
    stored = entries(client, "orders")
    assert len(stored) == len(PAYLOADS)
    assert result.stdout.strip() == (f"published {len(PAYLOADS)} entries to orders "
                                     f"(first {stored[0][0]}, last {stored[-1][0]})")
    seen: list[Any] = []
    app = App()

    @app.handler("orders", group="check", concurrency=1)
    async def collect(msg: Message) -> None:
        seen.append(msg.payload)

    stats = anyio.run(_run_until, app, redis_url, len(PAYLOADS))
    assert stats.failed == 0
    assert seen == PAYLOADS


def test_file_goes_out_in_batches(
    client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """2500 lines take three pipelined round trips (1000 XADDs each), not 2500."""
    calls: list[int] = []
    real = RawPipe.execute

    async def counting(self: RawPipe, commands: list[Any]) -> list[Any]:
        calls.append(len(commands))
        return await real(self, commands)

    monkeypatch.setattr(RawPipe, "execute", counting)
    path = tmp_path / "n.jsonl"
    path.write_bytes(jsonl(list(range(2500))))
    assert main(["publish", "orders", "--file", str(path), "--redis-url", redis_url]) == 0
    assert calls == [1000, 1000, 500]
    assert client.xlen("orders") == 2500
    assert "published 2500 entries" in capsys.readouterr().out


def test_an_entry_redis_refuses_stops_the_publish_and_says_what_went_out(
    client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When Redis refuses an XADD of a batch (here: an OOM reply put in place of the one for
    line 1500), no further batch is sent and the error says how many entries went out."""
    real = RawPipe.execute

    async def refusing(self: RawPipe, commands: list[Any]) -> list[Any]:
        replies = await real(self, commands)
        if len(replies) == 1000 and client.xlen("orders") == 2000:  # the second batch
            replies[499] = ResponseError("OOM command not allowed when used memory > 'maxmemory'")
        return replies

    monkeypatch.setattr(RawPipe, "execute", refusing)
    path = tmp_path / "n.jsonl"
    path.write_text("".join(f"{i}\n" for i in range(3000)))
    assert main(["publish", "orders", "--file", str(path), "--redis-url", redis_url]) == 2
    err = capsys.readouterr().err
    assert (f"streamflow: error: {path} line 1500: Redis refused the entry: OOM command not "
            "allowed") in err
    assert "1999 entries were published (the last from line 2000), nothing after line 2000 " \
        "was sent" in err
    assert client.xlen("orders") == 2000  # the refused reply was faked: its entry is there


def test_stdin_pipe_and_redirect(client: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    """--file - reads a pipe as it arrives, and a file redirected to stdin like a file."""
    piped = sf(redis_url, "publish", "orders", "--file", "-", stdin=jsonl(PAYLOADS[:1500]))
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("published 1500 entries to orders")
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(PAYLOADS[1500:]))
    redirected = sf(redis_url, "publish", "orders", "--file", "-", stdin=path)
    assert redirected.returncode == 0, redirected.stderr
    values = [json.loads(f[1]) for _, f in entries(client, "orders")]
    assert values == PAYLOADS


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "needles"), [
    (["orders", "order_id"], ["'order_id' is not KEY=VALUE"]),
    (["orders", "=7"], ["'=7' is not KEY=VALUE"]),
    (["orders", "a=1", "a=2"], ["field 'a' is given twice"]),
    (["orders"], ["nothing to publish"]),
    (["orders", "a=1", "--json", "{}"], ["not KEY=VALUE fields and --json"]),
    (["orders", "--json", "{'a': 1}"], ["--json is not valid JSON", "column 2"]),
    (["orders", "--json", json.dumps("x" * 200)], ["more than max_payload_bytes=100"]),
    (["orders", "big=" + "x" * 200], ["more than max_payload_bytes=100"]),
    (["bad name", "a=1"], ["stream name"]),
    (["orders", "--file", "/nonexistent/x.jsonl"], ["cannot read '/nonexistent/x.jsonl'"]),
    (["plain", "a=1"], ["'plain' is a string, not a stream", "nothing published"]),
])
def test_usage_errors_exit_2_and_publish_nothing(
    client: redis.Redis, redis_url: str, args: list[str], needles: list[str]
) -> None:
    """Bad fields, JSON, sizes and names: one clear line, exit 2, nothing written."""
    client.set("plain", "x")
    result = sf(redis_url, "publish", *args, env={"STREAMFLOW_MAX_PAYLOAD_BYTES": "100"})
    error_line(result, *needles)
    assert result.stdout == ""
    assert client.exists("orders", "bad name") == 0


def test_bad_lines_of_a_file_publish_nothing(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """A file is checked whole first: the first bad line is named (and how many more), and
    nothing is published; a payload over the limit names its line too."""
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps({"n": i}) for i in range(10)]
    lines[3] = '{"n": 3'
    lines[7] = "not json"
    lines[8] = json.dumps({"pad": "x" * 300})
    path.write_text("\n".join(lines) + "\n")
    result = sf(redis_url, "publish", "orders", "--file", str(path),
                env={"STREAMFLOW_MAX_PAYLOAD_BYTES": "100"})
    line = error_line(result, f"{path} line 4: invalid JSON", "and 2 more bad lines: 8, 9",
                      "nothing published")
    assert "line 4" in line
    assert client.exists("orders") == 0
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    error_line(sf(redis_url, "publish", "orders", "--file", str(path)), "line 2: not UTF-8")
    assert client.exists("orders") == 0


def test_bad_line_on_stdin_stops_after_the_lines_before_it(
    client: redis.Redis, redis_url: str
) -> None:
    """From a pipe, a bad line stops the command: every line before it was published, the
    message says so (count, last id and line), nothing from it on."""
    lines = [json.dumps({"n": i}) for i in range(3000)]
    lines[1799] = "{oops"
    result = sf(redis_url, "publish", "orders", "--file", "-",
                stdin=("\n".join(lines) + "\n").encode())
    stored = entries(client, "orders")
    assert len(stored) == 1799
    assert json.loads(stored[-1][1][1]) == {"n": 1798}
    error_line(result, "stdin line 1800: invalid JSON at column 2",
               "1799 entries from the lines before it were published",
               f"last id {stored[-1][0]}, line 1799", "nothing from line 1800 on")


# -- progress ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rich", [
    pytest.param(False, id="plain"),
    pytest.param(True, id="rich", marks=pytest.mark.skipif(not rich_installed(),
                                                           reason="rich is not installed")),
])
def test_progress_on_a_terminal_only(
    client: redis.Redis, redis_url: str, tmp_path: Path, rich: bool
) -> None:
    """With stderr on a terminal a bulk publish draws its progress there (and erases it);
    stdout keeps only the summary. On a pipe (the other tests) stderr stays empty."""
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl(list(range(3000))))
    result = sf(redis_url, "publish", "orders", "--file", str(path), tty=True, rich=rich)
    assert result.returncode == 0, result.tty
    assert "publishing to orders" in result.tty
    assert "/3000" in result.tty
    assert result.stdout.startswith("published 3000 entries to orders")
    if not rich:
        assert "\r" in result.tty and "[" in result.tty  # the plain line, redrawn in place
    quiet = sf(redis_url, "publish", "orders", "--file", str(path), "--quiet", tty=True,
               rich=rich)
    assert quiet.returncode == 0 and quiet.tty == "" and quiet.stdout == ""
    piped = sf(redis_url, "publish", "orders", "--file", str(path), rich=rich)
    assert piped.returncode == 0 and piped.stderr == ""
    assert client.xlen("orders") == 9000


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal_and_above_min_total(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The indicator: nothing off a terminal or below min_total; the plain line shows
    done/total (or done/? while the total is unknown) and is erased at the end."""
    monkeypatch.setattr(progress_module, "_rich", lambda: None)
    monkeypatch.setattr(progress_module, "_INTERVAL", 0.0)  # draw every update
    quiet = io.StringIO()
    with progress_module.progress("x", 10_000, stream=quiet) as bar:
        bar.update(5000, 10_000)
    assert quiet.getvalue() == ""
    small = _Terminal()
    with progress_module.progress("x", 10, stream=small) as bar:
        bar.update(10, 10)
    assert small.getvalue() == ""
    term = _Terminal()
    with progress_module.progress("copying", stream=term, min_total=100) as bar:
        assert isinstance(bar, progress_module.PlainProgress)
        bar.update(50, None)
        assert term.getvalue() == ""
        bar.update(150, None)
        assert "copying 150/? " in term.getvalue()
        bar.update(200, 400)
        assert "copying [############............] 200/400  50%" in term.getvalue()
    assert term.getvalue().endswith("\r")  # erased
    off = _Terminal()
    with progress_module.progress("x", 10_000, stream=off, enabled=False) as bar:
        bar.update(10_000, 10_000)
    assert off.getvalue() == ""
