"""Message: one stream entry as a handler sees it, decoded lazily."""

from __future__ import annotations

from typing import Any

from .codec import JSON_FIELD, KEY_FIELD, decode_fields
from .codec import loads as _loads
from .errors import PayloadError, PayloadTooLarge

__all__ = ["Message"]

_UNSET: Any = object()
_JSON_FIELD = JSON_FIELD.encode()
_KEY_FIELD = KEY_FIELD.encode()


class Message:
    """One entry of a Redis stream, delivered to a handler of a consumer group.

    Fields are decoded only when a handler asks for them, so a handler that
    reads nothing costs nothing. ``payload`` raises :class:`~streamflow.PayloadError`
    for an entry written by ``App.publish`` whose JSON is invalid; the worker then
    dead-letters the message instead of retrying it.
    """

    __slots__ = (
        "_fields", "_id", "_payload", "_raw", "attempt", "group", "key", "max_bytes", "stream",
    )

    def __init__(
        self,
        raw_id: bytes,
        raw_fields: list[bytes] | None,
        stream: str,
        group: str,
        attempt: int = 1,
        max_bytes: int = 1 << 20,
        key: str | None = None,
    ) -> None:
        self._id = raw_id  # entry id exactly as Redis sent it (used for XACK)
        self._raw = raw_fields  # flat [field, value, ...] list; None if the entry was deleted
        self.stream = stream  # stream the entry belongs to (for a replayed entry: the original)
        self.key = key or stream  # the key it was read from (a replay stream for a replayed entry)
        self.group = group  # consumer group it was delivered to
        self.attempt = attempt  # delivery number: 1 on first delivery, counts up on redelivery
        self.max_bytes = max_bytes  # payload size limit enforced on decode
        self._fields: dict[str, str] | None = None  # cache of decoded fields
        self._payload: Any = _UNSET  # cache of the decoded payload

    @property
    def id(self) -> str:
        """The entry id, e.g. ``"1700000000000-0"``."""
        return self._id.decode()

    @property
    def raw_id(self) -> bytes:
        """The entry id as bytes, as Redis returned it."""
        return self._id

    @property
    def raw_fields(self) -> list[bytes] | None:
        """The undecoded ``[field, value, ...]`` list, or None for a deleted entry."""
        return self._raw

    @property
    def fields(self) -> dict[str, str]:
        """The entry's field map decoded to ``str`` (always the raw map, whatever the producer)."""
        if self._fields is None:
            raw = self._raw
            if raw is not None:
                size = sum(map(len, raw))
                if size > self.max_bytes:
                    raise PayloadTooLarge(
                        f"entry is {size} bytes, more than max_payload_bytes={self.max_bytes}"
                    )
            self._fields = decode_fields(raw)
        return self._fields

    @property
    def payload(self) -> Any:
        """The decoded JSON for entries written by ``App.publish``, else the field map."""
        payload = self._payload
        if payload is _UNSET:
            raw = self._raw
            if raw is not None and raw and raw[0] == _JSON_FIELD and (
                    len(raw) == 2 or (len(raw) == 4 and raw[2] == _KEY_FIELD)):
                data = raw[1]
                if len(data) > self.max_bytes:
                    raise PayloadTooLarge(
                        f"payload is {len(data)} bytes, more than max_payload_bytes={self.max_bytes}"
                    )
                try:
                    payload = _loads(data)
                except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                    raise PayloadError(f"invalid JSON payload: {exc}") from exc
            else:
                payload = self.fields
            self._payload = payload
        return payload

    @property
    def partition_key(self) -> str | None:
        """The ``key`` the entry was published with (its ``sf:key`` field), else None."""
        raw = self._raw
        if raw is not None:
            for i in range(0, len(raw) - 1, 2):
                if raw[i] == _KEY_FIELD:
                    value = raw[i + 1]
                    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return None

    @property
    def replayed(self) -> bool:
        """True when the entry was re-published from the dead-letter stream (``dlq replay``)."""
        return self.key != self.stream

    def __repr__(self) -> str:
        return (
            f"<Message stream={self.stream!r} group={self.group!r} id={self.id!r} "
            f"attempt={self.attempt}>"
        )
