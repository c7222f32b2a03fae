"""Building a :class:`~streamflow.Message` in a test, to call a handler directly."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping
from typing import Any

from ..codec import JSON_FIELD, encode_fields, encode_json
from ..message import Message

__all__ = ["make_message"]

_UNSET: Any = object()
_ids = itertools.count(1)


def make_message(
    payload: Any = _UNSET,
    *,
    fields: Mapping[str, Any] | None = None,
    stream: str = "stream",
    group: str = "group",
    id: str | None = None,  # the name Message uses for it
    attempt: int = 1,
    max_payload_bytes: int = 1 << 20,
) -> Message:
    """A message as a handler receives it, without a server::

        await bill(make_message({"order_id": 7}, stream="orders"))
        await square(make_message(fields={"task_type": "calculate_square", "number": 4}))

    ``payload`` is laid out as ``App.publish`` writes it (one field, ``sf:json``, holding
    the JSON text), so ``msg.payload`` gives it back decoded; ``fields`` is a raw field
    map as another producer's ``XADD`` writes it (values str, bytes, int or float), which
    ``msg.fields`` and ``msg.payload`` give back as ``str``. Give one of the two.
    ``attempt`` is the delivery number (``> 1``: a retry); ``id`` defaults to a new
    ``"<n>-0"`` per call. ``max_payload_bytes`` is the limit the worker would apply when
    the handler decodes (a bigger payload raises :class:`~streamflow.PayloadTooLarge`).
    """
    if (payload is _UNSET) == (fields is None):
        raise TypeError("make_message() takes a payload or fields=..., not both or neither")
    if fields is None:
        raw = [JSON_FIELD.encode(), encode_json(payload, sys.maxsize)]
    else:
        raw = []
        for key, value in encode_fields(fields, sys.maxsize).items():
            raw += [key.encode(), value if isinstance(value, bytes) else value.encode()]
    entry_id = id if id is not None else f"{next(_ids)}-0"
    return Message(entry_id.encode(), raw, stream, group, attempt, max_payload_bytes)
