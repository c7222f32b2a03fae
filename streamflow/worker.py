"""Worker: runs every handler's consumer, the ack flusher and signal handling in one task group.

Shutdown (SIGTERM/SIGINT or :meth:`Worker.stop`): readers and reclaimers stop, handlers
already started (and entries already read) finish within ``grace_period``, acks are
flushed, the process exits 0. Whatever did not finish stays pending and is redelivered
later. A second signal cancels running handlers at once, and the process exits with
128 + that signal's number (130 after SIGINT, 143 after SIGTERM; 1 for a second
:meth:`Worker.stop` call), as a shell reports a process the signal killed: a forced stop
is not a clean one.

The consumer name (default ``<host>-<slot>``) and the lease that keeps it this
process's own are :mod:`streamflow.runtime.identity`'s: taken before the consumers
start, renewed by a task of the worker's task group, released after they stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog
from redis.exceptions import RedisError

from .clustering import check_same_slot, is_cluster
from .config import Settings, unknown_env_vars
from .connection import Connection, redact_url
from .errors import ConfigError, ConsumerNameInUse
from .keys import consumer_leases_key, host_label, replay_stream, slot_consumer_name
from .permissions import check_permissions
from .redis_errors import TRANSIENT
from .runtime.acks import AckBuffer
from .runtime.consumer import Consumer
from .runtime.identity import LEASE_TTL, Identity, fixed_name
from .runtime.loopwatch import LoopWatch
from .runtime.stopped import report_stopped_consumers
from .spec import HandlerSpec, Registry
from .stats import WorkerStats

if TYPE_CHECKING:
    from .metrics.exporter import Exporter

__all__ = ["Worker", "default_consumer_name", "run_worker"]

log = structlog.get_logger("streamflow.worker")


def default_consumer_name(slot: int = 0) -> str:
    """``<host>-<slot>``: the default name of worker slot ``slot`` on this host.

    Which slot a worker takes is decided when it starts (the lowest free one, see
    :mod:`streamflow.runtime.identity`).
    """
    return slot_consumer_name(host_label(), slot)


class Worker:
    """Runs the handlers of an application (an :class:`~streamflow.App`) until stopped.

    The worker takes the handler specs and hooks through the small
    :class:`~streamflow.spec.Registry` protocol and never imports the App.
    """

    def __init__(
        self, app: Registry, settings: Settings | None = None, *, handle_signals: bool = True
    ) -> None:
        self.app = app  # handlers, hooks, and where publishing goes while serving
        self.settings = settings or app.settings()  # resolved once, read as attributes
        # The consumer name: fixed by the settings, else the slot taken in serve().
        self.name = fixed_name(self.settings, host_label()) or default_consumer_name()
        self.lease_ttl = LEASE_TTL  # seconds a consumer-name lease lives unrenewed
        self._identity: Identity | None = None  # the name's leases while serving
        self.handle_signals = handle_signals  # install SIGINT/SIGTERM handlers in serve()
        self.consumers: list[Consumer] = []  # one per handler, built in serve()
        self.acker: AckBuffer | None = None  # built in serve(), on the worker's client
        self.connection: Connection | None = None  # the worker's connection while serving
        self.ready = anyio.Event()  # set once every consumer has created its groups
        self._stop = anyio.Event()  # set by stop(): begin the graceful drain
        self._forced = False  # set by a second stop(): cancel handlers now
        self.exit_reason = ""  # why the worker stopped (signal name, "requested", ...)
        self.exit_status = 0  # process exit status: 0, or non-zero after a forced stop
        self.loop_watch: LoopWatch | None = None  # while serving
        self.exporter: Exporter | None = None  # /metrics, /healthz, /readyz (metrics_port)

    @property
    def stopping(self) -> bool:
        """True once a shutdown has begun."""
        return self._stop.is_set()

    @property
    def handled(self) -> int:
        """Handlers that returned successfully so far, over all consumers."""
        return sum(c.counters.handled for c in self.consumers)

    def stats(self) -> WorkerStats:
        """A snapshot of every counter: per handler, and the ack buffer's."""
        acker = self.acker
        handlers = tuple(c.stats() for c in self.consumers)
        if acker is None:  # (not "if not acker": an empty AckBuffer is falsy, it has __len__)
            return WorkerStats(handlers=handlers, acked=0, ack_flushes=0, unacked=0, ack_missing=0)
        return WorkerStats(
            handlers=handlers, acked=acker.acked, ack_flushes=acker.flushes,
            unacked=len(acker), ack_missing=acker.missing,
        )

    def stop(self, reason: str = "requested") -> None:
        """Begin a graceful shutdown; a second call cancels running handlers at once."""
        if self._stop.is_set():
            if not self._forced:
                self._forced = True
                signum = signal.Signals.__members__.get(reason)
                self.exit_status = 128 + signum.value if signum is not None else 1
                log.warning("worker_force_stop", reason=reason, exit_status=self.exit_status,
                            hint="running handlers are cancelled; their entries stay pending "
                                 "and will be redelivered")
                for c in self.consumers:
                    c.cancel_handlers()
            return
        self.exit_reason = reason
        self._stop.set()
        for c in self.consumers:  # also those still starting (e.g. waiting out an OOM)
            c.stop()

    async def serve(self) -> None:
        """Connect, run until :meth:`stop` (or a signal), drain, and close."""
        if not self.app.handlers:
            raise ConfigError("app", "no handlers or tasks registered (use @app.handler(...) or @app.task)")
        s = self.settings
        if s.metrics_port is not None:  # before connecting: the extra, the port (docs/operations.md)
            from .metrics import check_before_start

            check_before_start(s)
        previous = self.app.current_connection()
        if (previous is not None and not previous.closed
                and s.redis_url.lower().startswith("embedded://")
                and previous.url == s.redis_url):
            # One embedded server for the app's publishing and all its workers.
            conn, owned = previous, False
        else:
            conn = Connection(
                s.redis_url, socket_timeout=s.socket_timeout + s.block_ms / 1000,
                connect_timeout=s.connect_timeout,
            )
            owned = True
        self.connection = conn
        log.debug("worker_settings", consumer=self.name,
                  **{f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
                  | {"redis_url": conn.safe_url})
        for variable, close in unknown_env_vars():
            log.warning("unknown_environment_variable", variable=variable,
                        **({"did_you_mean": close} if close else {}),
                        hint="streamflow ignores it; each setting is STREAMFLOW_<SETTING NAME>")
        # app.publish (from handlers too) reaches the server this worker reads while it
        # serves; afterwards the app publishes through what it had before.
        self.app.bind_connection(conn)
        try:
            await conn.check()
            client = await conn.client()
            # (the streams of job queues with periodic tasks: their workers enqueue ticks)
            periodic = [p.task.stream for p in getattr(getattr(self.app, "jobs", None),
                                                       "periodic", ())]
            if is_cluster(client):
                check_slots(self.app.handlers)
            await check_permissions(client, self.app.handlers, self.name, periodic)
            await warn_if_streams_can_be_evicted(client)
            if not await self._take_name(client):
                return
            try:
                await report_stopped_consumers(
                    client, self._identity.pairs if self._identity else [], me=self.name,
                    visibility_timeout=s.visibility_timeout, log=log)
                for hook in self.app.startup_hooks:  # after the name: a hook may log it
                    await hook()
                self.acker = AckBuffer(client, max_batch=s.ack_batch, interval=s.ack_interval)
                self.consumers = [
                    Consumer(spec, client, self.acker, s, self.name) for spec in self.app.handlers
                ]
                await self._run(conn)
            finally:
                await self._release_name()
            for hook in self.app.shutdown_hooks:
                with anyio.CancelScope(shield=True):
                    await hook()
            lost = self._identity.lost if self._identity else None
            if lost is not None:
                raise ConsumerNameInUse(
                    f"consumer name {self.name!r} was taken over by another process "
                    f"({lost.describe()}) while this worker could not renew its lease; "
                    "this worker stopped so that the two never share it")
        finally:
            if self.app.current_connection() is conn:
                self.app.bind_connection(
                    previous if previous is not None and not previous.closed else None
                )
            if owned:
                await conn.aclose()

    async def _take_name(self, client: Any) -> bool:
        """Take this worker's consumer name and its leases (see :mod:`.runtime.identity`).

        False when a stop was requested while waiting for a fixed name.
        """
        identity = Identity(client, self.app.handlers, self.settings, ttl=self.lease_ttl,
                            log=log)
        delay = 0.0
        while True:
            try:
                name = await identity.acquire(self._stop)
                break
            except TRANSIENT as exc:
                # The server went away after the start-up checks passed: wait for it, as
                # group creation does (the same token takes its own half-taken leases again).
                if not delay:
                    log.warning("consumer_name_take_failed",
                                error=redact_url(str(exc)) or type(exc).__name__,
                                hint="retrying with backoff")
                delay = min(max(delay * 2, 0.1), 5.0)
                with anyio.move_on_after(delay):
                    await self._stop.wait()
                if self._stop.is_set():
                    return False
        if name is None:
            return False
        self._identity, self.name = identity, name
        return True

    def _name_lost(self, reason: str) -> None:
        """Another process took this worker's name: stop (unless already stopping)."""
        if not self.stopping:
            self.stop(reason)

    async def _release_name(self) -> None:
        if self._identity is not None:
            with anyio.CancelScope(shield=True):
                await self._identity.release()

    async def _run(self, conn: Connection) -> None:
        assert self.acker is not None
        acker = self.acker
        s = self.settings
        acker_done = anyio.Event()

        async def run_acker() -> None:
            try:
                await acker.run()
            finally:
                acker_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_acker)
            self.loop_watch = LoopWatch(self.app.handlers, log)
            tg.start_soon(self.loop_watch.run)
            if s.metrics_port is not None:  # serves until the task group is cancelled, last
                from .metrics.exporter import Exporter

                self.exporter = Exporter(self, await conn.client(), self.app.handlers, s,
                                         loop_watch=self.loop_watch)
                await tg.start(self.exporter.run)
            if self._identity is not None:
                tg.start_soon(self._identity.keep, self._name_lost)
            if self.handle_signals:
                await tg.start(self._watch_signals)
            for c in self.consumers:
                await tg.start(c.run)
            services = anyio.CancelScope()  # job scheduling, cron, cancels: until drained
            client = await conn.client()

            async def run_services(
                *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
            ) -> None:
                with services:
                    async with anyio.create_task_group() as stg:
                        for service in getattr(self.app, "services", ()):
                            await stg.start(service.run, client, self.name)
                        task_status.started()

            await tg.start(run_services)
            log.info(
                "worker_started", consumer=self.name, loop=type(asyncio.get_running_loop()).__module__,
                url=conn.safe_url
                if conn.server is None else conn.effective_url,
                handlers=[{"handler": c.spec.name, "streams": c.streams, "group": c.group,
                           "concurrency": c.concurrency} for c in self.consumers],
            )
            self.ready.set()
            await self._stop.wait()
            log.info("worker_stopping", reason=self.exit_reason,
                     in_flight=sum(c.in_flight for c in self.consumers),
                     grace_period=s.grace_period)
            for c in self.consumers:
                c.stop()
            with anyio.move_on_after(s.grace_period) as grace:
                for c in self.consumers:
                    await c.drained.wait()
            if grace.cancelled_caught:
                left = sum(c.in_flight for c in self.consumers)
                log.warning("grace_period_expired", cancelled=left,
                            hint="their entries stay pending and will be redelivered")
                for c in self.consumers:
                    c.cancel_handlers()
                for c in self.consumers:
                    await c.drained.wait()
            services.cancel()
            acker.close()
            with anyio.move_on_after(s.socket_timeout + 1):
                await acker_done.wait()
            tg.cancel_scope.cancel()
        stats = self.stats()
        log.info(
            "worker_stopped",
            handled=stats.handled, failed=stats.failed, dead_lettered=stats.dead_lettered,
            acked=stats.acked, ack_flushes=stats.ack_flushes, unacked=stats.unacked,
            exit_status=self.exit_status,
        )

    async def _watch_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                log.debug("signal_received", signal=signal.Signals(signum).name,
                          stopping=self.stopping)
                self.stop(signal.Signals(signum).name)


