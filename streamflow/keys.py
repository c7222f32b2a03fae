"""Names streamflow gives to things in Redis, and stream-id arithmetic: written once, here.

Everything that builds a key or a consumer name, or compares entry ids, imports it
from this module (the runtime, the dead-letter tools, ``info``, the permission check).
"""

from __future__ import annotations

__all__ = [
    "DLQ_SUFFIX",
    "RETRY_CONSUMER",
    "REPLAY_INFIX",
    "dead_letter_stream",
    "id_ms",
    "id_successor",
    "parse_id",
    "replay_stream",
    "replayed_from",
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
