"""Shared pytest configuration for the streamflow test suite."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from streamflow.logging import RedactingFilter

pytest_plugins = ["streamflow.testing"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging: structlog defaults, root handlers, level and filters."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.reset_defaults()
        for handler in root.handlers:
            for f in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
                handler.removeFilter(f)
        root.handlers[:] = handlers
        root.setLevel(level)
