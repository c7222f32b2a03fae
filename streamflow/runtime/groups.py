"""Groups: creating a handler's consumer group on each of its streams, and recreating it.

``XGROUP CREATE ... MKSTREAM`` at start-up; an existing group is kept as it is. After
``NOGROUP`` (the server was flushed or restarted empty, the group or stream deleted)
the group is recreated after the last id this process read, so nothing it already
handled runs again and nothing newer is skipped.

Every failure that may pass is retried with backoff rather than ending the worker: a
lost connection, a server still loading its data, and a server out of memory (which
refuses XGROUP CREATE even for a group that exists: then the group is looked up).
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from ..errors import ConfigError, ServerUnavailable
from ..redis_errors import Kind, classify
from .stop import StopSignal

__all__ = ["Groups"]


class Groups:
    """The consumer group ``group`` on every stream of one handler."""

    def __init__(
        self, client: Any, *, starts: dict[str, str], group: str, stop: StopSignal, log: Any,
        optional: frozenset[str] = frozenset(),
    ) -> None:
        self.client = client  # shared redis.asyncio client
        self.starts = starts  # stream key -> where a new group starts there ("0", "$", an id)
        self.streams = tuple(starts)  # every key the group is read on
        self.group = group
        self.stop = stop  # creation retries give up once set
        self.log = log
        self.optional = optional  # keys that may wait (replay streams): see ensure()
        self.deferred: set[str] = set()  # optional keys whose group could not be made yet
        self.ready = self.streams  # keys the group exists on: what readers and claims use
        self.version = 0  # bumped whenever `ready` changes (readers rebuild their command)
        self.last_seen: dict[str, bytes] = {}  # newest id read per stream (readers write it)

    async def ensure(self, start_ids: dict[str, bytes | str] | None = None) -> None:
        """Create the group on every stream (MKSTREAM); an existing group is left as it is.

        A server out of memory cannot create a stream that does not exist yet: an optional
        key (a replay stream, empty until an operator replays) is then left for
        :meth:`create_deferred`, so that a worker started while the server is full still
        drains its streams, which needs no memory.
        """
        for stream in self.streams:
            start = (start_ids or {}).get(stream, self.starts[stream])
            delay = 0.5
            while (kind := await self._create(stream, start, recreated=bool(start_ids))):
                if kind is Kind.OOM and stream in self.optional:
                    self.deferred.add(stream)
                    break
                await self.stop.pause(delay)
                if self.stop.is_set:
                    return
                delay = min(delay * 2, 10.0)
            else:
                self.deferred.discard(stream)
        self._update_ready()

    async def create_deferred(self) -> None:
        """Every second, try again to create the deferred groups, until stop.

        It keeps running when none is deferred: a recreation after NOGROUP while the
        server is out of memory may defer a group later on.
        """
        while not self.stop.is_set:
            await self.stop.pause(1.0)
            for stream in sorted(self.deferred):
                if not await self._create(stream, self.starts[stream], recreated=False):
                    self.deferred.discard(stream)
            self._update_ready()

    def _update_ready(self) -> None:
        ready = tuple(k for k in self.streams if k not in self.deferred)
        if ready != self.ready:
            self.ready = ready
            self.version += 1

    async def recreate(self) -> None:
        """After NOGROUP: create the group again after the last id this process read."""
        await self.ensure({stream: self.last_seen.get(stream, b"0") for stream in self.streams})

    async def exists(self, stream: str) -> bool:
        """True if the group exists on ``stream``."""
        return await self._info(stream) is not None

    async def _info(self, stream: str) -> dict[bytes, Any] | None:
        """The group's row of XINFO GROUPS on ``stream``; None if absent or unreadable."""
        try:
            groups = await self.client.execute_command("XINFO", "GROUPS", stream)
        except (RedisError, OSError):
            return None
        for row in groups or []:
            info = dict(zip(row[::2], row[1::2], strict=True))
            if info.get(b"name") == self.group.encode():
                return info
        return None

    async def _create(self, stream: str, start: bytes | str, *, recreated: bool) -> Kind | None:
        """One attempt; None when the group exists afterwards, else why not (try again later)."""
        try:
            await self.client.execute_command(
                "XGROUP", "CREATE", stream, self.group, start, "MKSTREAM"
            )
        except (RedisError, OSError) as exc:
            text = str(exc) or type(exc).__name__
            kind = classify(exc)
            if kind is Kind.BUSYGROUP:
                return None
            if kind is Kind.OOM:
                if await self.exists(stream):
                    return None
                self.log.error("group_create_refused", stream=stream, error=text,
                               hint="the server is out of memory; retrying")
                return kind
            if kind is Kind.TRANSIENT:
                self.log.warning("group_create_failed", stream=stream, error=text,
                                 hint="retrying with backoff")
                return kind
            if kind is Kind.WRONGTYPE:
                raise ConfigError(
                    "stream name", f"key {stream!r} exists and is not a stream"
                ) from None
            if kind is Kind.NOPERM:
                raise ServerUnavailable(
                    f"the Redis user may not create group {self.group!r} on {stream!r}: {text}"
                ) from None
            raise
        start_text = start.decode() if isinstance(start, bytes) else start
        to_read = await self._lag(stream)
        if recreated:
            self.log.warning("group_recreated", stream=stream, start_id=start_text,
                             entries_to_read=to_read)
        else:
            self.log.info("group_created", stream=stream, start_id=start_text,
                          entries_to_read=to_read)
        return None

    async def _lag(self, stream: str) -> int | None:
        """Entries the group has yet to read (XINFO GROUPS lag; None if the server can't tell)."""
        info = await self._info(stream)
        lag = info.get(b"lag") if info is not None else None
        return int(lag) if lag is not None else None
