"""A small HTTP/1.1 server on the worker's event loop, for ``/metrics`` and the health checks.

Enough HTTP for a scraper and an orchestrator's probes, and nothing more: ``GET`` and
``HEAD`` only (405 otherwise), one request per connection (``Connection: close``), a
request head of at most :data:`MAX_HEAD` bytes (431 beyond), :data:`REQUEST_TIMEOUT`
seconds for a client to send its request and read the answer, at most
:data:`MAX_CONNECTIONS` connections at once (503 beyond), 404 for unknown paths.

Why on the event loop and not in a thread: a route reads the worker's counters between
two steps of the slots, so a snapshot is consistent without a lock, and an answer proves
that the loop runs (a loop blocked by a handler answers nothing: the probe times out).
Routes are plain functions (they build their answer without awaiting); a route that
raises answers 500 and is logged, it never ends the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from ..errors import ConfigError

__all__ = ["MAX_CONNECTIONS", "MAX_HEAD", "REQUEST_TIMEOUT", "HttpServer", "Response", "Route"]

MAX_HEAD = 8192  # bytes of request line and headers
REQUEST_TIMEOUT = 5.0  # seconds per connection: read the request, send the answer
MAX_CONNECTIONS = 32  # connections served at once

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}
_TEXT = "text/plain; charset=utf-8"
_DISCONNECTED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


@dataclass(frozen=True)
class Response:
    """What a route answers."""

    status: int
    body: bytes
    content_type: str = _TEXT
    headers: Mapping[str, str] = field(default_factory=dict)

    def encode(self, *, head_only: bool = False) -> bytes:
        """The whole HTTP/1.1 response (without the body for a HEAD request)."""
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}",
                 f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}",
                 "Cache-Control: no-store", "Connection: close",
                 *(f"{k}: {v}" for k, v in self.headers.items())]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


#: A route: builds its response without awaiting (the loop stays consistent meanwhile).
Route = Callable[[], Response]


class _HeadTooLarge(Exception):
    pass


class HttpServer:
    """Serves ``routes`` (path -> :data:`Route`) until cancelled; see the module docstring."""

    def __init__(self, routes: Mapping[str, Route], *, log: Any, setting: str = "metrics_port") -> None:
        self.routes = {path.encode(): route for path, route in routes.items()}
        self.log = log
        self.setting = setting  # named in the error when the port cannot be bound
        self.port: int | None = None  # the port listened on, once listening
        self.active = 0  # connections being served
        self.served = 0  # requests answered (any status)

    async def serve(self, host: str, port: int, *,
                    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port``, report the port bound through ``task_status``, serve."""
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as exc:  # EADDRINUSE, EACCES (port < 1024), EADDRNOTAVAIL, bad host
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConfigError(self.setting, f"cannot listen on {host}:{port}: {reason}") from None
        async with listener, anyio.create_task_group() as tg:
            self.port = int(listener.extra(SocketAttribute.local_port))
            task_status.started(self.port)
            for one in listener.listeners:
                tg.start_soon(self._accept, one, tg)

    async def _accept(self, listener: anyio.abc.Listener[Any], tg: anyio.abc.TaskGroup) -> None:
        assert isinstance(listener, anyio.abc.SocketListener)
        failing = False
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # out of file descriptors, a connection aborted early
                if not failing:
                    self.log.warning("metrics_accept_failed", error=str(exc) or type(exc).__name__)
                failing = True
                await anyio.sleep(0.1)
                continue
            failing = False
            tg.start_soon(self._handle, stream)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        self.active += 1
        try:
            async with stream:
                with anyio.move_on_after(REQUEST_TIMEOUT):
                    try:
                        if self.active > MAX_CONNECTIONS:
                            await stream.send(Response(503, b"too many connections\n").encode())
                            return
                        await self._answer(stream)
                        await stream.send_eof()
                    except _DISCONNECTED:
                        pass  # the client went away: nothing to answer
        finally:
            self.active -= 1

    async def _answer(self, stream: anyio.abc.SocketStream) -> None:
        try:
            request_line = await _read_head(stream)
        except _HeadTooLarge:
            await stream.send(Response(431, b"request head too large\n").encode())
            return
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            await stream.send(Response(400, b"bad request line\n").encode())
            return
        method, target = parts[0], parts[1]
        head_only = method == b"HEAD"
        route = self.routes.get(target.split(b"?", 1)[0])
        if method not in (b"GET", b"HEAD"):
            response = Response(405, b"only GET and HEAD\n", headers={"Allow": "GET, HEAD"})
        elif route is None:
            response = Response(404, b"not found: try /metrics, /healthz or /readyz\n")
        else:
            try:
                response = route()
            except Exception as exc:  # a bug in a route answers 500; the worker goes on
                self.log.exception("metrics_route_failed", path=target.decode("latin-1"))
                response = Response(500, f"{type(exc).__name__}\n".encode())
        self.served += 1
        await stream.send(response.encode(head_only=head_only))


async def _read_head(stream: anyio.abc.SocketStream) -> bytes:
    """The request's line, once its whole head (up to the empty line) arrived; no body is read."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:  # (bare LF line ends tolerated)
        if len(data) > MAX_HEAD:
            raise _HeadTooLarge
        data += await stream.receive(MAX_HEAD + 1)
    if data.find(b"\n\n") > MAX_HEAD or data.find(b"\r\n\r\n") > MAX_HEAD:
        raise _HeadTooLarge
    return data.split(b"\n", 1)[0].rstrip(b"\r")
