"""StopSignal: the one "stop taking new work" flag a consumer's parts share."""

from __future__ import annotations

import anyio

__all__ = ["StopSignal"]


class StopSignal:
    """Set once when a consumer should stop reading and claiming; never cleared.

    Loops check :attr:`is_set` between steps; :meth:`pause` sleeps but wakes at once
    when the signal is set, so a backoff never delays a shutdown.
    """

    def __init__(self) -> None:
        self.is_set = False  # True once set(); plain attribute, cheap to poll
        self._event = anyio.Event()  # wakes sleepers in pause() / wait()

    def set(self) -> None:
        """Ask every part to stop taking new work."""
        self.is_set = True
        self._event.set()

    async def wait(self) -> None:
        """Return once the signal is set."""
        await self._event.wait()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the signal is set meanwhile."""
        with anyio.move_on_after(seconds):
            await self._event.wait()
