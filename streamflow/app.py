"""App: the registry of handlers (decorators), publishing, and lifespan hooks."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .config import Settings, validate_name
from .connection import Connection
from .errors import ConfigError
from .jobs.mixin import JobsMixin
from .jobs.registry import Jobs
from .naming import default_group, handler_name
from .policies import Retention, Retry
from .publishing import Durable, PartitionKey, Publisher
from .spec import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT,
    Handler,
    HandlerSpec,
    Hook,
    Service,
    check_handler_options,
)

__all__ = ["App", "Handler", "HandlerSpec", "default_group", "handler_name"]

H = TypeVar("H", bound=Handler)


class App(JobsMixin):
    """A streamflow application: handlers registered with decorators, and a publisher.

    ::

        app = App()

        @app.handler("orders", group="billing", concurrency=200)
        async def bill(msg: Message) -> None: ...

        await app.publish("orders", {"order_id": 7})

    The Redis URL comes from ``--redis-url`` on the command line, else
    ``App(redis_url=...)``, else ``STREAMFLOW_REDIS_URL``, else
    ``redis://localhost:6379/0``. ``embedded://`` starts a private server.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        name: str = "streamflow",
        max_payload_bytes: int | None = None,
    ) -> None:
        self.name = name  # shown in logs
        self.redis_url = redis_url  # explicit URL, or None to use the environment
        self._handlers: list[HandlerSpec] = []  # @app.handler registrations, in order
        self.startup_hooks: list[Hook] = []  # awaited before consumers start
        self.shutdown_hooks: list[Hook] = []  # awaited after consumers stopped
        self._max_payload_bytes = max_payload_bytes  # None: from settings, on first publish
        self._connection: Connection | None = None  # where publishing goes now
        self._own_connection: Connection | None = None  # opened by the app itself, lazily
        # XADDs, and the partitioned streams (app.stream, @app.handler(partitions=))
        self.publisher = Publisher(lambda: self.connection, lambda: self.max_payload_bytes)
        # queues, tasks and schedules (@app.task, app.queue, @app.cron, @app.periodic)
        self.jobs = Jobs(connection=lambda: self.connection, settings=self.settings,
                         max_payload_bytes=lambda: self.max_payload_bytes)

    # -- registration -------------------------------------------------------------------

    def handler(
        self,
        *streams: str,
        group: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        dead_letter: str | None = None,
        start_id: str = "0",
        retention: Retention | None = None,
        partitions: int | None = None,
        ordered: bool = False,
    ) -> Callable[[H], H]:
        """Register an ``async def handler(msg)`` for one or more streams.

        ``group`` defaults to the handler's module and qualified name, e.g.
        ``myservice.app.bill`` (see :func:`default_group`): two services with an ``async
        def handle`` each never share a group by accident. ``concurrency`` bounds the
        handlers of this registration in flight in one process. ``timeout`` (seconds,
        default 180, None for no limit) cancels a handler that runs too long and counts
        as a failed attempt. ``retry`` sets attempts and backoff; after the last attempt
        the entry goes to ``dead_letter`` (default ``<stream>:dlq``; ``{stream}`` is
        replaced by the stream name). ``start_id`` is where a group that does not exist
        yet starts: ``0`` (the default: every entry already in the stream is handled) or
        ``$`` (only entries added from now on); an existing group keeps its position.
        ``partitions=N`` declares every stream given partitioned into N streams (as
        :meth:`stream` does) and reads all of them. ``ordered=True`` runs the entries
        of one key (``publish(..., key=)``) one after another in publish order, different
        keys concurrently; a failed entry is retried in place and holds its key's later
        entries back until it succeeded or was dead-lettered; each partition is read by
        one worker at a time (see docs/scaling.md).
        """
        check_handler_options(streams, concurrency=concurrency, timeout=timeout,
                              start_id=start_id, dead_letter=dead_letter)
        if partitions is not None:  # (declare checks the count)
            streams = tuple(k for s in streams for k in self.publisher.declare(s, partitions))

        def decorate(func: H) -> H:
            registered: H = func
            if not inspect.iscoroutinefunction(func):
                raise ConfigError(
                    "handler", f"{getattr(func, '__qualname__', func)!r} must be an async def"
                )
            name = handler_name(func)
            group_name = group if group is not None else default_group(func)
            validate_name("group", group_name)
            for spec in self._handlers:
                if spec.group == group_name and set(spec.streams) & set(streams):
                    raise ConfigError(
                        "group",
                        f"{group_name!r} on {sorted(set(spec.streams) & set(streams))} is "
                        f"already used by {spec.name}; give each handler its own group",
                    )
            self._handlers.append(
                HandlerSpec(
                    func=func,
                    name=name,
                    streams=tuple(streams),
                    group=group_name,
                    concurrency=concurrency,
                    timeout=float(timeout) if timeout is not None else None,
                    retry=retry or Retry(),
                    dead_letter=dead_letter,
                    start_id=start_id,
                    retention=retention,
                    ordered=bool(ordered),
                )
            )
            return registered

        return decorate

    @property
    def handlers(self) -> list[HandlerSpec]:
        """Every handler a worker runs: ``@app.handler`` s, then one per job queue."""
        return [*self._handlers, *self.jobs.specs()]

    @property
    def services(self) -> list[Service]:
        """Background tasks a worker runs beside the handlers (the job service)."""
        return self.jobs.services()

    def on_startup(self, func: Hook) -> Hook:
        """Register a coroutine function awaited when a worker starts, before any handler runs."""
        self.startup_hooks.append(func)
        return func

    def on_shutdown(self, func: Hook) -> Hook:
        """Register a coroutine function awaited when a worker stops, after handlers finished."""
        self.shutdown_hooks.append(func)
        return func

    # -- connection ---------------------------------------------------------------------

    def settings(self, **overrides: Any) -> Settings:
        """Resolve settings: ``overrides`` > ``App(...)`` arguments > ``STREAMFLOW_*`` > defaults."""
        url = overrides.pop("redis_url", None) or self.redis_url
        if url:  # else STREAMFLOW_REDIS_URL (named in errors as the variable), else the default
            overrides["redis_url"] = url
        if self._max_payload_bytes is not None:
            overrides.setdefault("max_payload_bytes", self._max_payload_bytes)
        return Settings.load(overrides)

    @property
    def connection(self) -> Connection:
        """The connection publishing goes through: a serving worker's, else the app's own.

        The app's own is opened on first use from its settings and closed by :meth:`aclose`.
        """
        conn = self._connection
        if conn is None or conn.closed:
            own = self._own_connection
            if own is None or own.closed:
                s = self.settings()
                own = self._own_connection = Connection(
                    s.redis_url, socket_timeout=s.socket_timeout + s.block_ms / 1000,
                    connect_timeout=s.connect_timeout,
                )
            conn = self._connection = own
        return conn

    def current_connection(self) -> Connection | None:
        """The connection publishing goes through now (None until one is needed)."""
        return self._connection

    def bind_connection(self, connection: Connection | None) -> None:
        """Publish through ``connection`` (a worker shares its own this way while it serves).

        The app does not close a connection bound this way; whoever opened it does.
        """
        self._connection = connection

    @property
    def max_payload_bytes(self) -> int:
        """Largest payload ``publish`` accepts: ``App(max_payload_bytes=...)``, else the
        ``STREAMFLOW_MAX_PAYLOAD_BYTES`` setting, resolved once on first use."""
        if self._max_payload_bytes is None:
            self._max_payload_bytes = Settings.load().max_payload_bytes
        return self._max_payload_bytes

    async def aclose(self) -> None:
        """Close the app's own connection (and stop an embedded server it started).

        A connection bound by a worker is the worker's to close. The app can publish
        again afterwards: a new connection is opened on first use.
        """
        self.jobs.bridge.close()
        own, self._own_connection = self._own_connection, None
        if self._connection is own:
            self._connection = None
        if own is not None:
            await own.aclose()

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- publishing ---------------------------------------------------------------------

    def stream(self, name: str, *, partitions: int) -> tuple[str, ...]:
        """Declare ``name`` a partitioned stream of ``partitions`` Redis streams; return
        their keys (``orders:{p0}``, ...; see :mod:`streamflow.partitions`).

        ``publish(name, ..., key=k)`` then writes to partition ``crc32(k) % partitions``
        (without a key: round robin). ``@app.handler(name, partitions=N)`` declares it too.
        """
        return self.publisher.declare(name, partitions)

    async def publish(
        self, stream: str, payload: Any, *, key: PartitionKey | None = None,
        durable: Durable = False, replicas: int = 1, durable_timeout: float = 1.0,
        maxlen: int | None = None, approximate: bool = True,
    ) -> str:
        """Append ``payload`` (any JSON-serialisable value) to ``stream``; return the entry id.

        The entry has the field ``sf:json`` holding the JSON text, and ``sf:key`` holding
        ``key`` when one is given. For a partitioned stream ``key`` picks the partition
        (same key, same partition, in publish order); without one entries go round robin.
        ``durable=True`` returns only once ``replicas`` replicas acknowledged the entry
        (``WAIT``; ``"aof"``: ``WAITAOF``, fsynced to their append-only files) and raises
        :class:`~streamflow.errors.NotReplicated` if they did not within
        ``durable_timeout`` seconds (see docs/scaling.md for what this does not promise).
        ``maxlen`` caps the stream length (``~`` approximate by default); prefer a handler
        ``retention=`` policy, which never trims unacknowledged entries.
        """
        return await self.publisher.publish(
            stream, payload, key=key, durable=durable, replicas=replicas,
            durable_timeout=durable_timeout, maxlen=maxlen, approximate=approximate,
        )

    async def publish_fields(
        self, stream: str, fields: Mapping[str, Any], *, key: PartitionKey | None = None,
        durable: Durable = False, replicas: int = 1, durable_timeout: float = 1.0,
        maxlen: int | None = None, approximate: bool = True,
    ) -> str:
        """Append a raw field map (str/bytes/int/float values) to ``stream``; return the
        entry id. ``key``, ``durable`` and the rest: as for :meth:`publish`."""
        return await self.publisher.publish_fields(
            stream, fields, key=key, durable=durable, replicas=replicas,
            durable_timeout=durable_timeout, maxlen=maxlen, approximate=approximate,
        )

    async def publish_many(
        self, stream: str, payloads: Iterable[Any], *, chunk: int = 1000, raw: bool = False,
        keys: Iterable[PartitionKey | None] | None = None, durable: Durable = False,
        replicas: int = 1, durable_timeout: float = 1.0,
    ) -> list[str]:
        """Append many payloads with pipelined XADDs (``chunk`` per round trip); return the ids.

        With ``raw=True`` every item is a field map, as for :meth:`publish_fields`. ``keys``
        gives each payload its partition key (in order); ``durable`` waits per chunk.
        """
        return await self.publisher.publish_many(
            stream, payloads, chunk=chunk, raw=raw, keys=keys, durable=durable,
            replicas=replicas, durable_timeout=durable_timeout,
        )

    # -- running ------------------------------------------------------------------------

    async def serve(self, **overrides: Any) -> None:
        """Run a worker for this app in the current event loop until it is stopped."""
        from .worker import Worker

        await Worker(self, self.settings(**overrides)).serve()

    def run(self, **overrides: Any) -> int:
        """Run a worker for this app until SIGINT/SIGTERM (blocking; starts its own loop).

        Returns the exit status (0, or 128 + the signal's number after a forced stop).
        """
        from .worker import run_worker

        return run_worker(self, self.settings(**overrides))

