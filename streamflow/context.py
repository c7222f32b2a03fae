"""The message a handler is running, as a context variable (one per slot task).

A slot sets :data:`current_message` before it calls the handler; it costs one
``ContextVar.set`` per message. Log processors (:mod:`streamflow.logging`) read it when
a line is actually logged, so a handler's own log lines carry ``stream``, ``group``,
``message_id`` and ``attempt`` without binding anything per message.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .message import Message

__all__ = ["current_message"]

#: The entry whose handler runs in this task (None outside handlers).
current_message: ContextVar[Message | None] = ContextVar("streamflow_message", default=None)
