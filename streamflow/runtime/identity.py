"""Identity: which consumer name this worker runs under, and the leases that keep it its own.

**Names.** By default a worker is ``<host>-<slot>`` (:func:`streamflow.keys.slot_consumer_name`),
the slot being the lowest one free in every group the worker consumes - free slots
whose consumers left pending entries first - so a worker restarted on the same host
comes back under its old name and takes its own pending entries back at once
(:meth:`~.claims.Claims.drain_own_pending`) instead of leaving them to the reclaimer
after ``visibility_timeout``. ``consumer_name`` (``--consumer-name``,
``STREAMFLOW_CONSUMER_NAME``) fixes the name; so does ``worker_slot``
(``STREAMFLOW_WORKER_SLOT``: ``<host>-<slot>``, for a supervisor that gives each child
its own slot).

**Leases.** Per stream and group the worker consumes, a field of the hash
:func:`~streamflow.keys.consumer_leases_key` (format: :mod:`streamflow.name_lease`,
scripts: ``scripts.NAME_*``), taken at start, renewed every ``ttl / 3`` by
:meth:`Identity.keep` (a task of the worker's task group), deleted at a clean shutdown
if the token is still ours. A slot is free when no lease holds it, its lease expired,
or its holder is provably dead (a process of this machine that is gone, e.g. after
``kill -9``). A fixed name whose holder is provably alive, or that is seen renewing,
stops the worker at start-up with :class:`~streamflow.errors.ConsumerNameInUse`; a
holder that cannot be judged (another machine, another container) and does not renew
is waited out until its lease expires (at most ``ttl``).

**When renewal fails** (server down, network cut) the worker keeps working - nothing
can run against an unreachable server anyway, and nobody who cannot reach it can take
the name either. It logs ``consumer_lease_renew_failed`` (warning) at the first
failure and ``consumer_lease_expired`` (error) once the lease may have run out; when
the server answers again it renews the lease if the name is still ours or free
(``consumer_lease_recovered``). If another process took the name meanwhile (it could
reach the server while we could not, or we were frozen longer than ``ttl``), that
process is now the legitimate holder: it started under the name and took its pending
entries, ours in flight included. Carrying on would make two live processes one
consumer - exactly what the lease exists to prevent - so the worker logs
``consumer_lease_lost`` (error) and stops gracefully: what runs finishes and is
acked within ``grace_period``, and :meth:`Worker.serve` then raises
``ConsumerNameInUse`` (``streamflow run`` exits non-zero) so a supervisor starts it
again under a free name. Renaming in flight is not attempted: every part of a
consumer owns entries under its name.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from .. import scripts
from ..config import Settings
from ..connection import server_time_ms
from ..errors import ConsumerNameInUse
from ..keys import consumer_leases_key, host_label, slot_consumer_name, slot_of
from ..name_lease import Holder, encode_meta, judge, live_tokens, parse_holder
from ..spec import HandlerSpec

__all__ = ["LEASE_TTL", "MAX_SLOTS", "Identity", "pending_by_consumer"]

#: Seconds a consumer-name lease lives without renewal (renewed every third of it).
LEASE_TTL = 15.0

#: Default names use slots 0 .. MAX_SLOTS - 1 on one host.
MAX_SLOTS = 1000


async def pending_by_consumer(client: Any, stream: str, group: str) -> dict[str, int]:
    """Consumer name -> pending entries in ``group`` (empty if the stream or group is missing)."""
    try:
        rows = await client.execute_command("XINFO", "CONSUMERS", stream, group)
    except ResponseError:
        return {}
    out: dict[str, int] = {}
    for row in rows or []:
        info = dict(zip(row[::2], row[1::2], strict=False))
        name = info.get(b"name", b"")
        out[name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)] = int(
            info.get(b"pending", 0))
    return out


class Identity:
    """The consumer name of one worker and its leases in every group the worker consumes."""

    def __init__(
        self, client: Any, handlers: Sequence[HandlerSpec], settings: Settings, *,
        ttl: float = LEASE_TTL, log: Any,
    ) -> None:
        self.client = client  # the worker's client
        self.settings = settings  # consumer_name, worker_slot, reclaim_interval
        self.ttl_ms = max(int(ttl * 1000), 300)
        self.log = log
        self.host = host_label()
        self.token = secrets.token_hex(8)  # this holder's, in every lease it takes
        self.name = fixed_name(settings, self.host) or slot_consumer_name(self.host, 0)
        self.held = False  # True between a successful acquire() and release()
        self.lost: Holder | None = None  # who took the name, once keep() found it taken
        # One lease per (stream, group), with the holder JSON of the handler serving it.
        pairs: dict[tuple[str, str], str] = {}
        for spec in handlers:
            for stream in spec.streams:
                pairs.setdefault(
                    (stream, spec.group), encode_meta(spec.retry, settings.reclaim_interval))
        self.pairs = sorted(pairs)  # same order in every process: contention ends early
        self._meta = {consumer_leases_key(s, g): meta for (s, g), meta in pairs.items()}
        self.keys = sorted(self._meta)

    # -- taking ---------------------------------------------------------------------------

    async def acquire(self, stopping: anyio.Event) -> str | None:
        """Take the leases of this worker's name (choosing a slot by default); return the name.

        Returns None when ``stopping`` is set while waiting for a fixed name.
        """
        # This holder is alive from its first write on: another worker of this process
        # that meets one of its half-taken leases must not judge it dead and replace it.
        live_tokens().add(self.token)
        try:
            name = await self._acquire(stopping)
        except BaseException:
            live_tokens().discard(self.token)
            raise
        if name is None:
            live_tokens().discard(self.token)
        return name

    async def _acquire(self, stopping: anyio.Event) -> str | None:
        fixed = fixed_name(self.settings, self.host)
        if fixed is not None:
            ok = await self._take_fixed(fixed, stopping)
            return fixed if ok else None
        for slot in await self._candidates():
            name = slot_consumer_name(self.host, slot)
            if await self._try(name) is None:
                return self._won(name)
        raise ConsumerNameInUse(
            f"no free consumer slot on host {self.host!r} among 0-{MAX_SLOTS - 1}: "
            "every name is leased by a live process")

    async def _candidates(self) -> Iterable[int]:
        """Slots to try: free ones whose consumer left pending entries first, then 0, 1, ..."""
        preferred: set[int] = set()
        for stream, group in self.pairs:
            for consumer, pending in (await pending_by_consumer(self.client, stream, group)).items():
                slot = slot_of(consumer, self.host)
                if pending and slot is not None and slot < MAX_SLOTS:
                    preferred.add(slot)
        ordered = sorted(preferred)
        rest = (s for s in range(MAX_SLOTS) if s not in preferred)
        return itertools.chain(ordered, rest)

    async def _take_fixed(self, name: str, stopping: anyio.Event) -> bool:
        """Take a fixed name, waiting out a holder that is neither provably alive nor renewing."""
        seen: Holder | None = None
        while True:
            holder = await self._try(name)
            if holder is None:
                self._won(name)
                return True
            renewed = seen is not None and seen.token == holder.token \
                and holder.expires_ms > seen.expires_ms
            if judge(holder) == "alive" or renewed:
                raise ConsumerNameInUse(
                    f"consumer name {name!r} is in use: another live process holds its lease "
                    f"({holder.describe()}); stop that process or give this worker another "
                    f"name ({_how_to_rename(self.settings)})")
            if seen is None or seen.token != holder.token:
                self.log.warning(
                    "consumer_name_held", consumer=name, holder=holder.describe(),
                    hint="waiting to see whether the holder renews its lease (then this "
                         "worker stops) or lets it expire (then this worker takes the name)")
                seen = holder
            with anyio.move_on_after(self.ttl_ms / 10_000):
                await stopping.wait()
            if stopping.is_set():
                return False

    async def _try(self, name: str) -> Holder | None:
        """Take ``name`` in every lease hash, in order; None on success, else the holder that
        refused (the leases taken before it are given back).

        A stored lease is replaced (compare-and-swap on its exact value) when its holder
        is provably dead, or when it expired and its holder is not provably alive (a
        live process of this machine that could not renew keeps its name).
        """
        taken: list[str] = []
        for key in self.keys:
            holder, now_ms = await self._take_one(key, name, b"")
            if holder is not None:
                verdict = judge(holder)
                if verdict == "dead" or (holder.expires_ms <= now_ms and verdict != "alive"):
                    self.log.info("consumer_name_taken_over", consumer=name,
                                  holder=holder.describe(),
                                  why="holder gone" if verdict == "dead" else "lease expired")
                    holder, now_ms = await self._take_one(key, name, holder.raw)
            if holder is not None:
                await self._release_keys(name, taken)
                return holder
            taken.append(key)
        return None

    async def _take_one(self, key: str, name: str, replace: bytes) -> tuple[Holder | None, int]:
        """NAME_TAKE on one hash: (None, server ms) when taken, else (the holder, server ms).

        A server out of memory refuses the HSET (a worker started then must still be able to
        drain the backlog: reading and acking need no memory). The lease is then only read:
        a name someone else holds stays theirs; a free one is used without a stored lease,
        logged, and stored by the first renewal once the server has room again.
        """
        try:
            reply = await self.client.eval(
                scripts.NAME_TAKE, 1, key, name, self.token, self._meta[key], self.ttl_ms,
                replace)
        except OutOfMemoryError as exc:
            return await self._take_one_read_only(key, name, exc)
        now_ms = int(reply[1])
        if int(reply[0]) == 1:
            return None, now_ms
        return _holder_of(reply[2]), now_ms

    async def _take_one_read_only(
        self, key: str, name: str, exc: BaseException
    ) -> tuple[Holder | None, int]:
        cur = await self.client.execute_command("HGET", key, name)
        now_ms = await server_time_ms(self.client)
        if cur and (holder := _holder_of(cur)).token != self.token:
            return holder, now_ms
        self.log.warning("consumer_lease_deferred", consumer=name, lease=key, error=str(exc),
                         hint="the server is out of memory: running under this free name "
                              "without a stored lease until the server has room again")
        return None, now_ms

    def _won(self, name: str) -> str:
        self.name = name
        self.held = True
        live_tokens().add(self.token)
        return name

    # -- keeping --------------------------------------------------------------------------

    async def keep(self, on_lost: Callable[[str], None]) -> None:
        """Renew the leases every ``ttl / 3`` until cancelled; see the module docstring."""
        every = self.ttl_ms / 3000
        last_ok = anyio.current_time()
        failing = expired = False
        while True:
            await anyio.sleep(every)
            try:
                with anyio.fail_after(every):
                    states, holder = await self._renew()
            except (RedisError, OSError, TimeoutError) as exc:
                down = anyio.current_time() - last_ok
                if not failing:
                    self.log.warning("consumer_lease_renew_failed", consumer=self.name,
                                     error=str(exc) or type(exc).__name__)
                    failing = True
                if not expired and down * 1000 >= self.ttl_ms:
                    self.log.error(
                        "consumer_lease_expired", consumer=self.name, unrenewed_s=round(down, 1),
                        hint="another process may start under this name meanwhile; when the "
                             "server answers, this worker renews the lease if the name is "
                             "still its own or free, and stops if another process took it")
                    expired = True
                continue
            if holder is not None:
                self.lost = holder
                self.held = False
                live_tokens().discard(self.token)
                self.log.error(
                    "consumer_lease_lost", consumer=self.name, holder=holder.describe(),
                    hint="another process took this consumer name while the lease could "
                         "not be renewed; stopping so that two live processes never share it")
                on_lost("consumer_lease_lost")
                return
            if failing or any(s != 1 for s in states):
                self.log.warning("consumer_lease_recovered", consumer=self.name,
                                 unrenewed_s=round(anyio.current_time() - last_ok, 1),
                                 retaken=sum(1 for s in states if s == 2))
            last_ok = anyio.current_time()
            failing = expired = False

    async def _renew(self) -> tuple[list[int], Holder | None]:
        """One renewal of every lease: the states NAME_RENEW returned, and who took the name."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys:
            pipe.eval(scripts.NAME_RENEW, 1, key, self.name, self.token, self._meta[key],
                      self.ttl_ms)
        replies = await pipe.execute()
        states = [int(r[0]) for r in replies]
        for r in replies:
            if int(r[0]) == 0:
                return states, _holder_of(r[2])
        return states, None

    # -- giving back ----------------------------------------------------------------------

    async def release(self) -> None:
        """Delete the leases if still ours (a clean shutdown); errors are logged, not raised."""
        if not self.held:
            return
        self.held = False
        live_tokens().discard(self.token)
        try:
            with anyio.fail_after(self.settings.socket_timeout):
                await self._release_keys(self.name, self.keys)
        except (RedisError, OSError, TimeoutError) as exc:
            self.log.warning("consumer_lease_release_failed", consumer=self.name,
                             error=str(exc) or type(exc).__name__,
                             hint=f"the lease expires by itself within {self.ttl_ms / 1000:g}s")

    async def _release_keys(self, name: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.eval(scripts.NAME_RELEASE, 1, key, name, self.token)
        await pipe.execute()


def _holder_of(value: Any) -> Holder:
    """The holder a stored lease value names; a value that is no lease at all counts as one
    that expired long ago (its token matches nobody's)."""
    return parse_holder(value) or Holder(bytes(value), 0, "?", {})


def fixed_name(settings: Settings, host: str) -> str | None:
    """The name ``settings`` fix (``consumer_name``, else ``<host>-<worker_slot>``), if any."""
    if settings.consumer_name:
        return settings.consumer_name
    if settings.worker_slot is not None:
        return slot_consumer_name(host, settings.worker_slot)
    return None


def _how_to_rename(settings: Settings) -> str:
    if settings.consumer_name:
        return "--consumer-name / STREAMFLOW_CONSUMER_NAME"
    return "STREAMFLOW_WORKER_SLOT"

