"""Small option objects attached to handlers: retry policy and stream retention."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["Retention", "Retry"]


@dataclass(frozen=True)
class Retry:
    """How often and how fast a failing message is retried before it is dead-lettered.

    The delay before attempt ``n + 1`` is ``min(backoff * 2 ** (n - 1), max_backoff)``,
    then multiplied by a random factor in ``[1 - jitter, 1 + jitter]``.
    """

    max_attempts: int = 5
    """Deliveries in all, the first one included; then the message goes to the dead-letter stream."""
    backoff: float = 0.5
    """Delay (seconds) before the second attempt."""
    max_backoff: float = 60.0
    """Upper bound of the delay, before jitter."""
    jitter: float = 0.1
    """Relative random spread of each delay, 0 for none."""

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigError("Retry.max_attempts", f"must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ConfigError("Retry.max_attempts", f"must be >= 1, got {self.max_attempts}")
        if self.backoff < 0:
            raise ConfigError("Retry.backoff", f"must be >= 0, got {self.backoff}")
        if self.max_backoff < self.backoff:
            raise ConfigError("Retry.max_backoff", "must be >= backoff")
        if not 0 <= self.jitter < 1:
            raise ConfigError("Retry.jitter", f"must be in [0, 1), got {self.jitter}")

    def base_delay(self, attempt: int) -> float:
        """Delay after failed attempt ``attempt`` (1-based) without jitter."""
        if attempt < 1:
            return 0.0
        return float(min(self.backoff * (2 ** min(attempt - 1, 60)), self.max_backoff))

    def delay(self, attempt: int, key: bytes | None = None) -> float:
        """Delay after failed attempt ``attempt``, with jitter.

        With ``key`` (the entry id) the jitter is derived from it, so every worker
        computes the same delay for the same entry and attempt.
        """
        base = self.base_delay(attempt)
        if self.jitter:
            if key is None:
                u = random.random()
            else:
                u = zlib.crc32(key + b"/" + str(attempt).encode()) / 0xFFFFFFFF
            base *= 1 - self.jitter + 2 * self.jitter * u
        return base


@dataclass(frozen=True)
class Retention:
    """How much of a stream to keep once every group has acknowledged it.

    Entries are trimmed only below the oldest id that some group still needs
    (its last-delivered id and its oldest pending id), so retention never drops
    unprocessed work. ``max_len`` and ``max_age`` (seconds) can be combined.
    """

    max_len: int | None = None
    max_age: float | None = None

    def __post_init__(self) -> None:
        if self.max_len is None and self.max_age is None:
            raise ConfigError("Retention", "give max_len, max_age or both")
        if self.max_len is not None and self.max_len < 0:
            raise ConfigError("Retention.max_len", "must be >= 0")
        if self.max_age is not None and self.max_age <= 0:
            raise ConfigError("Retention.max_age", "must be > 0")
