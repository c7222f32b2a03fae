"""Consumer-name leases: the stored value, who holds a name, and whether that holder lives.

A worker holds a lease on its consumer name in every group it consumes, so that two
live processes never read as one consumer (see :mod:`streamflow.runtime.identity` for
taking, renewing and releasing). The leases of one stream and group are the fields of
the hash :func:`streamflow.keys.consumer_leases_key`; a field's value is::

    <expires, server ms>:<token>:<holder JSON>

The token is random per process and lease holder (a :class:`~streamflow.Worker`).
The holder JSON says who holds the name (host, pid, and what identifies the process
on its machine) and how the handler of that group retries (``retry``,
``reclaim_interval``), so that ``streamflow info`` can tell live consumers from
stopped ones and when a parked retry is due, without the application's code.

:func:`judge` decides whether a holder is alive, dead or unknown as seen from this
process. A holder is *provably dead* only on Linux, from the same boot
(``/proc/sys/kernel/random/boot_id``) and the same pid namespace, when its pid is gone
or now belongs to a process started at another time; *provably alive* when that pid
still runs with the recorded start time. Anything else (another machine or container,
no ``/proc``) is unknown: only the lease's expiry can tell.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Literal

from .keys import consumer_leases_key
from .policies import Retry

__all__ = [
    "THIS_PROCESS",
    "Holder",
    "ProcessFacts",
    "encode_meta",
    "holders_at",
    "holders_of",
    "judge",
    "live_tokens",
    "parse_holder",
    "read_holders",
]

Liveness = Literal["alive", "dead", "unknown"]


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot (``/proc/<pid>/stat``); None
    when there is no such process, or only its corpse (a zombie not reaped yet)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat or ")" not in stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    try:
        if fields[0] in ("Z", "X"):  # field 3, the state: zombie or dead
            return None
        return int(fields[19])  # field 22
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessFacts:
    """What identifies a process on its machine (None where the platform cannot tell)."""

    host: str
    pid: int
    boot: str | None  # the kernel's boot id: one per machine and boot
    pidns: str | None  # the pid namespace: pids only compare within one
    start: int | None  # start time in ticks after boot: pids are reused, this is not

    @classmethod
    def current(cls) -> ProcessFacts:
        """This process."""
        try:
            pidns: str | None = os.readlink("/proc/self/ns/pid")
        except OSError:
            pidns = None
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _read("/proc/sys/kernel/random/boot_id"),
                   pidns, _start_ticks(pid))


#: This process, read once at import (a fork re-reads it: see :func:`_me`).
THIS_PROCESS = ProcessFacts.current()

#: Tokens of the leases held by live holders in this process (added when taken,
#: removed when released or lost): a holder recorded with this process's pid and start
#: time whose token is not here belonged to a Worker of this process that is gone.
_LIVE: set[str] = set()


def live_tokens() -> set[str]:
    """The set of tokens this process's live lease holders have (mutable, shared)."""
    return _LIVE


def _me() -> ProcessFacts:
    global THIS_PROCESS
    if THIS_PROCESS.pid != os.getpid():  # forked since import
        THIS_PROCESS = ProcessFacts.current()
        _LIVE.clear()
    return THIS_PROCESS


def encode_meta(retry: Retry | None, reclaim_interval: float | None) -> str:
    """The holder JSON of this process for a group whose handler retries by ``retry``."""
    me = _me()
    doc: dict[str, Any] = {"host": me.host, "pid": me.pid, "boot": me.boot,
                           "pidns": me.pidns, "start": me.start}
    if retry is not None:
        doc["retry"] = {"max_attempts": retry.max_attempts, "backoff": retry.backoff,
                        "max_backoff": retry.max_backoff, "jitter": retry.jitter}
    if reclaim_interval is not None:
        doc["reclaim_interval"] = reclaim_interval
    return json.dumps(doc, separators=(",", ":"))


@dataclass(frozen=True)
class Holder:
    """One lease as stored: when it expires (server ms), whose token, and the holder JSON."""

    raw: bytes  # the stored value, exactly (compare-and-swap of a dead holder uses it)
    expires_ms: int
    token: str
    meta: dict[str, Any]

    @property
    def pid(self) -> int | None:
        """The holder's pid, if recorded."""
        pid = self.meta.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def host(self) -> str:
        """The holder's host name, if recorded."""
        return str(self.meta.get("host") or "?")

    @property
    def retry(self) -> Retry | None:
        """The retry policy of the holder's handler for this group, if it published one."""
        doc = self.meta.get("retry")
        if not isinstance(doc, dict):
            return None
        try:
            return Retry(**{k: doc[k] for k in ("max_attempts", "backoff", "max_backoff", "jitter")})
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def reclaim_interval(self) -> float | None:
        """Seconds between the holder's reclaim passes, if it published them."""
        value = self.meta.get("reclaim_interval")
        return float(value) if isinstance(value, int | float) else None

    def describe(self) -> str:
        """``pid 123 on host-a``."""
        return f"pid {self.pid if self.pid is not None else '?'} on {self.host}"


def parse_holder(raw: bytes | str) -> Holder | None:
    """A stored lease value as a :class:`Holder`; None when it is not one."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    parts = data.split(b":", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    try:
        meta = json.loads(parts[2])
    except ValueError:
        meta = {}
    return Holder(data, int(parts[0]), parts[1].decode("ascii", "replace"),
                  meta if isinstance(meta, dict) else {})


def judge(holder: Holder) -> Liveness:
    """Whether ``holder``'s process is alive, dead, or cannot be told from here."""
    me = _me()
    meta = holder.meta
    if me.boot is None or me.pidns is None or meta.get("boot") != me.boot \
            or meta.get("pidns") != me.pidns or holder.pid is None:
        return "unknown"
    if holder.pid == me.pid and meta.get("start") == me.start:
        return "alive" if holder.token in _LIVE else "dead"
    start = _start_ticks(holder.pid)
    if start is None or start != meta.get("start"):
        return "dead"
    return "alive"


async def read_holders(client: Any, stream: str, group: str) -> dict[str, Holder]:
    """Every lease stored for ``group`` on ``stream`` (expired ones included), by name."""
    return await holders_at(client, consumer_leases_key(stream, group))


async def holders_at(client: Any, key: str | bytes) -> dict[str, Holder]:
    """Every lease stored in the lease hash ``key``, by consumer name."""
    return holders_of(await client.execute_command("HGETALL", key))


def holders_of(raw: Any) -> dict[str, Holder]:
    """The leases in an ``HGETALL`` reply of a lease hash (e.g. a pipelined one), by name."""
    if isinstance(raw, dict):
        items = list(raw.items())
    else:
        items = [(raw[i], raw[i + 1]) for i in range(0, len(raw or []) - 1, 2)]
    out: dict[str, Holder] = {}
    for name, value in items:
        holder = parse_holder(value)
        if holder is not None:
            out[name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)] = holder
    return out
