"""A small asyncio TCP proxy for network faults, run in a background thread owned by a test.

::

    proxy = ChaosProxy(server.port).start()
    url = proxy.url                  # point workers here instead of at the server
    proxy.delay(100)                 # +100 ms each direction (+200 ms round trip)
    proxy.blackhole()                # accept and read, forward nothing
    proxy.heal()                     # back to pass; connections that lost data are reset
    proxy.reset_all()                # RST (SO_LINGER 0) every open connection
    proxy.cut_after(4096)            # each connection is reset after 4096 more bytes
    proxy.reset_on(b"XACK", times=3) # forward a request holding XACK, then reset: reply lost
    proxy.stop()

Every switch is thread-safe and applies to open connections at once. Data always goes
through one ordered queue per direction, so switching between pass and delay never
reorders bytes. Black-holed bytes are dropped (as a dead link would), so a connection
that lost data is reset when the proxy heals: its Redis protocol stream is broken, the
way a real peer would see a timed-out TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ChaosProxy"]

_HOST = "127.0.0.1"


@dataclass(eq=False)
class _Conn:
    client_w: asyncio.StreamWriter
    upstream_w: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    tainted: bool = False  # lost data in a black hole
    budget: int | None = None  # bytes left before a cut, None: no cut
    mute_down: bool = False  # drop server->client bytes (a reply about to be lost)
    closed: bool = False


class ChaosProxy:
    """TCP proxy 127.0.0.1:<port> -> 127.0.0.1:<upstream_port> with switchable faults."""

    def __init__(self, upstream_port: int, upstream_host: str = _HOST) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode = "pass"  # pass | blackhole
        self.delay_s = 0.0
        self.connections = 0  # accepted in all
        self.resets = 0  # connections reset by a fault
        self.bytes = 0  # forwarded in all
        self._cut: int | None = None
        self._reset_on: tuple[bytes, int, float] | None = None  # (pattern, times left, after)
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    def start(self) -> ChaosProxy:
        self._thread = threading.Thread(target=self._thread_main, name="chaos-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            asyncio.start_server(self._accept, _HOST, 0, reuse_address=True)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._abort(conn)

    def _call(self, func: object, *args: object) -> None:
        """Run ``func(*args)`` in the proxy's loop and wait for it."""
        assert self._loop is not None

        async def run() -> None:
            func(*args)  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # -- switches (thread-safe) -----------------------------------------------------------

    def pass_through(self) -> None:
        """Forward everything at once (no delay, no black hole, no cut, no reset trigger)."""
        self._call(self._set, "pass", 0.0, None, None)

    def delay(self, ms: float) -> None:
        """Add ``ms`` milliseconds in each direction."""
        self._call(self._set, "pass", ms / 1000, self._cut, self._reset_on)

    def blackhole(self) -> None:
        """Accept connections and read data, forward nothing."""
        self._call(self._set, "blackhole", self.delay_s, self._cut, self._reset_on)

    def heal(self) -> int:
        """Back to pass (keeps the delay); resets the connections that lost data. Returns them."""
        out: list[int] = []

        def run() -> None:
            self.mode = "pass"
            tainted = [c for c in self._conns if c.tainted]
            for conn in tainted:
                self._reset(conn)
            out.append(len(tainted))

        self._call(run)
        return out[0]

    def reset_all(self) -> int:
        """Reset (RST) every open connection now; returns how many."""
        out: list[int] = []

        def run() -> None:
            conns = list(self._conns)
            for conn in conns:
                self._reset(conn)
            out.append(len(conns))

        self._call(run)
        return out[0]

    def cut_after(self, nbytes: int | None) -> None:
        """Reset each connection after it forwarded ``nbytes`` more bytes (None: stop cutting)."""

        def run() -> None:
            self._cut = nbytes
            for conn in self._conns:
                conn.budget = nbytes

        self._call(run)

    def reset_on(self, pattern: bytes, times: int = 1, after: float = 0.05) -> None:
        """Forward the next ``times`` client chunks holding ``pattern``, then reset each such
        connection ``after`` seconds later: the server executes the command, the reply is lost."""
        self._call(self._set, self.mode, self.delay_s, self._cut, (pattern, times, after))

    def open_connections(self) -> int:
        return len(self._conns)

    def _set(self, mode: str, delay_s: float, cut: int | None,
             reset_on: tuple[bytes, int, float] | None) -> None:
        self.mode = mode
        self.delay_s = delay_s
        if cut != self._cut:
            for conn in self._conns:
                conn.budget = cut
        self._cut = cut
        self._reset_on = reset_on

    # -- data path ------------------------------------------------------------------------

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            _rst(client_w)
            return
        conn = _Conn(client_w, up_w, budget=self._cut)
        self._conns.add(conn)
        q_up: deque[tuple[float, bytes]] = deque()
        q_down: deque[tuple[float, bytes]] = deque()
        ev_up, ev_down = asyncio.Event(), asyncio.Event()
        conn.tasks = [
            asyncio.create_task(self._read(conn, client_r, q_up, ev_up, upstream=True)),
            asyncio.create_task(self._read(conn, up_r, q_down, ev_down, upstream=False)),
            asyncio.create_task(self._write(conn, up_w, q_up, ev_up, upstream=True)),
            asyncio.create_task(self._write(conn, client_w, q_down, ev_down, upstream=False)),
        ]

    async def _read(self, conn: _Conn, reader: asyncio.StreamReader,
                    queue: deque[tuple[float, bytes]], ev: asyncio.Event, *, upstream: bool) -> None:
        last_due = 0.0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.mode == "blackhole":
                    conn.tainted = True
                    continue
                trigger = self._reset_on
                fire = None
                if upstream and trigger is not None and trigger[1] > 0 and trigger[0] in data:
                    self._reset_on = (trigger[0], trigger[1] - 1, trigger[2])
                    fire = trigger[2]
                    conn.mute_down = True
                if conn.budget is not None:
                    if len(data) >= conn.budget:
                        data = data[:conn.budget]
                        conn.budget = 0
                        fire = 0.0 if fire is None else fire
                    else:
                        conn.budget -= len(data)
                due = max(time.monotonic() + self.delay_s, last_due)
                last_due = due
                queue.append((due, data))
                ev.set()
                if fire is not None:
                    asyncio.get_running_loop().call_later(fire + self.delay_s, self._reset, conn)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # EOF or error on one side: close both (the server or client went away).
        queue.append((last_due, b""))
        ev.set()

    async def _write(self, conn: _Conn, writer: asyncio.StreamWriter,
                     queue: deque[tuple[float, bytes]], ev: asyncio.Event, *, upstream: bool) -> None:
        try:
            while True:
                while not queue:
                    ev.clear()
                    await ev.wait()
                due, data = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                queue.popleft()
                if not data:
                    self._abort(conn)
                    return
                if self.mode == "blackhole":
                    conn.tainted = True
                    continue
                if conn.mute_down and not upstream:
                    continue
                writer.write(data)
                self.bytes += len(data)
                await writer.drain()
        except (OSError, ConnectionError):
            self._abort(conn)
        except asyncio.CancelledError:
            return

    def _reset(self, conn: _Conn) -> None:
        if conn.closed:
            return
        self.resets += 1
        self._abort(conn)

    def _abort(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        _rst(conn.client_w)
        _rst(conn.upstream_w)
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer gets a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
