"""Payload decoding gives exactly ``json.loads``' result, with or without orjson.

Pure functions, no server: ``codec.loads`` (orjson first when installed, the standard
library for whatever orjson refuses or would change) against ``json.loads`` as the
reference, on fixed edge cases and on generated documents (hypothesis, derandomized).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow import codec
from streamflow.codec import loads, loads_stdlib

DECODERS = [pytest.param(loads, id="loads"), pytest.param(loads_stdlib, id="stdlib")]


def _reference(data: bytes) -> Any:
    """What ``json.loads`` makes of UTF-8 bytes, or the exception type it raises."""
    try:
        return json.loads(data.decode())
    except ValueError as exc:
        return type(exc)


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (also tells -0.0 from 0.0, NaN from NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _check(decode: Any, data: bytes) -> None:
    expected = _reference(data)
    if isinstance(expected, type) and issubclass(expected, ValueError):
        with pytest.raises(ValueError):
            decode(data)
    else:
        assert _same(decode(data), expected), data


EDGE_CASES = [
    b'{"a":1,"a":2}',  # duplicate keys: the last wins
    b"NaN", b"[Infinity, -Infinity]",  # accepted by json.loads, refused by orjson
    b"1e400", b"-1e400", b"1e-400",  # out of range floats
    b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
    b"-9223372036854775809",  # orjson would return a float here
    b"18446744073709551615", b"18446744073709551616", b"99999999999999999999",
    b'{"id": 123456789012345678901234567890}',  # a long integer inside an object
    b'"12345678901234567890123"',  # a long digit run inside a string (stays a string)
    b"0.123456789012345678901234567", b"-0", b"-0.0", b"1E5", b"[1.0e5]",
    b'"\\ud800"', b'"\\udc00\\ud800"', b'{"\\ud800": 1}',  # lone surrogates
    b'"\\ud83d\\ude00"', b'"\xf0\x9f\x98\x80"',  # a surrogate pair; the same as UTF-8
    b" 1 ", b"\n[1]\t", b"\r\n{}",  # whitespace around the value
    b"", b" ", b"[1,]", b'{"a":1}x', b"{'a': 1}", b"[1] [2]",  # invalid documents
    b'"\xff"', b'"\xc3"',  # invalid UTF-8
    b'"\x01"', b'"a\nb"',  # control characters inside strings are invalid
    b'"\\u0000"', b"[true, false, null]", b"{}", b"[]", b'""',
]


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("data", EDGE_CASES, ids=repr)
def test_edge_cases_decode_as_json_loads_does(decode: Any, data: bytes) -> None:
    """Every edge case decodes to json.loads' value, or raises ValueError where it raises."""
    _check(decode, data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**30), max_value=10**30) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(value=JSON_VALUES, ensure_ascii=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_generated_documents_decode_as_json_loads_does(value: Any, ensure_ascii: bool,
                                                       indent: int | None) -> None:
    """Documents json.dumps writes (any value, escaped or not, indented or not) round-trip alike."""
    data = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent).encode("utf-8", "surrogatepass")
    for decode in (loads, loads_stdlib):
        _check(decode, data)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(data=st.binary(max_size=40) | st.text(alphabet='{}[]",:0123456789.eE-+ \\untrfalsN', max_size=40)
       .map(str.encode))
def test_arbitrary_bytes_decode_or_fail_as_json_loads_does(data: bytes) -> None:
    """Arbitrary bytes and near-JSON text: the same value, or ValueError where json.loads raises."""
    for decode in (loads, loads_stdlib):
        _check(decode, data)


def test_decoder_name_says_which_library_decodes_first() -> None:
    """codec.DECODER names orjson exactly when it is importable."""
    try:
        import orjson  # noqa: F401
    except ImportError:
        assert codec.DECODER == "json"
    else:
        assert codec.DECODER == "orjson"
