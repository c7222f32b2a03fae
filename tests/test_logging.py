"""Logging: a handler's own log lines carry the message they run for, and ``--log-level debug`` works.

In-process tests configure logging with :func:`streamflow.logging.configure_logging` and read
what it writes to (captured) stderr; the end-to-end tests run ``python -m streamflow run`` on a
private server and read its JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog

from streamflow.context import current_message
from streamflow.logging import configure_logging
from streamflow.message import Message


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _by_event(lines: list[dict[str, Any]], event: str) -> dict[str, Any]:
    found = [line for line in lines if line.get("event") == event]
    assert len(found) == 1, (event, lines)
    return found[0]


def test_lines_logged_while_a_message_is_current_carry_its_context(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """With current_message set, structlog and stdlib lines get stream, group, message_id and attempt (fields
    the caller passed win), and lines logged outside get none of them."""
    configure_logging("info", "json")
    slog = structlog.get_logger("user.handler")
    stdlog = logging.getLogger("user.handler.stdlib")
    msg = Message(b"1700000000000-7", [b"sf:json", b"{}"], "orders", "billing", attempt=3)
    token = current_message.set(msg)
    try:
        slog.info("charged", amount=3)
        slog.info("moved", stream="orders:archive")
        stdlog.warning("stdlib line %d", 5)
    finally:
        current_message.reset(token)
    slog.info("outside")
    stdlog.warning("stdlib outside")
    lines = _json_lines(capsys.readouterr().err)
    context = {"stream": "orders", "group": "billing", "message_id": "1700000000000-7", "attempt": 3}
    charged = _by_event(lines, "charged")
    assert {k: charged[k] for k in context} == context and charged["amount"] == 3
    moved = _by_event(lines, "moved")
    assert moved["stream"] == "orders:archive" and moved["message_id"] == "1700000000000-7"
    stdlib = _by_event(lines, "stdlib line 5")
    assert {k: stdlib[k] for k in context} == context
    for event in ("outside", "stdlib outside"):
        assert not set(context) & set(_by_event(lines, event)), event


def test_console_lines_carry_the_message_context_too(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """The console format shows the current message's stream, group, message_id and attempt as well."""
    configure_logging("info", "console")
    token = current_message.set(Message(b"5-1", None, "orders", "billing", attempt=2))
    try:
        structlog.get_logger("user").info("charged")
        logging.getLogger("user.stdlib").warning("stdlib line")
    finally:
        current_message.reset(token)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "charged" in line or "stdlib line" in line]
    assert len(lines) == 2, err
    for line in lines:
        for part in ("stream=orders", "group=billing", "message_id=5-1", "attempt=2"):
            assert part in line, (part, line)


# -- end to end: a worker subprocess ------------------------------------------------------


LOGGING_APP = """\
import logging

import structlog

from streamflow import App, Message

app = App()
slog = structlog.get_logger("ctxapp")
stdlog = logging.getLogger("ctxapp.stdlib")


@app.handler("ctx-jobs", group="ctx-group")
async def handle(msg: Message) -> None:
    slog.info("structlog_in_handler", n=msg.payload["n"])
    stdlog.warning("stdlib_in_handler %s", msg.payload["n"])
    stdlog.debug("stdlib_debug_in_handler")
    client = await app.connection.client()
    await client.sadd("ctx-jobs:done", msg.id)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}


def _run_app(url: str, tmp_path: Path, entries: int, *options: str) -> tuple[list[str], str]:
    """Run LOGGING_APP under `streamflow run`, add ``entries`` entries, wait until all are handled,
    SIGTERM it; return (the entry ids, its stderr)."""
    (tmp_path / "ctxapp.py").write_text(LOGGING_APP)
    r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamflow", "run", "ctxapp:app", "--redis-url", url,
         "--log-format", "json", *options],
        cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not r.exists("ctx-jobs"):
            assert proc.poll() is None and time.monotonic() < deadline, "worker did not start"
            time.sleep(0.05)
        ids = [r.xadd("ctx-jobs", {"sf:json": json.dumps({"n": n})}) for n in range(entries)]
        while r.scard("ctx-jobs:done") < entries:
            assert proc.poll() is None and time.monotonic() < deadline, "entries not handled"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        r.close()
    assert proc.returncode == 0, stderr
    return ids, stderr


def test_handler_log_lines_carry_message_context(redis_url: str, tmp_path: Path) -> None:
    """A handler's structlog and stdlib log lines under `streamflow run` carry the stream, group, id and
    attempt of the message it runs (the slot binds its state to current_message)."""
    ids, stderr = _run_app(redis_url, tmp_path, 3)
    lines = _json_lines(stderr)
    for event in ("structlog_in_handler", "stdlib_in_handler"):
        got = [line for line in lines if line["event"].startswith(event)]
        assert len(got) == 3, (event, stderr)
        assert {line["message_id"] for line in got} == set(ids), got
        for line in got:
            assert (line["stream"], line["group"], line["attempt"]) == ("ctx-jobs", "ctx-group", 1)


@pytest.mark.parametrize("level", ["debug", "info"])
def test_log_level_debug_shows_debug_events_and_info_does_not(
    level: str, redis_url: str, tmp_path: Path
) -> None:
    """`--log-level debug` shows streamflow's debug events (worker_settings, read loops) and the handler's
    stdlib debug lines; `--log-level info` shows neither."""
    _, stderr = _run_app(redis_url, tmp_path, 1, "--log-level", level)
    lines = _json_lines(stderr)
    debug = [line for line in lines if line["level"] == "debug"]
    events = {line["event"] for line in debug}
    if level == "info":
        assert not debug, debug
        assert "worker_started" in {line["event"] for line in lines}
        return
    assert {"worker_settings", "read_loop_started", "stdlib_debug_in_handler"} <= events, events
    settings = _by_event(lines, "worker_settings")
    assert settings["log_level"] == "debug" and settings["redis_url"] == redis_url


def test_worker_stopped_line_counts_the_acks(redis_url: str, tmp_path: Path) -> None:
    """The worker_stopped line reports every ack Redis confirmed (the stats read an empty ack buffer as
    no buffer at all and said acked=0)."""
    _, stderr = _run_app(redis_url, tmp_path, 3)
    stopped = _by_event(_json_lines(stderr), "worker_stopped")
    assert stopped["handled"] == 3 and stopped["acked"] == 3, stopped
    assert stopped["ack_flushes"] >= 1 and stopped["unacked"] == 0, stopped
