"""structlog set-up: console output for humans, JSON for machines, secrets redacted.

Passwords of Redis URLs (``redis://user:password@host``, ``redis://:password@host``,
``?password=...``) are replaced by ``***`` everywhere a log line can carry them: in
string values at any depth (dicts, lists, tuples), in exception text and tracebacks,
and, as a last line of defence, in the rendered line itself. Records of the standard
``logging`` module (redis-py, asyncio) get the same treatment. Payloads are never
logged by streamflow itself.

A line logged while a handler runs (structlog or stdlib ``logging``) carries the
``stream``, ``group``, ``message_id`` and ``attempt`` of its message
(:func:`add_message_context`, reading :data:`streamflow.context.current_message`);
fields the caller passed win. Applications that configure structlog themselves can put
:func:`add_message_context` in their own processor chain.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

from .connection import redact_url
from .context import current_message

__all__ = [
    "RedactingFilter", "add_message_context", "configure_logging", "redact_secrets", "redact_value",
]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_MAX_DEPTH = 20


def redact_value(value: Any, _depth: int = 0) -> Any:
    """``value`` with URL passwords hidden in every string inside it (dicts, lists, tuples, sets).

    Exceptions are replaced by their redacted ``Type: message`` text; other objects are
    returned unchanged (the rendered line is redacted again, see :func:`configure_logging`).
    """
    if isinstance(value, str):
        return redact_url(value) if ("://" in value or "=" in value) else value
    if _depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: redact_value(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, _depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_value(v, _depth + 1) for v in value)
    if isinstance(value, set | frozenset):
        return {redact_value(v, _depth + 1) for v in value}
    if isinstance(value, BaseException):
        return redact_url(f"{type(value).__name__}: {value}")
    return value


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide passwords of Redis URLs in every value of the event.

    ``exc_info`` is left for the traceback formatter that runs before this processor in
    :func:`configure_logging`; the formatted ``exception`` is redacted like any value.
    """
    for key, value in event.items():
        if key == "exc_info":
            continue
        event[key] = redact_value(value)
    return event


def add_message_context(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current message's ``stream``, ``group``, ``message_id`` and
    ``attempt`` when a line is logged inside a handler.

    Fields the caller passed (or bound) are kept. It runs only for lines actually
    logged, so a message whose handler logs nothing costs nothing here.
    """
    msg = current_message.get()
    if msg is not None:
        event.setdefault("stream", msg.stream)
        event.setdefault("group", msg.group)
        event.setdefault("message_id", msg.id)
        event.setdefault("attempt", msg.attempt)
    return event


def _redacting(renderer: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a structlog renderer so that its output line is redacted as a whole."""

    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        out = renderer(logger, name, event)
        if isinstance(out, str):
            return redact_url(out)
        if isinstance(out, bytes):
            return redact_url(out.decode("utf-8", "replace")).encode()
        return out

    return render


class RedactingFilter(logging.Filter):
    """stdlib logging filter: hide URL passwords in the message and exception of a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave the record as it is
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact_url(message), None
        if record.exc_text:
            record.exc_text = redact_url(record.exc_text)
        return True


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog (and stdlib logging) for a worker process.

    ``fmt`` is ``console`` (coloured key=value lines), ``json`` (one object a line) or
    ``auto`` (console when stderr is a TTY, else JSON).
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_message_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt == "json":
        # Tracebacks become data first, so that the redaction below sees their text.
        shared += [structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        ), redact_secrets]
        renderer = structlog.processors.JSONRenderer()
    else:
        # The console renderer formats tracebacks itself: the wrapper redacts them.
        shared += [redact_secrets]
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*shared, _redacting(renderer)],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.lower()]),
        # One write per line (the line and its newline together): the worker processes of
        # `run --processes N` share one stderr, and print()'s two writes let lines merge.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Records of the stdlib `logging` module (asyncio, redis-py, user code) go through the
    # same processors and renderer, so JSON output stays one JSON object per line.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redacting(renderer),
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_streamflow", False):
            root.removeHandler(old)
    handler._streamflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    for other in root.handlers:  # handlers others installed (e.g. a test's capture) too
        if not any(isinstance(f, RedactingFilter) for f in other.filters):
            other.addFilter(RedactingFilter())
    # The level asked for, debug included: the user's own stdlib debug lines show too.
    root.setLevel(_LEVELS[level.lower()])
