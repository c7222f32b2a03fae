"""Names streamflow gives to things in Redis, and stream-id arithmetic: written once, here.

Everything that builds a key or a consumer name, or compares entry ids, imports it
from this module (the runtime, the dead-letter tools, ``info``, the permission check).
"""

from __future__ import annotations

import re
import socket

__all__ = [
    "CANCEL_CHANNEL",
    "CONSUMER_LEASES_PREFIX",
    "DLQ_SUFFIX",
    "JOBS_GROUP",
    "QUEUES_KEY",
    "RETRY_CONSUMER",
    "REPLAY_INFIX",
    "consumer_leases_key",
    "dead_letter_stream",
    "hash_tag",
    "host_label",
    "id_ms",
    "id_successor",
    "job_dependents_key",
    "job_done_key",
    "job_key",
    "job_key_prefix",
    "owner_key",
    "queue_stats_key",
    "queue_stream",
    "parse_id",
    "replay_stream",
    "replayed_from",
    "scheduled_key",
    "slot_consumer_name",
    "slot_of",
]

#: Pseudo-consumer of every group that holds failed entries while their retry backoff runs.
RETRY_CONSUMER = "streamflow:retry"

#: Suffix of a stream's default dead-letter stream: ``orders`` -> ``orders:dlq``.
DLQ_SUFFIX = ":dlq"


def dead_letter_stream(stream: str, template: str | None = None) -> str:
    """The dead-letter stream of ``stream``: ``<stream>:dlq``, or ``template`` with
    ``{stream}`` replaced by the stream's name."""
    if template is None:
        return stream + DLQ_SUFFIX
    return template.replace("{stream}", stream)


#: Infix of a group's replay stream: ``orders`` and group ``billing`` -> ``orders:replay:billing``.
REPLAY_INFIX = ":replay:"


def replay_stream(stream: str, group: str) -> str:
    """The stream ``dlq replay`` writes ``group``'s records of ``stream`` to.

    Only that group's consumers read it (they read it alongside ``stream``), so a replayed
    entry reaches the group whose handler failed it and no other group of the stream.
    """
    return f"{stream}{REPLAY_INFIX}{group}"


def replayed_from(key: str) -> tuple[str, str] | None:
    """``(stream, group)`` if ``key`` is a replay stream (see :func:`replay_stream`), else None."""
    stream, infix, group = key.rpartition(REPLAY_INFIX)
    if not infix or not stream or not group:
        return None
    return stream, group


#: Prefix of the hashes of consumer-name leases (see :mod:`streamflow.name_lease`).
CONSUMER_LEASES_PREFIX = "streamflow:consumers:"

_NOT_IN_HOST = re.compile(r"[^A-Za-z0-9_-]+")


def consumer_leases_key(stream: str, group: str) -> str:
    """The hash holding the consumer-name leases of ``group`` on ``stream``.

    One field per consumer name a live process holds: ``streamflow:consumers:orders:billing``.
    (``:`` may occur in names, so two (stream, group) pairs can share a hash, e.g.
    ``a:b``/``c`` and ``a``/``b:c``: they then only keep each other from using the same
    consumer name, never let two processes share one.)
    """
    return f"{CONSUMER_LEASES_PREFIX}{stream}:{group}"


def owner_key(stream: str, group: str) -> str:
    """Who owns ``stream`` (a partition) for ``group``'s ordered handler: a string key with
    a lease, ``streamflow:owner:orders:{p3}:billing`` (the stream's hash tag, its slot)."""
    return f"streamflow:owner:{stream}:{group}"


def host_label(hostname: str | None = None) -> str:
    """The first label of the host name, reduced to letters, digits, ``_`` and ``-``."""
    raw = (socket.gethostname() if hostname is None else hostname).split(".")[0]
    return _NOT_IN_HOST.sub("-", raw).strip("-")[:100] or "host"


def slot_consumer_name(host: str, slot: int) -> str:
    """The default consumer name of worker slot ``slot`` on ``host``: ``<host>-<slot>``."""
    return f"{host}-{slot}"


def slot_of(name: str, host: str) -> int | None:
    """The slot of ``name`` if it is a default name on ``host`` (``<host>-<n>``), else None."""
    prefix = host + "-"
    rest = name[len(prefix):]
    if name.startswith(prefix) and rest.isascii() and rest.isdigit() and rest == str(int(rest)):
        return int(rest)
    return None


def parse_id(raw: bytes | str) -> tuple[int, int]:
    """``b"1700-3"`` -> ``(1700, 3)``; ``"1700"`` -> ``(1700, 0)``."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def id_successor(raw: bytes | str) -> str:
    """The smallest stream id greater than ``raw``."""
    ms, seq = parse_id(raw)
    return f"{ms}-{seq + 1}"


def id_ms(raw: bytes | str) -> int:
    """The millisecond timestamp part of an entry id."""
    return parse_id(raw)[0]


# -- jobs -------------------------------------------------------------------------------
#
# A queue is a stream; every key a job script touches with it carries the stream's hash
# tag (the part between the first ``{`` and ``}``, or the whole name when it has none),
# so that on a Redis Cluster each script stays within the stream's slot.

#: The consumer group every worker of a queue reads the queue's stream with.
JOBS_GROUP = "streamflow:jobs"

#: Hash of the queues producers and workers declared: queue name -> stream.
QUEUES_KEY = "streamflow:queues"

#: Pub/sub channel on which ``Job.cancel`` names the running jobs to cancel.
CANCEL_CHANNEL = "streamflow:jobs:cancel"


def queue_stream(queue: str) -> str:
    """The stream of queue ``queue``: ``streamflow:queue:{default}`` (the name is its tag)."""
    return f"streamflow:queue:{{{queue}}}"


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: between the first ``{`` and the next ``}``
    when that is not empty, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def job_key_prefix(stream: str) -> str:
    """What every job hash of ``stream``'s queue starts with: ``streamflow:job:{tag}:``."""
    return f"streamflow:job:{{{hash_tag(stream)}}}:"


def job_key(stream: str, job_id: str) -> str:
    """The hash holding a job's state: ``streamflow:job:{default}:<id>``."""
    return job_key_prefix(stream) + job_id


def queue_stats_key(stream: str) -> str:
    """The hash of a queue's running totals (``succeeded``: jobs that finished with a result),
    ``streamflow:job:{default}:~stats`` (a job id never starts with ``~``)."""
    return job_key_prefix(stream) + "~stats"


def job_done_key(job_hash: str) -> str:
    """The list a finished job's status is pushed to while someone waits for it."""
    return job_hash + ":done"


def job_dependents_key(job_hash: str) -> str:
    """The set of the hashes of jobs waiting for this one (``depends_on``)."""
    return job_hash + ":dependents"


def scheduled_key(stream: str) -> str:
    """The sorted set of ``stream``'s delayed jobs (score: due time in ms)."""
    return f"streamflow:scheduled:{{{hash_tag(stream)}}}"
