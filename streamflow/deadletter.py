"""Dead-letter stream: record layout, moving an entry there atomically, listing and replay.

A dead-letter record holds metadata under ``dlq:`` keys and the original fields
under ``f:<name>`` keys, byte for byte::

    dlq:stream orders  dlq:id 1700000000000-0  dlq:group billing  dlq:consumer host-1-ab12
    dlq:attempts 5  dlq:error_type ValueError  dlq:error "bad order"  dlq:failed_at 1700000000123
    dlq:handler myservice.app.bill  dlq:traceback "..."  f:sf:json '{"order_id": 7}'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .codec import decode_fields
from .connection import redact_url

__all__ = ["DeadLetter", "build_record", "parse_record"]

META = "dlq:"
ORIGINAL = "f:"
_MAX_TEXT = 2000


def build_record(
    *,
    stream: str,
    raw_id: bytes,
    group: str,
    consumer: str,
    attempts: int,
    error_type: str,
    error: str,
    handler: str,
    raw_fields: list[bytes] | None,
    traceback: str = "",
) -> list[Any]:
    """Flat field/value list for the dead-letter entry of one failed message."""
    error = redact_url(error)
    traceback = redact_url(traceback)
    out: list[Any] = [
        "dlq:stream", stream,
        "dlq:id", raw_id,
        "dlq:group", group,
        "dlq:consumer", consumer,
        "dlq:attempts", attempts,
        "dlq:error_type", error_type,
        "dlq:error", error[:_MAX_TEXT],
        "dlq:failed_at", int(time.time() * 1000),
        "dlq:handler", handler,
    ]
    if traceback:
        out += ["dlq:traceback", traceback[-_MAX_TEXT:]]
    raw = raw_fields or []
    for i in range(0, len(raw) - 1, 2):
        out += [ORIGINAL.encode() + raw[i], raw[i + 1]]
    return out


@dataclass
class DeadLetter:
    """One record of a dead-letter stream, decoded."""

    dlq_id: str
    stream: str
    id: str
    group: str
    consumer: str
    attempts: int
    error_type: str
    error: str
    failed_at_ms: int
    handler: str
    traceback: str
    original: list[bytes]  # flat [field, value, ...] exactly as first written

    @property
    def fields(self) -> dict[str, str]:
        """The original entry's fields decoded to str."""
        return decode_fields(self.original)


def parse_record(dlq_id: bytes, raw: list[bytes]) -> DeadLetter:
    """Decode a dead-letter entry read with XRANGE."""
    meta: dict[str, str] = {}
    original: list[bytes] = []
    for i in range(0, len(raw) - 1, 2):
        key, value = raw[i], raw[i + 1]
        if key.startswith(b"f:"):
            original += [key[2:], value]
        elif key.startswith(b"dlq:"):
            meta[key[4:].decode()] = value.decode("utf-8", "replace")
    return DeadLetter(
        dlq_id=dlq_id.decode(),
        stream=meta.get("stream", ""),
        id=meta.get("id", ""),
        group=meta.get("group", ""),
        consumer=meta.get("consumer", ""),
        attempts=int(meta.get("attempts", "0") or 0),
        error_type=meta.get("error_type", ""),
        error=meta.get("error", ""),
        failed_at_ms=int(meta.get("failed_at", "0") or 0),
        handler=meta.get("handler", ""),
        traceback=meta.get("traceback", ""),
        original=original,
    )