_MAY_INFO = """
if redis.acl_check_cmd == nil then return 1 end
local ok, allowed = pcall(redis.acl_check_cmd, 'INFO', 'memory')
if ok and allowed then return 1 end
return 0
"""


async def warn_if_streams_can_be_evicted(client: Any) -> str | None:
    """Log a warning when the server's ``maxmemory-policy`` may evict streams; return it.

    ``allkeys-*`` policies evict any key, streams and their groups' pending entries
    included; ``volatile-*`` ones evict keys with a TTL. ``noeviction`` is the safe
    policy for a queue: writes fail when memory is full, nothing is dropped.
    """
    try:
        # A worker's least-privilege ACL need not allow INFO: ask first (Redis 7+), so a
        # denied INFO does not land in the server's ACL LOG.
        allowed = await client.eval(_MAY_INFO, 0)
        if not allowed:
            return None
        info = await client.execute_command("INFO", "memory")
    except (RedisError, OSError):
        return None  # not worth failing the start for
    raw = info.get("maxmemory_policy", "")  # redis-py parses INFO into a dict
    policy = raw.decode() if isinstance(raw, bytes) else str(raw)
    if policy and policy != "noeviction":
        log.warning(
            "eviction_policy_may_drop_streams", maxmemory_policy=policy,
            hint="with this policy the server may evict stream keys (and their pending "
                 "entries) when memory is full; use maxmemory-policy noeviction",
        )
        return policy
    return None


def check_slots(handlers: Sequence[HandlerSpec]) -> None:
    """On a Redis Cluster: each stream's dead-letter and replay streams and its consumer
    leases must live in its slot (the runtime's scripts touch them together)."""
    for spec in handlers:
        for stream in spec.streams:
            check_same_slot(stream, {
                "dead-letter stream": spec.dead_letter_stream(stream),
                "replay stream": replay_stream(stream, spec.group),
                "consumer leases hash": consumer_leases_key(stream, spec.group),
            })


def run_worker(app: Registry, settings: Settings) -> int:
    """Blocking entry point used by the CLI: logging, the event loop ``settings.loop`` names, serve.

    Returns the process exit status: 0 after a graceful stop, 128 + the signal's number
    after a stop forced by a second signal (see :attr:`Worker.exit_status`).
    """
    from .config import use_uvloop
    from .logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    options: dict[str, Any] = {"use_uvloop": use_uvloop(settings)}

    worker = Worker(app, settings)

    async def main() -> None:
        try:
            await worker.serve()
        finally:
            await app.aclose()

    anyio.run(main, backend="asyncio", backend_options=options)
    return worker.exit_status
