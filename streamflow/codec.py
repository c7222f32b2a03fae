"""How payloads are laid out in stream entries, and how raw replies are decoded.

Layout written by :meth:`streamflow.App.publish`: one field, ``sf:json``, whose value
is the UTF-8 JSON text of the payload::

    XADD orders * sf:json '{"order_id": 7}'

Any other entry (for example ``XADD tasks * task_type calculate_square number 4``
from a plain redis-py producer) is a *raw* entry: its payload is its field map.
No pickle is used anywhere; payloads are JSON or raw strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import PayloadError, PayloadTooLarge

__all__ = [
    "JSON_FIELD",
    "pack_command",
    "decode_fields",
    "encode_fields",
    "encode_json",
    "loads",
    "loads_stdlib",
]

#: The field holding a JSON payload written by ``App.publish``.
JSON_FIELD = "sf:json"
#: Field holding an entry's key when ``publish(..., key=...)`` was given one (it picks a
#: partitioned stream's partition).
KEY_FIELD = "sf:key"
_JSON_FIELD_B = JSON_FIELD.encode()

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_raw_decode = json.JSONDecoder().raw_decode

_fast_loads: Any
try:  # the optional extra ``streamflow[orjson]``: several times faster decoding
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on what is installed
    _fast_loads = None

#: Which decoder :func:`loads` tries first: ``"orjson"`` when installed, else ``"json"``.
DECODER = "json" if _fast_loads is None else "orjson"

# orjson turns an integer beyond 64 bits into a float, silently; such an integer has 19
# or more digits in a row, which this finds with two C-speed calls (translate + find).
_DIGITS_AS_ZERO = bytes(48 if 48 <= i <= 57 else 120 for i in range(256))
_LONG_DIGIT_RUN = b"0" * 19


def loads(data: bytes) -> Any:
    """Decode UTF-8 JSON text to exactly what ``json.loads`` returns, as fast as possible.

    With orjson installed it decodes first, unless the text holds a run of 19 or more
    digits (orjson would make a float of an integer that long). Whatever orjson refuses
    (NaN and Infinity, lone surrogate escapes, invalid input) is decoded again by the
    standard library, which accepts the texts ``json.loads`` accepts and raises its own
    error for the rest. The result therefore never depends on whether the extra is
    installed. Raises ``ValueError`` (``JSONDecodeError`` or ``UnicodeDecodeError``)
    when invalid.
    """
    if _fast_loads is not None and data.translate(_DIGITS_AS_ZERO).find(_LONG_DIGIT_RUN) < 0:
        try:
            return _fast_loads(data)
        except ValueError:
            pass
    return loads_stdlib(data)


def loads_stdlib(data: bytes) -> Any:
    """:func:`loads` with the standard library only (``json.loads`` minus its encoding sniffing)."""
    text = data.decode()
    try:
        value, end = _raw_decode(text)
    except ValueError:
        return json.loads(text)  # leading whitespace, or a real error with its message
    if end != len(text):
        return json.loads(text)  # trailing whitespace is fine, anything else raises
    return value


def encode_json(payload: Any, max_bytes: int) -> bytes:
    """Encode ``payload`` as compact UTF-8 JSON, refusing more than ``max_bytes``."""
    try:
        data = _dumps(payload).encode()
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"payload is not JSON-serialisable: {exc}") from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"payload is {len(data)} bytes, more than max_payload_bytes={max_bytes}"
        )
    return data


def encode_fields(fields: Mapping[str, Any], max_bytes: int) -> dict[str, bytes | str]:
    """Check a raw field map (str keys; str, bytes, int or float values) for size and types."""
    if not fields:
        raise PayloadError("a stream entry needs at least one field")
    out: dict[str, bytes | str] = {}
    size = 0
    for key, value in fields.items():
        if not isinstance(key, str):
            raise PayloadError(f"field names must be str, got {type(key).__name__}")
        if isinstance(value, bytes | str):
            item: bytes | str = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            item = str(value)
        else:
            raise PayloadError(
                f"field {key!r} has a {type(value).__name__} value; use str, bytes, int or float"
            )
        size += len(key) + len(item)
        out[key] = item
    if size > max_bytes:
        raise PayloadTooLarge(f"entry is {size} bytes, more than max_payload_bytes={max_bytes}")
    return out


def decode_fields(raw: list[bytes] | None) -> dict[str, str]:
    """Decode a flat ``[field, value, ...]`` reply into a ``str`` map (invalid UTF-8 is replaced)."""
    if not raw:
        return {}
    it = iter(raw)
    return {
        k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in zip(it, it, strict=True)
    }


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"cannot send a {type(value).__name__} to Redis")


def pack_command(args: list[Any] | tuple[Any, ...]) -> bytes:
    """Encode one command in RESP (what redis-py does, without its per-argument overhead)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for value in args:
        data = value if type(value) is bytes else _arg(value)
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)
