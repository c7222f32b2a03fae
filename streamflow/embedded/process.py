"""``ServerProcess``: a private server process, started, stopped, killed and restarted by PID.

Used by the product (``--embedded``, ``App(redis_url="embedded://")``) and by the test
suite (see :mod:`streamflow.testing`). A :class:`ServerProcess` runs its own server on a
free loopback port in its own temporary directory and only ever signals the PID it
started, so it never touches a server it did not start (for example a shared one on
port 6379). Every still-running server is stopped by an ``atexit`` hook (the registry
below). Which binary to run comes from :mod:`.binaries`; ports and readiness probes
from :mod:`.probe`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .binaries import find_server_binary, version_info
from .probe import HOST, PortInUse, free_port, port_accepts, probe

__all__ = ["ServerProcess"]

_SERVER_LOG = "server.log"
_SOCKET = "server.sock"
_STDOUT_LOG = "stdout.log"
_LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3


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
        unixsocket: bool = False,
        name: str = "streamflow",
    ) -> None:
        if isinstance(args, str):
            raise TypeError("args must be a sequence of strings, not a single string")
        self.binary: str = binary if binary is not None else find_server_binary()
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
        self.args: tuple[str, ...] = tuple(args)
        self.persistent = persistent
        self.unixsocket = unixsocket  # also listen on dir/server.sock
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
        return f"redis://{HOST}:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        """The unix socket the server listens on (only with ``unixsocket=True``)."""
        if not self.unixsocket:
            raise RuntimeError(f"{self!r} was not started with unixsocket=True")
        return self.dir / _SOCKET

    @property
    def unix_url(self) -> str:
        """``unix:///path/to/server.sock?db=0`` (only with ``unixsocket=True``)."""
        return f"unix://{self.socket_path}?db=0"

    @property
    def kind(self) -> str:
        """``"redis"`` or ``"valkey"``, from the binary's ``--version`` output."""
        return version_info(self.binary)[0]

    @property
    def version(self) -> tuple[int, ...]:
        """The server version, e.g. ``(7, 0, 15)``, from the binary's ``--version``."""
        return version_info(self.binary)[1]

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
            HOST,
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
            *(["--unixsocket", str(directory / _SOCKET), "--unixsocketperm", "700"]
              if self.unixsocket else []),
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
                    except PortInUse:
                        if attempt == attempts - 1:
                            raise
            except BaseException:
                if created_dir:
                    self.stop()
                raise

    def _start_once(self, timeout: float) -> None:
        if port_accepts(self.port):
            raise PortInUse(
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
                    raise PortInUse(f"port {self.port} was taken before the server bound it")
                raise RuntimeError(
                    f"{self.binary} exited with code {returncode} before answering PING on "
                    f"port {self.port}. Server log tail:\n{log}"
                )
            if probe(self.port, proc.pid):
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
