"""The wire format of a job entry, and what turns a call into it and back.

A job is one stream entry on its queue's stream. Written by ``Task.enqueue`` (or by any
producer, in any language, with a plain XADD)::

    XADD streamflow:queue:{default} * sf:task count_words sf:job 3f2a... \\
         sf:args '["This is a test"]' sf:kwargs '{}'

``sf:task`` names the task (required); ``sf:job`` is the job id (optional: the entry id
when absent; a job without a stored state can still be looked up by that id once it
finished); ``sf:args`` a JSON array and ``sf:kwargs`` a JSON object (both optional).

A queue declared with ``task_field=`` also accepts entries in the style of hand-written
producers, e.g. ``XADD tasks * task_type calculate_square number 4``: the field named
``task_field`` names the task, every other field becomes a keyword argument - a string,
converted to ``int``, ``float`` or ``bool`` where the function's annotation says so.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..codec import encode_json, loads
from ..errors import BadJob, EnqueueError, PayloadError

__all__ = [
    "ARGS", "JOB", "KWARGS", "TASK", "Call", "Signature", "check_call", "decode_call",
    "encode_call", "task_of",
]

TASK = b"sf:task"
JOB = b"sf:job"
ARGS = b"sf:args"
KWARGS = b"sf:kwargs"
_OWN = frozenset((TASK, JOB, ARGS, KWARGS))

_TRUE = frozenset(("1", "true", "yes", "on", "y", "t"))
_FALSE = frozenset(("0", "false", "no", "off", "n", "f", ""))


@dataclass(frozen=True)
class Call:
    """One job entry, decoded: which task, which job, with which arguments."""

    task: str
    job_id: str
    args: list[Any]
    kwargs: dict[str, Any]


class Signature:
    """A task function's signature, read once: binds calls and converts string fields."""

    def __init__(self, func: Callable[..., Any], name: str) -> None:
        self.name = name  # the task name, for messages
        self.signature = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable annotations: convert nothing
            hints = {}
        # parameter -> converter of a string field, for the annotations that ask for one
        self.converters: dict[str, Callable[[str], Any]] = {}
        for p in self.signature.parameters.values():
            conv = _converter(hints.get(p.name, p.annotation))
            if conv is not None:
                self.converters[p.name] = conv

    def check(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError (Python's own message) if ``args``/``kwargs`` do not fit."""
        self.signature.bind(*args, **kwargs)

    def convert(self, fields: dict[str, str]) -> dict[str, Any]:
        """Keyword arguments from a foreign entry's string fields (see the module docstring)."""
        out: dict[str, Any] = {}
        for key, value in fields.items():
            conv = self.converters.get(key)
            if conv is None:
                out[key] = value
                continue
            try:
                out[key] = conv(value)
            except ValueError as exc:
                raise BadJob(f"task {self.name}: field {key}={value!r}: {exc}") from None
        return out


def _converter(annotation: Any) -> Callable[[str], Any] | None:
    """int/float/bool (also ``X | None``) -> a converter of string fields; else None."""
    args = typing.get_args(annotation)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    if annotation is bool:
        return _to_bool
    if annotation is int:
        return int
    if annotation is float:
        return float
    return None


def _to_bool(value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean (use true/false, 1/0, yes/no)")


def encode_call(
    sig: Signature, args: Sequence[Any], kwargs: Mapping[str, Any], max_bytes: int
) -> tuple[bytes, bytes]:
    """``(args JSON, kwargs JSON)`` of a call, checked against the function first.

    Raises :class:`EnqueueError` naming the task and the problem: arguments that do not
    fit the signature, or a value JSON cannot carry (the caller's bug, reported before
    anything is written).
    """
    try:
        sig.check(args, kwargs)
    except TypeError as exc:
        raise EnqueueError(f"{sig.name}{sig.signature}: {exc}") from None
    try:
        a, k = encode_json(list(args), max_bytes), encode_json(dict(kwargs), max_bytes)
    except PayloadError as exc:
        for i, value in enumerate(args):
            _check_value(sig.name, f"argument {i + 1}", value, max_bytes)
        for key, value in kwargs.items():
            _check_value(sig.name, f"argument {key}=", value, max_bytes)
        raise EnqueueError(f"{sig.name}: {exc}") from None
    if len(a) + len(k) > max_bytes:
        raise EnqueueError(f"{sig.name}: its arguments are {len(a) + len(k)} bytes of JSON, "
                           f"more than max_payload_bytes={max_bytes}")
    return a, k


def _check_value(task: str, where: str, value: Any, max_bytes: int) -> None:
    try:
        encode_json(value, max_bytes)
    except PayloadError as exc:
        raise EnqueueError(f"{task}: {where} ({type(value).__name__}) cannot be sent: "
                           f"{exc}; job arguments must be JSON values") from None


def task_of(raw: list[bytes] | None, task_field: bytes | None) -> str | None:
    """The task an entry names (``sf:task``, else ``task_field``), without decoding the rest."""
    if raw is None:
        return None
    found: bytes | None = None
    for i in range(0, len(raw) - 1, 2):
        name = raw[i]
        if name == TASK:
            return raw[i + 1].decode(errors="replace")
        if name == task_field:
            found = raw[i + 1]
    return found.decode(errors="replace") if found is not None else None


def decode_call(
    raw_id: bytes, raw: list[bytes] | None, task_field: bytes | None,
    signatures: Mapping[str, Signature], max_bytes: int,
) -> Call:
    """Decode one job entry; :class:`BadJob` (dead-lettered at once) when it cannot run.

    The arguments of an ``sf:`` entry are not bound to the signature here (that costs more
    than the call itself): a call that does not fit raises TypeError when it is made, and
    :func:`check_call` then tells a binding error from a TypeError of the function's own.
    """
    if raw is None:
        raise BadJob("the entry was deleted")
    task = job = args = kwargs = None
    size = 0
    for i in range(0, len(raw) - 1, 2):
        field, value = raw[i], raw[i + 1]
        if field == TASK:
            task = value
        elif field == JOB:
            job = value
        elif field == ARGS:
            args = value
            size += len(value)
        elif field == KWARGS:
            kwargs = value
            size += len(value)
        else:
            size += len(field) + len(value)
    if size > max_bytes:  # the arguments (sf:args + sf:kwargs, or the foreign fields)
        raise BadJob(f"its arguments are {size} bytes, more than max_payload_bytes={max_bytes}")
    if task is not None:
        name = task.decode(errors="replace")
        _signature(name, signatures)
        return Call(
            name, job.decode(errors="replace") if job is not None else raw_id.decode(),
            [] if args is None or args == b"[]" else _json(args, list, "sf:args", "a JSON array"),
            {} if kwargs is None or kwargs == b"{}"
            else _json(kwargs, dict, "sf:kwargs", "a JSON object"),
        )
    fields = {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}
    if task_field is None or task_field not in fields:
        named = "sf:task" + (f" or {task_field.decode()}" if task_field else "")
        raise BadJob(f"the entry has no {named} field naming its task")
    name = fields.pop(task_field).decode(errors="replace")
    sig = _signature(name, signatures)
    kw = sig.convert({k.decode(errors="replace"): v.decode(errors="replace")
                      for k, v in fields.items() if k not in _OWN})
    return Call(name, raw_id.decode(), [], kw)


def check_call(sig: Signature, call: Call, exc: TypeError) -> BadJob | None:
    """After ``exc`` (a TypeError) from calling the task: a :class:`BadJob` if the call's
    arguments do not fit the signature, None if the TypeError is the function's own."""
    try:
        sig.check(call.args, call.kwargs)
    except TypeError as bind_error:
        return BadJob(f"{call.task}{sig.signature}: {bind_error}")
    return None


def _signature(task: str, signatures: Mapping[str, Signature]) -> Signature:
    sig = signatures.get(task)
    if sig is None:
        known = ", ".join(sorted(signatures)) or "none"
        raise BadJob(f"no task named {task!r} on this queue (known: {known})")
    return sig


def _json(data: bytes, kind: type, field: str, what: str) -> Any:
    try:
        value = loads(data)
    except ValueError as exc:
        raise BadJob(f"{field} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise BadJob(f"{field} must be {what}, got {type(value).__name__}")
    return value
