"""Least-privilege Redis ACLs: the commands each role needs, and a start-up permission check.

A worker needs exactly the commands in :data:`WORKER_COMMANDS` (plus
:data:`RETENTION_COMMANDS` when a handler has a ``retention=`` policy) on its streams,
their dead-letter streams and its consumer-name lease hashes (:func:`worker_keys`); a
producer needs :data:`PRODUCER_COMMANDS`; the ``streamflow info`` / ``dlq`` commands
need :data:`ADMIN_COMMANDS`. See
``docs/security.md`` for ready-made ``ACL SETUSER`` lines.

:func:`check_permissions` runs when a worker starts: it probes every command the worker
will use, against the worker's real keys, in one pipelined round trip. Redis checks
ACLs before it executes a command, so each probe is written so that it *fails
harmlessly* when permitted (an invalid id or argument, or a read) and fails with
``NOPERM`` when not. A missing permission therefore stops the worker at start-up
with one line naming the command and the key, instead of failing later on the first
retry or dead letter. ``ACL DRYRUN`` is not used: it needs admin rights. A job queue's
worker is also probed for what its job scripts, delayed jobs, queue registry and cancel
listener use (:func:`job_probes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .connection import redact_url
from .errors import PermissionDenied, ServerUnavailable
from .keys import (
    CANCEL_CHANNEL,
    JOBS_GROUP,
    QUEUES_KEY,
    consumer_leases_key,
    job_dependents_key,
    job_key,
    replay_stream,
    scheduled_key,
)

if TYPE_CHECKING:
    from .spec import HandlerSpec

__all__ = [
    "ADMIN_COMMANDS",
    "LEASE_COMMANDS",
    "PRODUCER_COMMANDS",
    "RETENTION_COMMANDS",
    "WORKER_COMMANDS",
    "PermissionDenied",
    "Probe",
    "acl_rules",
    "check_permissions",
    "job_probes",
    "worker_keys",
    "worker_probes",
]

#: Commands on the consumer-name lease hash ``streamflow:consumers:<stream>:<group>``
#: (:mod:`streamflow.runtime.identity`, mostly in Lua): take, renew, release, prune
#: expired fields, read the live names at start-up. Hash commands only: on the stream
#: keys the same ACL rule allows they fail (WRONGTYPE) instead of overwriting or
#: expiring the stream, as SET, DEL or PEXPIRE could.
LEASE_COMMANDS: tuple[str, ...] = ("hget", "hset", "hdel", "hgetall")

#: Commands a worker sends (directly or inside its Lua scripts, which run under the same
#: ACL user). ``xgroup|delconsumer`` is used by the script that prunes idle consumers.
WORKER_COMMANDS: tuple[str, ...] = (
    "ping",  # start-up check and connection health checks
    "xgroup|create",  # create the consumer group (MKSTREAM) at start and after NOGROUP
    "xreadgroup",  # read new entries
    "xack",  # acknowledge handled entries
    "xpending",  # own pending entries at start, retry and dead-consumer scans
    "xclaim",  # take over entries (own PEL, due retries, dead consumers; leases)
    "xrange",  # check whether unclaimable pending entries were deleted
    "xinfo|consumers",  # find idle consumers to prune
    "xinfo|groups",  # how much a new group has to read (logged); does a group exist (OOM)
    "xgroup|delconsumer",  # prune an idle consumer without pending entries (Lua)
    "xadd",  # write dead-letter records (Lua, on the dead-letter stream)
    "eval",  # the Lua scripts (retry parking, lease renewal, dead-lettering, pruning)
    "multi", "exec",  # dead-lettering an entry too wide for a script (MULTI XADD XACK EXEC)
    *LEASE_COMMANDS,
    "time",  # server time for the consumer-name lease's expiry (Lua)
)

#: Extra commands a worker needs when a handler has a ``retention=`` policy.
RETENTION_COMMANDS: tuple[str, ...] = ("xtrim", "xlen")

#: Commands ``App.publish`` / ``publish_fields`` / ``publish_many`` send.
PRODUCER_COMMANDS: tuple[str, ...] = ("ping", "xadd")

#: Commands ``streamflow info`` and ``streamflow dlq list|replay`` send.
ADMIN_COMMANDS: tuple[str, ...] = (
    "ping", "time", "info", "type", "scan",
    "xinfo|stream", "xinfo|groups", "xinfo|consumers", "xpending", "xlen",
    "xrange", "xrevrange",
    "eval", "xdel", "xadd",  # dlq replay: XDEL + XADD in one script
    "hgetall",  # consumer-name leases: live or stopped consumers, retry policies
)


def acl_rules(commands: Iterable[str], keys: Iterable[str]) -> list[str]:
    """``ACL SETUSER`` rules granting exactly ``commands`` on exactly ``keys``.

    Starts from nothing (``-@all``, no keys, no channels) so the user has no other
    right. Key names are literal patterns: streamflow names never contain the glob
    characters ``* ? [ ]`` (see :func:`streamflow.config.validate_name`).
    """
    rules = ["resetkeys", "resetchannels", "-@all"]
    rules += [f"+{c}" for c in dict.fromkeys(commands)]
    rules += [f"~{k}" for k in dict.fromkeys(keys)]
    return rules


def worker_keys(handlers: Iterable[HandlerSpec]) -> list[str]:
    """Every key a worker of ``handlers`` touches: each stream, its group's replay stream, its
    dead-letter stream and the consumer-name lease hash of each stream and group."""
    keys: dict[str, None] = {}
    leases: dict[str, None] = {}
    for spec in handlers:
        for stream in spec.streams:
            keys[stream] = None
            keys[replay_stream(stream, spec.group)] = None
            keys[spec.dead_letter_stream(stream)] = None
            leases[consumer_leases_key(stream, spec.group)] = None
    return [*keys, *leases]


@dataclass(frozen=True)
class Probe:
    """One harmless command that fails with NOPERM exactly when ``command`` on ``key`` is denied."""

    command: str  # as shown to the user, e.g. "XGROUP CREATE"
    key: str  # the key the permission is about ("" for keyless commands)
    args: tuple[Any, ...]  # the command actually sent


#: Asks the server whether the commands without a harmless form would be allowed:
#: XGROUP DELCONSUMER (it deletes), MULTI and EXEC (they would open a transaction on
#: the probing connection). Returns the labels of those denied. ``redis.acl_check_cmd``
#: exists since Redis 7.0; older servers skip these checks.
#: KEYS[1] stream, KEYS[2] dead-letter stream (as the dead-letter script declares them);
#: ARGV[1] group, ARGV[2] consumer.
_PROBE_SCRIPT = """
local denied = {}
if redis.acl_check_cmd == nil then return denied end
local function check(label, ...)
  local ok, allowed = pcall(redis.acl_check_cmd, ...)
  if ok and not allowed then denied[#denied + 1] = label end
end
check('XGROUP DELCONSUMER', 'XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
check('MULTI', 'MULTI')
check('EXEC', 'EXEC')
return denied
"""

#: Likewise for HDEL (it deletes) on the lease hash KEYS[1]. Declaring the key also
#: probes EVAL on it (the lease scripts run with it as their key).
_LEASE_PROBE_SCRIPT = """
local denied = {}
if redis.acl_check_cmd == nil then return denied end
local ok, allowed = pcall(redis.acl_check_cmd, 'HDEL', KEYS[1], 'streamflow-permission-probe')
if ok and not allowed then denied[#denied + 1] = 'HDEL' end
return denied
"""

_BAD_ID = "streamflow-permission-probe"  # not a stream id: commands stop before acting

#: Asks about the commands of the job scripts that have no harmless form, on the keys
#: they use them on: KEYS[1] stream, KEYS[2] a job hash (as FINISH declares them);
#: ARGV[1] scheduled set, ARGV[2] cancel channel. Returns ``command\nkey\nreason``
#: of each one denied.
_JOB_PROBE_SCRIPT = """
local denied = {}
if redis.acl_check_cmd == nil then return denied end
local h, z, ck = KEYS[2], ARGV[1], 'command or key not allowed'
local function check(label, key, why, ...)
  local ok, allowed = pcall(redis.acl_check_cmd, ...)
  if ok and not allowed then denied[#denied + 1] = label .. '\\n' .. key .. '\\n' .. why end
end
check('HDEL', h, ck, 'HDEL', h, 'f')
check('RPUSH', h .. ':done', ck, 'RPUSH', h .. ':done', 'x')
check('DEL', h .. ':done', ck, 'DEL', h .. ':done')
check('DEL', h .. ':dependents', ck, 'DEL', h .. ':dependents')
check('ZREM', z, ck, 'ZREM', z, 'x')
check('SUBSCRIBE', ARGV[2], 'command or channel not allowed', 'SUBSCRIBE', ARGV[2])
return denied
"""

_NO_SUCH_SCRIPT = "0" * 40  # EVALSHA of it: NOSCRIPT when allowed, nothing runs


def job_probes(stream: str, *, periodic: bool = False) -> list[Probe]:
    """Probes of what a worker of the job queue on ``stream`` does besides reading it.

    The job scripts (``FINISH``, ``FAIL``, ``PROMOTE`` by ``EVALSHA``, and ``ENQUEUE``
    for ``periodic`` tasks), each with the keys it declares; the commands they run on a
    job hash (the key ``streamflow:job:{tag}:<id>``: no job has that id), its ``:done``
    list and ``:dependents`` set, the scheduled set and the stream; ``HSET`` on the queue
    registry and ``SUBSCRIBE`` to the cancel channel. Refused before acting: ``HSET``
    with an odd argument count, ``HINCRBY`` and ``EXPIRE`` with a non-number, ``ZADD``
    with ``NX XX``, ``XADD`` with id ``0-0``, ``EVALSHA`` of no script; the others read,
    or are asked about (``_JOB_PROBE_SCRIPT``).
    """
    h, z = job_key(stream, "<id>"), scheduled_key(stream)
    probes = [
        Probe("XADD", stream, ("XADD", stream, "0-0", "probe", "")),
        Probe("EVAL", f"{stream}, {h}",
              ("EVAL", _JOB_PROBE_SCRIPT, 2, stream, h, z, CANCEL_CHANNEL)),
        Probe("EVALSHA", z, ("EVALSHA", _NO_SUCH_SCRIPT, 1, z)),
        Probe("EVAL", z, ("EVAL", "return 0", 1, z)),
        Probe("HGET", h, ("HGET", h, "status")),
        Probe("HMGET", h, ("HMGET", h, "status")),
        Probe("HSET", h, ("HSET", h, "status", _BAD_ID, "odd")),
        Probe("HINCRBY", h, ("HINCRBY", h, "deps_left", _BAD_ID)),
        Probe("EXPIRE", h, ("EXPIRE", h, _BAD_ID)),
        Probe("SMEMBERS", job_dependents_key(h), ("SMEMBERS", job_dependents_key(h))),
        Probe("ZADD", z, ("ZADD", z, "NX", "XX", 0, _BAD_ID)),
        Probe("ZRANGEBYSCORE", z, ("ZRANGEBYSCORE", z, "-inf", 0, "LIMIT", 0, 1)),
        Probe("ZRANGE", z, ("ZRANGE", z, 0, 0)),
        Probe("HSET", QUEUES_KEY, ("HSET", QUEUES_KEY, _BAD_ID, _BAD_ID, "odd")),
        Probe("TIME", "", ("TIME",)),
    ]
    if periodic:  # ENQUEUE declares the stream, the job hash and the scheduled set
        probes += [
            Probe("EVALSHA", f"{stream}, {h}, {z}", ("EVALSHA", _NO_SUCH_SCRIPT, 3, stream, h, z)),
            Probe("EVAL", f"{stream}, {h}, {z}", ("EVAL", "return 0", 3, stream, h, z)),
        ]
    return probes


def worker_probes(handlers: Iterable[HandlerSpec], consumer_name: str,
                  periodic: Iterable[str] = ()) -> list[Probe]:
    """The probes :func:`check_permissions` sends for a worker of ``handlers``.

    Each one is rejected before it changes anything: XGROUP CREATE, XREADGROUP and
    XACK get an invalid id, XCLAIM an invalid idle time, XADD the id ``0-0`` (refused
    before the key is created), XTRIM a negative MAXLEN; XPENDING, XRANGE, XINFO and
    XLEN only read. The script probe asks about XGROUP DELCONSUMER, MULTI and EXEC
    without running them. A job queue's stream (group ``streamflow:jobs``) adds
    :func:`job_probes`, with those of ``ENQUEUE`` when it is in ``periodic`` (the streams
    of the queues with periodic tasks).
    """
    periodic = set(periodic)
    probes: list[Probe] = [Probe("PING", "", ("PING",))]
    seen: set[tuple[str, str]] = set()
    for spec in handlers:
        group = spec.group
        for stream in spec.streams:
            if (stream, group) in seen:
                continue
            seen.add((stream, group))
            dlq = spec.dead_letter_stream(stream)
            probes.append(Probe("XADD", dlq, ("XADD", dlq, "0-0", "probe", "")))
            for key in (stream, replay_stream(stream, group)):
                probes += _read_probes(spec, key, dlq, group, consumer_name)
            lease = consumer_leases_key(stream, group)
            probes += [
                Probe("HGET", lease, ("HGET", lease, consumer_name)),
                Probe("HGETALL", lease, ("HGETALL", lease)),
                Probe("HSET", lease, ("HSET", lease, consumer_name, _BAD_ID, "odd")),
                Probe("EVAL", lease, ("EVAL", _LEASE_PROBE_SCRIPT, 1, lease)),
            ]
            if group == JOBS_GROUP:
                probes += job_probes(stream, periodic=stream in periodic)
    return probes


def _read_probes(
    spec: HandlerSpec, stream: str, dlq: str, group: str, consumer_name: str
) -> list[Probe]:
    """Probes of what a consumer does on one stream key it reads."""
    probes = [
        Probe("XGROUP CREATE", stream,
              ("XGROUP", "CREATE", stream, group, _BAD_ID, "MKSTREAM")),
        Probe("XREADGROUP", stream, ("XREADGROUP", "GROUP", group, consumer_name,
                                     "COUNT", 1, "STREAMS", stream, _BAD_ID)),
        Probe("XACK", stream, ("XACK", stream, group, _BAD_ID)),
        Probe("XPENDING", stream, ("XPENDING", stream, group, "-", "+", 1, consumer_name)),
        Probe("XCLAIM", stream, ("XCLAIM", stream, group, consumer_name, _BAD_ID, "0-1")),
        Probe("XRANGE", stream, ("XRANGE", stream, "+", "-", "COUNT", 1)),
        Probe("XINFO CONSUMERS", stream, ("XINFO", "CONSUMERS", stream, group)),
        Probe("XINFO GROUPS", stream, ("XINFO", "GROUPS", stream)),
        Probe("EVAL", f"{stream}, {dlq}",
              ("EVAL", _PROBE_SCRIPT, 2, stream, dlq, group, consumer_name)),
    ]
    if spec.retention is not None:
        probes += [
            Probe("XTRIM", stream, ("XTRIM", stream, "MAXLEN", -1)),
            Probe("XLEN", stream, ("XLEN", stream)),
        ]
    return probes


def _denied_reason(probe: Probe, reply: Any) -> str | None:
    """Why ``reply`` shows ``probe`` is not allowed, or None when it is allowed."""
    if isinstance(reply, NoPermissionError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("NOPERM")
    ):
        text = str(reply).lower()
        if "access" in text and "key" in text:
            return "key not allowed"
        return "command not allowed"
    if isinstance(reply, ResponseError) and "unknown command" in str(reply).lower():
        return "command disabled or renamed on the server"
    return None


async def check_permissions(
    client: Any, handlers: Sequence[HandlerSpec], consumer_name: str,
    periodic: Iterable[str] = (),
) -> None:
    """Raise :class:`PermissionDenied` unless the Redis user may run everything a worker needs.

    One pipelined round trip of harmless probes (see :func:`worker_probes`); on a
    server without ACLs, or with the default user, every probe passes. The error is one
    line naming each missing ``COMMAND on 'key'`` and the user. ``periodic``: the streams
    of the job queues with periodic tasks.
    """
    probes = worker_probes(handlers, consumer_name, periodic)
    pipe = client.pipeline(transaction=False)
    for probe in probes:
        pipe.execute_command(*probe.args)
    try:
        replies = await pipe.execute(raise_on_error=False)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        text = redact_url(str(exc)) or type(exc).__name__
        raise ServerUnavailable(f"lost Redis while checking permissions: {text}") from None
    missing: list[tuple[str, str, str]] = []
    for probe, reply in zip(probes, replies, strict=True):
        reason = _denied_reason(probe, reply)
        if reason is not None:
            missing.append((probe.command, probe.key, reason))
        elif probe.command == "EVAL" and isinstance(reply, list):
            for label in reply:
                command, _, rest = (label.decode() if isinstance(label, bytes) else str(label)
                                    ).partition("\n")
                key, _, why = rest.partition("\n")  # (job probes name their key and reason)
                if not rest:
                    key = "" if command in ("MULTI", "EXEC") else probe.key.split(", ")[0]
                missing.append((command, key, why or "command not allowed"))
    if not missing:
        return
    missing = list(dict.fromkeys(missing))
    pool = getattr(client, "connection_pool", None)  # a RedisCluster has none
    kwargs = pool.connection_kwargs if pool is not None else client.connection_kwargs
    user = kwargs.get("username") or "default"
    parts = [
        f"{command} on {key!r} ({reason})" if key else f"{command} ({reason})"
        for command, key, reason in missing
    ]
    raise PermissionDenied(
        f"the Redis user {user!r} lacks permissions this worker needs: {'; '.join(parts)} "
        "(see docs/security.md for the ACL rules of a worker)",
        [(command, key) for command, key, _ in missing],
    )
