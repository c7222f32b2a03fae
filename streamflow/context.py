"""The message a handler is running, readable from anywhere in the handler's task.

A slot stores its own state object (which has a ``msg`` attribute it updates for every
entry anyway) in a context variable once, when the slot starts; so knowing the running
message costs nothing per message. Log processors (:mod:`streamflow.logging`) ask
:data:`current_message` only when a line is actually logged, so a handler's own log
lines carry ``stream``, ``group``, ``message_id`` and ``attempt``.

:data:`current_message` behaves like a ``ContextVar[Message | None]`` (``get``, ``set``,
``reset``); :func:`bind_slot` is what the runtime uses.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .message import Message

__all__ = ["current_message"]


class _Holder(Protocol):
    msg: Message | None


class _Fixed:
    """A holder for one message (what :meth:`_CurrentMessage.set` stores)."""

    __slots__ = ("msg",)

    def __init__(self, msg: Message | None) -> None:
        self.msg = msg


_slot: ContextVar[Any] = ContextVar("streamflow_slot", default=None)


class _CurrentMessage:
    """The running message of this task, as a ``ContextVar``-like object."""

    def get(self) -> Message | None:
        """The message whose handler runs in this task, or None."""
        holder = _slot.get()
        return holder.msg if holder is not None else None

    def set(self, msg: Message | None) -> Token[Any]:
        """Make ``msg`` the current message of this context (tests, custom runners)."""
        return _slot.set(_Fixed(msg))

    def reset(self, token: Token[Any]) -> None:
        """Undo a :meth:`set`."""
        _slot.reset(token)

    def bind_slot(self, holder: _Holder) -> None:
        """Make ``holder.msg`` the current message of this task from now on (slots)."""
        _slot.set(holder)


#: The message a handler runs in this task (None outside handlers).
current_message = _CurrentMessage()
