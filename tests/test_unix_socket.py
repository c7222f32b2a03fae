"""``unix://`` URLs end to end: ``streamflow run``, ``streamflow info`` and ``App.publish`` on a unix socket.

The server is a private one that listens on a unix socket in its own directory (and on a
loopback port, which the test uses only to look at the result with a plain client).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis

from streamflow import App
from streamflow.embedded import ServerProcess, find_server_binary
from streamflow.testing import wait_until_blocking

APP = """\
from streamflow import App, Message

app = App()


@app.handler("unix-jobs", group="unix-group")
async def handle(msg: Message) -> None:
    client = await app.connection.client()
    await client.sadd("unix-jobs:done", str(msg.payload["n"]))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}


@pytest.fixture(scope="module")
def unix_server() -> Iterator[ServerProcess]:
    """A private server listening on a unix socket (and on a loopback port)."""
    with ServerProcess(find_server_binary("redis"), unixsocket=True,
                       name="streamflow-test-unix") as server:
        yield server


@pytest.fixture
def tcp(unix_server: ServerProcess) -> Iterator[redis.Redis]:
    """A plain client over TCP on the flushed unix-socket server, to check what happened."""
    client = redis.Redis.from_url(unix_server.url, decode_responses=True, socket_timeout=10)
    client.flushall()
    yield client
    client.close()


def _wait(cond: Callable[[], object], what: str, proc: subprocess.Popen[str],
          timeout: float = 20) -> None:
    """Wait until ``cond()``; fail at once, with the worker's output, if the worker exits."""
    def alive_and() -> object:
        if proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) while waiting for {what}:\n"
                        f"{proc.communicate()[1]}")
        return cond()

    wait_until_blocking(alive_and, timeout=timeout, what=what)


def _group_exists(tcp: redis.Redis) -> bool:
    try:
        return any(g["name"] == "unix-group" for g in tcp.xinfo_groups("unix-jobs"))
    except redis.ResponseError:
        return False


async def _publish(url: str, count: int) -> None:
    async with App(url) as producer:
        for n in range(count):
            await producer.publish("unix-jobs", {"n": n})


def test_run_info_and_publish_work_over_a_unix_socket(
    unix_server: ServerProcess, tcp: redis.Redis, tmp_path: Path
) -> None:
    """`streamflow run` handles entries that App.publish sent over unix://, and `streamflow info` reports
    the group, all through the server's unix socket."""
    url = unix_server.unix_url
    (tmp_path / "unixapp.py").write_text(APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamflow", "run", "unixapp:app", "--redis-url", url,
         "--log-format", "json"],
        cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait(lambda: _group_exists(tcp), "group creation", proc)
        anyio.run(_publish, url, 20)
        _wait(lambda: tcp.scard("unix-jobs:done") == 20, "20 entries handled", proc)
        info = subprocess.run(
            [sys.executable, "-m", "streamflow", "info", "unix-jobs", "--redis-url", url, "--json"],
            env=_env(), capture_output=True, text=True, timeout=60, check=False,
        )
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "worker_started" in stderr and "Traceback" not in stderr
    assert tcp.smembers("unix-jobs:done") == {str(n) for n in range(20)}
    assert tcp.xpending("unix-jobs", "unix-group")["pending"] == 0
    assert info.returncode == 0, info.stderr
    assert "unix-group" in json.dumps(json.loads(info.stdout))
