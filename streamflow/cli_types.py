"""argparse value types shared by the ``streamflow`` sub-commands."""

from __future__ import annotations

import argparse
import math
import os

__all__ = ["MAX_PROCESSES", "positive_float", "positive_int", "processes", "usable_cpus"]

#: Most worker processes ``--processes`` starts (more is a typo, not a machine).
MAX_PROCESSES = 1000


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number >= 0 (seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def usable_cpus() -> int:
    """The cores this process may run on: ``os.process_cpu_count()`` (Python 3.13+), else
    the scheduler affinity mask, else ``os.cpu_count()`` (CPU quotas are not seen)."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        n: int | None = count()
    elif hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:
        n = os.cpu_count()
    return max(n or 1, 1)


def processes(text: str) -> int:
    """``--processes``: a whole number 1 .. MAX_PROCESSES, or ``auto`` (one per usable core)."""
    if text.strip().lower() == "auto":
        return min(usable_cpus(), MAX_PROCESSES)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a whole number nor 'auto'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or auto), got {value}")
    if value > MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_PROCESSES}, got {value}")
    return value
