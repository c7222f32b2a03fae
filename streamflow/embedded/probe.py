"""Loopback ports and RESP probes: a free port to run on, and whether our server answers.

:func:`free_port` picks a port that is free now (never 6379, the usual shared Redis);
:func:`port_accepts` tells whether something already listens on a port; :func:`probe`
PINGs a port and checks via ``INFO server`` that the answering server is the process
we started, raising :class:`PortInUse` when it is someone else's. Plain sockets only,
no redis-py, so it can run before any client exists.
"""

from __future__ import annotations

import random
import re
import socket

__all__ = ["HOST", "PortInUse", "free_port", "port_accepts", "probe"]

#: The only address embedded servers bind and are probed on.
HOST = "127.0.0.1"
_PING = b"*1\r\n$4\r\nPING\r\n"
_INFO_SERVER = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"
#: Ports free_port() never hands out even if they look free (the usual shared Redis).
_AVOID_PORTS = frozenset({6379})


class PortInUse(RuntimeError):
    """The port a ServerProcess was about to use is taken by another process."""


def free_port(max_port: int = 55535) -> int:
    """Return a currently free TCP port on 127.0.0.1 that is ``<= max_port``.

    The default keeps ``port + 10000`` (the cluster bus port) a valid port number.
    Asks the OS for an ephemeral port and retries while it is above ``max_port``.
    """
    if max_port < 1024:
        raise ValueError(f"max_port must be >= 1024, not {max_port}")
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
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
                sock.bind((HOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"could not find a free loopback port <= {max_port}")


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


def port_accepts(port: int) -> bool:
    """Return True if something already listens on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def probe(port: int, pid: int) -> bool:
    """PING 127.0.0.1:port; True once the server answers and is the process ``pid``.

    Raises :class:`PortInUse` if a different server process answers.
    """
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
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
        raise PortInUse(f"port {port} is answered by another server (pid {match.group(1)!r})")
    return True
